"""Resumable preemption and idempotent study submission.

A worker told to stop saves the running trial at an epoch end and hands it back: ``resume_execution`` and
``resume_epoch`` say where the next worker continues (NULL: from the start). A client that retries
``POST /api/v1/studies`` with the same ``Idempotency-Key`` gets the study its first request stored, so
``studies.idempotency_key`` is unique per team.

Revision ID: 0007
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resume_execution", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("resume_epoch", sa.Integer(), nullable=True))
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=128), nullable=True))
        batch_op.create_index("uq_studies_team_idempotency_key", ["team_id", "idempotency_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index("uq_studies_team_idempotency_key")
        batch_op.drop_column("idempotency_key")
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_column("resume_epoch")
        batch_op.drop_column("resume_execution")
