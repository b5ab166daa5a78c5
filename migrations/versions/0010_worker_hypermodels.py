"""worker_hypermodels: the hypermodels each worker offers its pool, with their declared search spaces

Revision ID: 0010
Revises: 0004
Create Date: 2026-11-30 10:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_hypermodels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("pool", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("package", sa.String(length=200), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("search_space", sa.JSON(), nullable=False),
        sa.Column("input_kinds", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("worker", "name", name="uq_worker_hypermodels_worker_name"),
    )
    with op.batch_alter_table("worker_hypermodels", schema=None) as batch_op:
        batch_op.create_index("ix_worker_hypermodels_pool_name", ["pool", "name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("worker_hypermodels", schema=None) as batch_op:
        batch_op.drop_index("ix_worker_hypermodels_pool_name")
    op.drop_table("worker_hypermodels")
