"""Initial schema: drops, runs, method results, importances, comparisons, importance_history view.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

IMPORTANCE_HISTORY_VIEW = """
CREATE VIEW importance_history AS
SELECT d.week AS week, d.model_name AS model, i.method AS method, i.feature AS feature,
       i.value AS value, i.std AS std, i.rank AS rank
FROM importances i
JOIN audit_runs r ON r.id = i.run_id
JOIN model_drops d ON d.id = r.drop_id
WHERE r.status = 'succeeded'
"""


def upgrade() -> None:
    op.create_table(
        "model_drops",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("input_shape", sa.String(200), nullable=True),
        sa.Column("output_shape", sa.String(200), nullable=True),
        sa.Column("n_parameters", sa.Integer(), nullable=True),
        sa.Column("task", sa.String(20), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("model_name", "week", name="uq_model_drops_model_week"),
    )
    op.create_table(
        "audit_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("drop_id", sa.Integer(), sa.ForeignKey("model_drops.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("eval_source", sa.Text(), nullable=True),
        sa.Column("eval_hash", sa.String(64), nullable=True),
        sa.Column("n_eval_samples", sa.Integer(), nullable=True),
        sa.Column("report_path", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_runs_drop_status", "audit_runs", ["drop_id", "status"])
    op.create_table(
        "method_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.UniqueConstraint("run_id", "method", name="uq_method_results_run_method"),
    )
    op.create_table(
        "importances",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(512), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("std", sa.Float(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.UniqueConstraint("run_id", "method", "feature", name="uq_importances_run_method_feature"),
    )
    op.create_index("ix_importances_feature_method", "importances", ["feature", "method"])
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "previous_run_id", sa.Integer(), sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("spearman", sa.Float(), nullable=True),
        sa.Column("top_k", sa.Integer(), nullable=False),
        sa.Column("top_k_overlap", sa.Float(), nullable=True),
        sa.UniqueConstraint("run_id", "method", name="uq_comparisons_run_method"),
    )
    op.execute(IMPORTANCE_HISTORY_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW importance_history")
    op.drop_table("comparisons")
    op.drop_index("ix_importances_feature_method", table_name="importances")
    op.drop_table("importances")
    op.drop_table("method_results")
    op.drop_index("ix_audit_runs_drop_status", table_name="audit_runs")
    op.drop_table("audit_runs")
    op.drop_table("model_drops")
