"""Profiles (time x feature attributions) and the signed flag of method results.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("method_results") as batch:
        batch.add_column(sa.Column("signed", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "profiles",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(512), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.UniqueConstraint("run_id", "method", "feature", "step", name="uq_profiles_run_method_feature_step"),
    )
    op.create_index("ix_profiles_feature_method", "profiles", ["feature", "method"])


def downgrade() -> None:
    op.drop_index("ix_profiles_feature_method", table_name="profiles")
    op.drop_table("profiles")
    with op.batch_alter_table("method_results") as batch:
        batch.drop_column("signed")
