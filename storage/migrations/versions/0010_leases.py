"""Leases of running audits and retention (issue 19): audit_runs.heartbeat_at and lease_seconds (a
run whose lease expired is marked ``interrupted``), model_drops.pruned_at (a drop whose figures
`drift-audit prune` removed).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: (table, column, type) of the new nullable columns, in the order they are added.
COLUMNS = (
    ("audit_runs", "heartbeat_at", sa.DateTime(timezone=True)),
    ("audit_runs", "lease_seconds", sa.Float()),
    ("model_drops", "pruned_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    # ADD COLUMN of a nullable column: no table rebuild on either backend. Runs left `running` by
    # earlier versions keep NULL: the lease check falls back to their start time (storage.leases).
    for table, name, kind in COLUMNS:
        op.add_column(table, sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN, not a batch rebuild (see 0006): a rebuild of audit_runs or model_drops on
    # SQLite would delete every figure through ON DELETE CASCADE. `interrupted` rows stay as they are.
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"downgrading below 0010 needs SQLite >= 3.35 (ALTER TABLE DROP COLUMN); this Python has "
            f"{sqlite3.sqlite_version}: use a Python built with a newer SQLite"
        )
    for table, name, _ in reversed(COLUMNS):
        op.drop_column(table, name)
