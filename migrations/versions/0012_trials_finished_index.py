"""Indexes for the queue's load read: every claim sums each team's worker time of the fair-share window and
its GPU hours of the last day, so the trials that finished lately must be found without reading the others.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index("ix_trials_finished", ["finished_at"], unique=False)
        batch_op.create_index("ix_trials_pool_finished", ["pool", "finished_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_pool_finished")
        batch_op.drop_index("ix_trials_finished")
