"""Columns that let claims work from the trial rows without reading a whole study: a digest of each trial's
configuration (a random draw is checked against it with one indexed lookup), and ASHA's and Hyperband's rung
and resumed trial (``tuner/rung``, ``tuner/trial_id``: ASHA's next promotion is one indexed query), and an
index by oracle trial id (Hyperband reads the trials of its open brackets by it).

Existing trials get their values here (the digest is the one the service computes: SHA-1 of the values
without the ``tuner/`` budget keys, as sorted JSON).

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


def _filled(trial_id: int, values: dict) -> dict:
    rung, resumes = values.get("tuner/rung"), values.get("tuner/trial_id")
    return {
        "trial_id": trial_id,
        "digest": _digest(values),
        "rung_": int(rung) if isinstance(rung, int) else None,
        "resumes_": str(resumes) if resumes is not None else None,
    }


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("config_hash", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("rung", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("resumes", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_trials_study_config", ["study_id", "config_hash"], unique=False)
        batch_op.create_index("ix_trials_study_resumes", ["study_id", "resumes"], unique=False)
        batch_op.create_index("ix_trials_study_oracle_id", ["study_id", "oracle_trial_id"], unique=False)
    trials = sa.table(
        "trials",
        sa.column("id", sa.Integer),
        sa.column("hyperparameters", sa.JSON),
        sa.column("config_hash"),
        sa.column("rung"),
        sa.column("resumes"),
    )
    bind = op.get_bind()
    last = 0
    while True:
        page = sa.select(trials.c.id, trials.c.hyperparameters).where(trials.c.id > last)
        rows = bind.execute(page.order_by(trials.c.id).limit(BATCH)).all()
        if not rows:
            break
        bind.execute(
            trials.update()
            .where(trials.c.id == sa.bindparam("trial_id"))
            .values(config_hash=sa.bindparam("digest"), rung=sa.bindparam("rung_"), resumes=sa.bindparam("resumes_")),
            [_filled(row.id, row.hyperparameters or {}) for row in rows],
        )
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_study_oracle_id")
        batch_op.drop_index("ix_trials_study_resumes")
        batch_op.drop_index("ix_trials_study_config")
        batch_op.drop_column("resumes")
        batch_op.drop_column("rung")
        batch_op.drop_column("config_hash")
