"""Input-data and performance drift: per-feature summaries of each eval sample, the input drift and
the performance drift of each comparison, the frozen set's evaluation, views input_drift and
performance_drift.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-19
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: (name, type) of the new nullable columns of audit_runs, in the order they are added.
RUN_COLUMNS = (
    ("eval_loss_se", sa.Float()),
    ("frozen_eval_loss", sa.Float()),
    ("frozen_eval_loss_se", sa.Float()),
    ("frozen_eval_metric", sa.Float()),
)

INPUT_DRIFT_VIEW = """
CREATE VIEW input_drift AS
SELECT d.model_name AS model, d.week AS week, pd.week AS previous_week, i.feature AS feature,
       i.psi AS psi, i.ks_statistic AS ks_statistic, i.ks_pvalue AS ks_pvalue,
       i.wasserstein AS wasserstein, i.verdict AS verdict, i.psi_limit AS psi_limit
FROM input_drifts i
JOIN audit_runs r ON r.id = i.run_id
JOIN model_drops d ON d.id = r.drop_id
JOIN audit_runs pr ON pr.id = i.previous_run_id
JOIN model_drops pd ON pd.id = pr.drop_id
WHERE r.status = 'succeeded'
"""

PERFORMANCE_DRIFT_VIEW = """
CREATE VIEW performance_drift AS
SELECT d.model_name AS model, d.week AS week, pd.week AS previous_week, p.loss_name AS loss_name,
       p.loss AS loss, p.previous_loss AS previous_loss, p.frozen_loss AS frozen_loss,
       p.metric_name AS metric_name, p.metric AS metric, p.previous_metric AS previous_metric,
       p.band_percent AS noise_band_percent, p.verdict AS verdict, p.cause AS cause, p.reason AS reason
FROM performance_drifts p
JOIN audit_runs r ON r.id = p.run_id
JOIN model_drops d ON d.id = r.drop_id
JOIN audit_runs pr ON pr.id = p.previous_run_id
JOIN model_drops pd ON pd.id = pr.drop_id
WHERE r.status = 'succeeded'
"""


def _run_id(name: str = "run_id") -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    # ADD COLUMN of a nullable column: no table rebuild on either backend
    for name, kind in RUN_COLUMNS:
        op.add_column("audit_runs", sa.Column(name, kind, nullable=True))
    op.create_table(
        "feature_summaries",
        sa.Column("id", sa.Integer(), primary_key=True),
        _run_id(),
        sa.Column("feature", sa.String(512), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("std", sa.Float(), nullable=False),
        sa.Column("exact", sa.Boolean(), nullable=False),
        sa.Column("n_values", sa.Integer(), nullable=False),
        sa.Column("summary_values", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("run_id", "feature", name="uq_feature_summaries_run_feature"),
    )
    op.create_table(
        "input_drifts",
        sa.Column("id", sa.Integer(), primary_key=True),
        _run_id(),
        _run_id("previous_run_id"),
        sa.Column("feature", sa.String(512), nullable=False),
        sa.Column("psi", sa.Float(), nullable=True),
        sa.Column("ks_statistic", sa.Float(), nullable=True),
        sa.Column("ks_pvalue", sa.Float(), nullable=True),
        sa.Column("wasserstein", sa.Float(), nullable=True),
        sa.Column("psi_limit", sa.Float(), nullable=True),
        sa.Column("limit_source", sa.String(16), nullable=False),
        sa.Column("n_history", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("exact", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("previous_n", sa.Integer(), nullable=False),
        sa.UniqueConstraint("run_id", "feature", name="uq_input_drifts_run_feature"),
    )
    op.create_index("ix_input_drifts_feature", "input_drifts", ["feature"])
    op.create_table(
        "performance_drifts",
        sa.Column("id", sa.Integer(), primary_key=True),
        _run_id(),
        _run_id("previous_run_id"),
        sa.Column("loss_name", sa.String(32), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("previous_loss", sa.Float(), nullable=True),
        sa.Column("frozen_loss", sa.Float(), nullable=True),
        sa.Column("metric_name", sa.String(32), nullable=False),
        sa.Column("metric", sa.Float(), nullable=True),
        sa.Column("previous_metric", sa.Float(), nullable=True),
        sa.Column("frozen_metric", sa.Float(), nullable=True),
        sa.Column("change", sa.Float(), nullable=True),
        sa.Column("model_change", sa.Float(), nullable=True),
        sa.Column("data_change", sa.Float(), nullable=True),
        sa.Column("band_scale", sa.Float(), nullable=True),
        sa.Column("band_half_width", sa.Float(), nullable=True),
        sa.Column("band_percent", sa.Float(), nullable=True),
        sa.Column("band_source", sa.String(32), nullable=False),
        sa.Column("band_observations", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.UniqueConstraint("run_id", name="uq_performance_drifts_run"),
    )
    op.execute(INPUT_DRIFT_VIEW)
    op.execute(PERFORMANCE_DRIFT_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW performance_drift")
    op.execute("DROP VIEW input_drift")
    op.drop_table("performance_drifts")
    op.drop_index("ix_input_drifts_feature", table_name="input_drifts")
    op.drop_table("input_drifts")
    op.drop_table("feature_summaries")
    # A plain DROP COLUMN, not a batch rebuild (see 0006: a rebuild of audit_runs cascades).
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"downgrading below 0009 needs SQLite >= 3.35 (ALTER TABLE DROP COLUMN); this Python has "
            f"{sqlite3.sqlite_version}: use a Python built with a newer SQLite"
        )
    for name, _ in reversed(RUN_COLUMNS):
        op.drop_column("audit_runs", name)
