"""A team's own model-size limit, users' session versions (signing out ends every copy of a session) and
roles long enough for team_admin.

Revision ID: 0008
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_model_params", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_version", sa.Integer(), nullable=False, server_default="0"))
        batch_op.alter_column("role", existing_type=sa.String(length=8), type_=sa.String(length=16))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("role", existing_type=sa.String(length=16), type_=sa.String(length=8))
        batch_op.drop_column("session_version")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("max_model_params")
