"""Teams, users and API tokens; studies and trials belong to a team and a resource pool; tickets are unique
across studies because a broker message now names a pool, not a study.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 19:28:42.501600
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("share_weight", sa.Float(), nullable=False),
        sa.Column("max_concurrent_trials", sa.Integer(), nullable=True),
        sa.Column("gpu_hours_per_day", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index("ix_tokens_user", ["user_id"], unique=False)

    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_datasets_team", "teams", ["team_id"], ["id"], ondelete="RESTRICT")
        batch_op.drop_constraint("uq_datasets_key", type_="unique")
        batch_op.create_index("uq_datasets_team_key", ["team_id", "key"], unique=True)
        batch_op.create_index(
            "uq_datasets_shared_key",
            ["key"],
            unique=True,
            sqlite_where=sa.text("team_id IS NULL"),
            postgresql_where=sa.text("team_id IS NULL"),
        )

    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pool", sa.String(length=16), server_default="cpu", nullable=False))
        batch_op.create_index("ix_studies_pool_status", ["pool", "status"], unique=False)
        batch_op.create_index("ix_studies_team", ["team_id"], unique=False)
        batch_op.create_foreign_key("fk_studies_team", "teams", ["team_id"], ["id"], ondelete="RESTRICT")
        batch_op.create_foreign_key("fk_studies_owner", "users", ["owner_id"], ["id"], ondelete="SET NULL")

    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pool", sa.String(length=16), server_default="cpu", nullable=False))
        batch_op.add_column(sa.Column("gpu", sa.String(length=32), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_trials_study_ticket"), type_="unique")
        batch_op.create_index("ix_trials_team_started", ["team_id", "started_at"], unique=False)
        batch_op.create_unique_constraint("uq_trials_ticket", ["ticket"])


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_constraint("uq_trials_ticket", type_="unique")
        batch_op.drop_index("ix_trials_team_started")
        batch_op.create_unique_constraint(batch_op.f("uq_trials_study_ticket"), ["study_id", "ticket"])
        batch_op.drop_column("gpu")
        batch_op.drop_column("pool")
        batch_op.drop_column("team_id")

    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_constraint("fk_studies_owner", type_="foreignkey")
        batch_op.drop_constraint("fk_studies_team", type_="foreignkey")
        batch_op.drop_index("ix_studies_team")
        batch_op.drop_index("ix_studies_pool_status")
        batch_op.drop_column("pool")
        batch_op.drop_column("owner_id")
        batch_op.drop_column("team_id")

    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index("uq_datasets_shared_key")
        batch_op.drop_index("uq_datasets_team_key")
        batch_op.create_unique_constraint("uq_datasets_key", ["key"])
        batch_op.drop_constraint("fk_datasets_team", type_="foreignkey")
        batch_op.drop_column("team_id")

    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_tokens_user")

    op.drop_table("tokens")
    op.drop_table("users")
    op.drop_table("teams")
