"""Trials record the GPU slots they took (`gpu_slots`): a study's `resources.gpu_slots` decides how many of
the K slots of a GPU shared by K worker processes a trial takes. Existing trials keep NULL (one slot if
running on a GPU). A partial index finds a GPU's trials of several slots that finished lately.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

MULTI_SLOT = sa.text("gpu_slots > 1")


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpu_slots", sa.Integer(), nullable=True))
        batch_op.create_index(
            "ix_trials_gpu_multi_slot",
            ["gpu", "finished_at"],
            unique=False,
            postgresql_where=MULTI_SLOT,
            sqlite_where=MULTI_SLOT,
        )


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_gpu_multi_slot")
        batch_op.drop_column("gpu_slots")
