"""How the eval sample was read: rows in the file, rows dropped for NaN/inf, subsampling seed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("n_eval_rows_in_file", "n_eval_rows_dropped", "eval_sampling_seed")

# The view as revision 0001 created it. SQLite rebuilds audit_runs to drop columns, and the rename
# of the rebuilt table fails while a view refers to it: the downgrade drops and recreates the view.
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
    with op.batch_alter_table("audit_runs") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    op.execute("DROP VIEW importance_history")
    with op.batch_alter_table("audit_runs") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
    op.execute(IMPORTANCE_HISTORY_VIEW)
