"""What the drift rule could have seen: each feature's plain change, its band on that change and its
detectable rise and fall; the importance_changes view shows them, feature_sensitivity per feature.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: (table, column, type) of the new nullable columns, in the order they are added.
COLUMNS = (
    ("feature_drifts", "plain_change", sa.Float()),
    ("feature_drifts", "plain_band_low", sa.Float()),
    ("feature_drifts", "plain_band_high", sa.Float()),
    ("feature_drifts", "min_detectable_rise", sa.Float()),
    ("feature_drifts", "min_detectable_fall", sa.Float()),
    ("feature_verdicts", "min_detectable_rise", sa.Float()),
    ("feature_verdicts", "min_detectable_fall", sa.Float()),
    ("feature_verdicts", "judged_methods", sa.Text()),
)

#: Revision 0004's view, restored on downgrade.
OLD_IMPORTANCE_CHANGES_VIEW = """
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

#: The same columns, then the feature's own change, its band on that change, and the smallest rise
#: and fall this method would flag.
IMPORTANCE_CHANGES_VIEW = """
CREATE VIEW importance_changes AS
SELECT d.model_name AS model, d.week AS week, pd.week AS previous_week, f.method AS method,
       f.feature AS feature, f.value AS value, f.previous_value AS previous_value, f.delta AS delta,
       f.rank_change AS rank_change, f.verdict AS verdict, f.relative_change AS relative_change,
       f.band_percent AS noise_band_percent, f.band_source AS band_source, f.z AS z,
       f.profile_distance AS profile_distance, f.cause AS cause,
       f.plain_change AS plain_change, f.plain_band_low AS plain_band_low,
       f.plain_band_high AS plain_band_high, f.min_detectable_rise AS min_detectable_rise,
       f.min_detectable_fall AS min_detectable_fall
FROM feature_drifts f
JOIN audit_runs r ON r.id = f.run_id
JOIN model_drops d ON d.id = r.drop_id
JOIN audit_runs pr ON pr.id = f.previous_run_id
JOIN model_drops pd ON pd.id = pr.drop_id
WHERE r.status = 'succeeded'
"""

#: One row per (drop, feature) with a drift call: the change enough verdict methods flag together.
FEATURE_SENSITIVITY_VIEW = """
CREATE VIEW feature_sensitivity AS
SELECT d.model_name AS model, d.week AS week, v.feature AS feature,
       v.min_detectable_rise AS min_detectable_rise, v.min_detectable_fall AS min_detectable_fall,
       v.judged_methods AS methods
FROM feature_verdicts v
JOIN audit_runs r ON r.id = v.run_id
JOIN model_drops d ON d.id = r.drop_id
WHERE r.status = 'succeeded'
"""


def upgrade() -> None:
    op.execute("DROP VIEW importance_changes")
    # ADD COLUMN of a nullable column: no table rebuild on either backend
    for table, name, kind in COLUMNS:
        op.add_column(table, sa.Column(name, kind, nullable=True))
    op.execute(IMPORTANCE_CHANGES_VIEW)
    op.execute(FEATURE_SENSITIVITY_VIEW)


def downgrade() -> None:
    # A plain DROP COLUMN, not a batch rebuild (see 0006): a rebuild would cascade-delete figures.
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"downgrading below 0009 needs SQLite >= 3.35 (ALTER TABLE DROP COLUMN); this Python has "
            f"{sqlite3.sqlite_version}: use a Python built with a newer SQLite"
        )
    op.execute("DROP VIEW feature_sensitivity")
    op.execute("DROP VIEW importance_changes")
    for table, name, _ in reversed(COLUMNS):
        op.drop_column(table, name)
    op.execute(OLD_IMPORTANCE_CHANGES_VIEW)
