"""ASHA's promotions from two indexes instead of a window over every finished trial of the study: each rung's
finished trials in rank order, and those of them that no trial resumes yet (a new ``promoted`` flag, set when a
promotion is claimed), so that the best candidate of a rung is the first entry of its index.

Existing trials get the flag here: a trial is promoted when a trial of its study resumes it.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

RANKED = sa.text("status IN ('completed', 'pruned') AND sort_key IS NOT NULL")
RANKED_OPEN = sa.text("status IN ('completed', 'pruned') AND sort_key IS NOT NULL AND NOT promoted")
COLUMNS = ["study_id", "rung", "sort_key", "number"]


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("promoted", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        sa.text(
            "UPDATE trials SET promoted = :yes WHERE EXISTS (SELECT 1 FROM trials AS child"
            " WHERE child.study_id = trials.study_id AND child.resumes = trials.oracle_trial_id)"
        ).bindparams(yes=True)
    )
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index(
            "ix_trials_study_rung_ranked", COLUMNS, unique=False, postgresql_where=RANKED, sqlite_where=RANKED
        )
        batch_op.create_index(
            "ix_trials_study_rung_open", COLUMNS, unique=False, postgresql_where=RANKED_OPEN, sqlite_where=RANKED_OPEN
        )


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_study_rung_open")
        batch_op.drop_index("ix_trials_study_rung_ranked")
        batch_op.drop_column("promoted")
