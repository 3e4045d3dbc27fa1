"""Where each audited drop came from (issue 14): source URI, content key, MLflow version, run and
aliases, object ETags on audit_runs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: (name, type) of the new nullable columns, in the order they are added.
COLUMNS = (
    ("source_uri", sa.Text()),
    ("source_hash", sa.String(64)),
    ("source_etags", sa.Text()),
    ("mlflow_version", sa.Integer()),
    ("mlflow_run_id", sa.String(64)),
    ("mlflow_aliases", sa.Text()),
)


def upgrade() -> None:
    # ADD COLUMN of a nullable column: no table rebuild on either backend
    for name, kind in COLUMNS:
        op.add_column("audit_runs", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN, not a batch rebuild (see 0006): a rebuild of audit_runs on SQLite would
    # delete every figure through ON DELETE CASCADE.
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"downgrading below 0007 needs SQLite >= 3.35 (ALTER TABLE DROP COLUMN); this Python has "
            f"{sqlite3.sqlite_version}: use a Python built with a newer SQLite"
        )
    for name, _ in reversed(COLUMNS):
        op.drop_column("audit_runs", name)
