"""The drift call: comparison statistics, per-feature drifts and verdicts, the drop verdict, method
agreement, the figures of reseeded copies and of the frozen-set model, two views.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COMPARISON_COLUMNS = ("kendall", "ndcg", "profile_distance")

IMPORTANCE_CHANGES_VIEW = """
CREATE VIEW importance_changes AS
SELECT d.model_name AS model, d.week AS week, pd.week AS previous_week, f.method AS method,
       f.feature AS feature, f.value AS value, f.previous_value AS previous_value, f.delta AS delta,
       f.rank_change AS rank_change, f.verdict AS verdict, f.relative_change AS relative_change,
       f.band_percent AS noise_band_percent, f.band_source AS band_source, f.z AS z,
       f.profile_distance AS profile_distance, f.cause AS cause
FROM feature_drifts f
JOIN audit_runs r ON r.id = f.run_id
JOIN model_drops d ON d.id = r.drop_id
JOIN audit_runs pr ON pr.id = f.previous_run_id
JOIN model_drops pd ON pd.id = pr.drop_id
WHERE r.status = 'succeeded'
"""

AUDIT_VERDICTS_VIEW = """
CREATE VIEW audit_verdicts AS
SELECT d.model_name AS model, d.week AS week, pd.week AS previous_week, v.verdict AS verdict,
       v.reason AS reason, v.n_history AS n_history
FROM drop_verdicts v
JOIN audit_runs r ON r.id = v.run_id
JOIN model_drops d ON d.id = r.drop_id
JOIN audit_runs pr ON pr.id = v.previous_run_id
JOIN model_drops pd ON pd.id = pr.drop_id
WHERE r.status = 'succeeded'
"""


def _run_id() -> sa.Column[int]:
    return sa.Column("run_id", sa.Integer(), sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=False)


def _previous_run_id() -> sa.Column[int]:
    return sa.Column(
        "previous_run_id", sa.Integer(), sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        for name in COMPARISON_COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
    op.create_table(
        "feature_drifts",
        sa.Column("id", sa.Integer(), primary_key=True),
        _run_id(),
        _previous_run_id(),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(512), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("previous_value", sa.Float(), nullable=True),
        sa.Column("delta", sa.Float(), nullable=True),
        sa.Column("delta_se", sa.Float(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("previous_rank", sa.Integer(), nullable=True),
        sa.Column("rank_change", sa.Integer(), nullable=True),
        sa.Column("change", sa.Float(), nullable=True),
        sa.Column("relative_change", sa.Float(), nullable=True),
        sa.Column("band_scale", sa.Float(), nullable=True),
        sa.Column("band_half_width", sa.Float(), nullable=True),
        sa.Column("band_percent", sa.Float(), nullable=True),
        sa.Column("band_sampling_scale", sa.Float(), nullable=True),
        sa.Column("band_source", sa.String(32), nullable=True),
        sa.Column("band_observations", sa.Integer(), nullable=True),
        sa.Column("z", sa.Float(), nullable=True),
        sa.Column("profile_distance", sa.Float(), nullable=True),
        sa.Column("profile_band", sa.Float(), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(16), nullable=True),
        sa.UniqueConstraint("run_id", "method", "feature", name="uq_feature_drifts_run_method_feature"),
    )
    op.create_index("ix_feature_drifts_feature_method", "feature_drifts", ["feature", "method"])
    op.create_table(
        "feature_verdicts",
        sa.Column("id", sa.Integer(), primary_key=True),
        _run_id(),
        sa.Column("feature", sa.String(512), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("methods_flagged", sa.Text(), nullable=False),
        sa.Column("n_flagged", sa.Integer(), nullable=False),
        sa.Column("n_methods", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("strength", sa.Float(), nullable=False),
        sa.Column("cause", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.UniqueConstraint("run_id", "feature", name="uq_feature_verdicts_run_feature"),
    )
    op.create_table(
        "drop_verdicts",
        sa.Column("id", sa.Integer(), primary_key=True),
        _run_id(),
        _previous_run_id(),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("n_history", sa.Integer(), nullable=False),
        sa.Column("n_copies", sa.Integer(), nullable=False),
        sa.Column("verdict_methods", sa.Text(), nullable=False),
        sa.UniqueConstraint("run_id", name="uq_drop_verdicts_run"),
    )
    op.create_table(
        "method_agreement",
        sa.Column("id", sa.Integer(), primary_key=True),
        _run_id(),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("other_method", sa.String(64), nullable=False),
        sa.Column("spearman", sa.Float(), nullable=True),
        sa.UniqueConstraint("run_id", "method", "other_method", name="uq_method_agreement_run_methods"),
    )
    op.create_table(
        "model_importances",
        sa.Column("id", sa.Integer(), primary_key=True),
        _run_id(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("label", sa.String(512), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(512), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("std", sa.Float(), nullable=True),
        sa.Column("signed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.UniqueConstraint(
            "run_id", "kind", "label", "method", "feature", name="uq_model_importances_run_kind_label_method_feature"
        ),
    )
    op.create_table(
        "model_profiles",
        sa.Column("id", sa.Integer(), primary_key=True),
        _run_id(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("label", sa.String(512), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(512), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.UniqueConstraint(
            "run_id",
            "kind",
            "label",
            "method",
            "feature",
            "step",
            name="uq_model_profiles_run_kind_label_method_feature_step",
        ),
    )
    op.execute(IMPORTANCE_CHANGES_VIEW)
    op.execute(AUDIT_VERDICTS_VIEW)


def downgrade() -> None:
    # Views first: SQLite's batch mode rebuilds tables, which fails while a view refers to them.
    op.execute("DROP VIEW audit_verdicts")
    op.execute("DROP VIEW importance_changes")
    op.drop_table("model_profiles")
    op.drop_table("model_importances")
    op.drop_table("method_agreement")
    op.drop_table("drop_verdicts")
    op.drop_table("feature_verdicts")
    op.drop_index("ix_feature_drifts_feature_method", table_name="feature_drifts")
    op.drop_table("feature_drifts")
    with op.batch_alter_table("comparisons") as batch:
        for name in reversed(COMPARISON_COLUMNS):
            batch.drop_column(name)
