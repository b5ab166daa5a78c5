"""Trials count the epochs they trained themselves (`epochs_trained`) beside the absolute epoch they reached
(`epochs_run`): a promoted ASHA/Hyperband trial starts at its parent's epoch, so budgets summed from
`epochs_run` counted the parent's epochs again.

Existing trials are backfilled from their stored epoch rows, which are exactly the epochs each trained.

Revision ID: 0006
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epochs_trained", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE trials SET epochs_trained = (SELECT count(*) FROM epochs WHERE epochs.trial_id = trials.id)")


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_column("epochs_trained")
