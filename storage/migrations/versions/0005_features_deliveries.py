"""Feature names per drop, report deliveries, the top_features view, an index for top-k queries.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: Top 10 of every (drop, method), current figures only; analysts narrow it with ``rank <= k``.
TOP_FEATURES_VIEW = """
CREATE VIEW top_features AS
SELECT d.model_name AS model, d.week AS week, i.method AS method, i.rank AS rank,
       i.feature AS feature, i.value AS value, i.std AS std
FROM importances i
JOIN audit_runs r ON r.id = i.run_id
JOIN model_drops d ON d.id = r.drop_id
WHERE r.status = 'succeeded' AND i.rank <= 10
"""

#: The features of drops audited before this revision, from their current figures (the methods of
#: a run share the primary model's names; one method is enough).
BACKFILL_FEATURES = """
INSERT INTO features (drop_id, position, name)
SELECT r.drop_id, i.position, i.feature
FROM importances i
JOIN audit_runs r ON r.id = i.run_id
WHERE r.status = 'succeeded'
  AND i.method = (SELECT MIN(o.method) FROM importances o WHERE o.run_id = i.run_id)
"""


def upgrade() -> None:
    op.create_table(
        "features",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("drop_id", sa.Integer(), sa.ForeignKey("model_drops.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.UniqueConstraint("drop_id", "position", name="uq_features_drop_position"),
        sa.UniqueConstraint("drop_id", "name", name="uq_features_drop_name"),
    )
    op.create_table(
        "report_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("emailed_to", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_report_deliveries_run", "report_deliveries", ["run_id"])
    op.create_index("ix_importances_run_method_rank", "importances", ["run_id", "method", "rank"])
    op.execute(BACKFILL_FEATURES)
    op.execute(TOP_FEATURES_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW top_features")
    op.drop_index("ix_importances_run_method_rank", table_name="importances")
    op.drop_index("ix_report_deliveries_run", table_name="report_deliveries")
    op.drop_table("report_deliveries")
    op.drop_table("features")
