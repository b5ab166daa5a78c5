"""A digest of each trial's configuration, indexed per study: a random-search claim checks whether a drawn
configuration is taken with one indexed lookup instead of reading every trial of the study.

Existing trials get their digest here (the same one the service computes: SHA-1 of the values without the
``tuner/`` budget keys, as sorted JSON).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BATCH = 1000


def _digest(values: dict) -> str:
    trimmed = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    return hashlib.sha1(json.dumps(trimmed, sort_keys=True, default=str).encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("config_hash", sa.String(length=40), nullable=True))
        batch_op.create_index("ix_trials_study_config", ["study_id", "config_hash"], unique=False)
    trials = sa.table(
        "trials", sa.column("id", sa.Integer), sa.column("hyperparameters", sa.JSON), sa.column("config_hash")
    )
    bind = op.get_bind()
    last = 0
    while True:
        page = sa.select(trials.c.id, trials.c.hyperparameters).where(trials.c.id > last)
        rows = bind.execute(page.order_by(trials.c.id).limit(BATCH)).all()
        if not rows:
            break
        bind.execute(
            trials.update().where(trials.c.id == sa.bindparam("trial_id")).values(config_hash=sa.bindparam("digest")),
            [{"trial_id": row.id, "digest": _digest(row.hyperparameters or {})} for row in rows],
        )
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_study_config")
        batch_op.drop_column("config_hash")
