"""Leaderboard indexes that hold the ranked trials in leaderboard order (partial: completed or pruned, scored).

The board indexes of 0001 put `status` before `sort_key`; with two ranked statuses the database had to sort
every ranked trial of a study or data set for each page. Measured at a million trials (BENCHMARKS.md,
leaderboard_scale): a study's first page 17 -> 4 ms, a data set's first page 84 -> 29 ms.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RANKED = sa.text("status IN ('completed', 'pruned') AND sort_key IS NOT NULL")
RANKED_INDEXES = {
    "ix_trials_study_ranked": ["study_id", "sort_key", "id"],
    "ix_trials_dataset_ranked": ["dataset_id", "objective_name", "sort_key", "id"],
    "ix_trials_objective_ranked": ["objective_name", "sort_key", "id"],
    "ix_trials_team_ranked": ["team_id", "sort_key", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        for name, columns in RANKED_INDEXES.items():
            batch_op.create_index(name, columns, unique=False, postgresql_where=RANKED, sqlite_where=RANKED)
        batch_op.create_index("ix_trials_study_score", ["study_id", "sort_key", "number"], unique=False)
        batch_op.drop_index("ix_trials_dataset_board")
        batch_op.drop_index("ix_trials_objective_board")


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index("ix_trials_objective_board", ["objective_name", "status", "sort_key"], unique=False)
        batch_op.create_index(
            "ix_trials_dataset_board", ["dataset_id", "objective_name", "status", "sort_key"], unique=False
        )
        batch_op.drop_index("ix_trials_study_score")
        for name in reversed(RANKED_INDEXES):
            batch_op.drop_index(name)
