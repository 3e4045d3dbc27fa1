"""Method versions and directions with every figure, the versions of each comparison, the
Clarify-compatible nDCG view (issue 18).

`saliency` became the mean |gradient| (method version 2); its signed mean is stored as the figure's
`direction`. Figures stored before this revision are version 1. The history views show the version;
`clarify_ndcg` is the nDCG of `gradient_shap` against SageMaker Clarify's 0.90 rule, beside this
tool's verdict.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: (table, column, type, server default) of the new columns, in the order they are added.
COLUMNS = (
    ("method_results", "method_version", sa.Integer(), "1"),
    ("importances", "method_version", sa.Integer(), "1"),
    ("importances", "direction", sa.Float(), None),
    ("model_importances", "method_version", sa.Integer(), "1"),
    ("model_importances", "direction", sa.Float(), None),
    ("comparisons", "method_version", sa.Integer(), "1"),
    ("comparisons", "previous_method_version", sa.Integer(), "1"),
)

OLD_IMPORTANCE_HISTORY_VIEW = """
CREATE VIEW importance_history AS
SELECT d.week AS week, d.model_name AS model, i.method AS method, i.feature AS feature,
       i.value AS value, i.std AS std, i.rank AS rank
FROM importances i
JOIN audit_runs r ON r.id = i.run_id
JOIN model_drops d ON d.id = r.drop_id
WHERE r.status = 'succeeded'
"""

IMPORTANCE_HISTORY_VIEW = """
CREATE VIEW importance_history AS
SELECT d.week AS week, d.model_name AS model, i.method AS method, i.feature AS feature,
       i.value AS value, i.std AS std, i.rank AS rank, i.method_version AS method_version,
       i.direction AS direction
FROM importances i
JOIN audit_runs r ON r.id = i.run_id
JOIN model_drops d ON d.id = r.drop_id
WHERE r.status = 'succeeded'
"""

OLD_TOP_FEATURES_VIEW = """
CREATE VIEW top_features AS
SELECT d.model_name AS model, d.week AS week, i.method AS method, i.rank AS rank,
       i.feature AS feature, i.value AS value, i.std AS std
FROM importances i
JOIN audit_runs r ON r.id = i.run_id
JOIN model_drops d ON d.id = r.drop_id
WHERE r.status = 'succeeded' AND i.rank <= 10
"""

TOP_FEATURES_VIEW = """
CREATE VIEW top_features AS
SELECT d.model_name AS model, d.week AS week, i.method AS method, i.rank AS rank,
       i.feature AS feature, i.value AS value, i.std AS std, i.method_version AS method_version
FROM importances i
JOIN audit_runs r ON r.id = i.run_id
JOIN model_drops d ON d.id = r.drop_id
WHERE r.status = 'succeeded' AND i.rank <= 10
"""

#: The nDCG of gradient_shap (Shapley-value attributions ranked by mean |attribution|), as SageMaker
#: Clarify's attribution-drift monitor computes it, its 0.90 rule, and this tool's verdict beside it.
CLARIFY_NDCG_VIEW = """
CREATE VIEW clarify_ndcg AS
SELECT d.model_name AS model, d.week AS week, pd.week AS previous_week, c.method AS method,
       c.ndcg AS ndcg, 0.90 AS threshold,
       CASE WHEN c.ndcg IS NULL THEN NULL WHEN c.ndcg < 0.90 THEN 'alert' ELSE 'ok' END AS clarify_rule,
       v.verdict AS verdict, c.method_version AS method_version,
       c.previous_method_version AS previous_method_version
FROM comparisons c
JOIN audit_runs r ON r.id = c.run_id
JOIN model_drops d ON d.id = r.drop_id
JOIN audit_runs pr ON pr.id = c.previous_run_id
JOIN model_drops pd ON pd.id = pr.drop_id
LEFT JOIN drop_verdicts v ON v.run_id = c.run_id
WHERE r.status = 'succeeded' AND c.method = 'gradient_shap'
"""


def upgrade() -> None:
    op.execute("DROP VIEW top_features")
    op.execute("DROP VIEW importance_history")
    # ADD COLUMN with a constant default: no table rebuild on either backend
    for table, name, kind, default in COLUMNS:
        op.add_column(
            table, sa.Column(name, kind, nullable=default is None, server_default=default)
        )
    op.execute(IMPORTANCE_HISTORY_VIEW)
    op.execute(TOP_FEATURES_VIEW)
    op.execute(CLARIFY_NDCG_VIEW)


def downgrade() -> None:
    # A plain DROP COLUMN, not a batch rebuild (see 0006): a rebuild would cascade-delete figures.
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"downgrading below 0012 needs SQLite >= 3.35 (ALTER TABLE DROP COLUMN); this Python has "
            f"{sqlite3.sqlite_version}: use a Python built with a newer SQLite"
        )
    op.execute("DROP VIEW clarify_ndcg")
    op.execute("DROP VIEW top_features")
    op.execute("DROP VIEW importance_history")
    for table, name, _, _ in reversed(COLUMNS):
        op.drop_column(table, name)
    op.execute(OLD_IMPORTANCE_HISTORY_VIEW)
    op.execute(OLD_TOP_FEATURES_VIEW)
