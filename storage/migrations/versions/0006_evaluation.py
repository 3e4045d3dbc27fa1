"""How well each audited model fits its eval sample: loss and metric on audit_runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: (name, type) of the new nullable columns, in the order they are added.
COLUMNS = (
    ("eval_loss_name", sa.String(32)),
    ("eval_loss", sa.Float()),
    ("eval_metric_name", sa.String(32)),
    ("eval_metric", sa.Float()),
)


def upgrade() -> None:
    # ADD COLUMN of a nullable column: no table rebuild on either backend
    for name, kind in COLUMNS:
        op.add_column("audit_runs", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN, not a batch rebuild: on SQLite a rebuild drops audit_runs, which (with
    # foreign keys on) deletes every figure through ON DELETE CASCADE, and fails on the views.
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"downgrading below 0006 needs SQLite >= 3.35 (ALTER TABLE DROP COLUMN); this Python has "
            f"{sqlite3.sqlite_version}: use a Python built with a newer SQLite"
        )
    for name, _ in reversed(COLUMNS):
        op.drop_column("audit_runs", name)
