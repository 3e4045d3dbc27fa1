"""Every SQL query in docs/sql.md and README.md runs against a real audit's database and returns rows."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prefect.testing.utilities import prefect_test_harness

from flows.weekly_audit import AuditResult, weekly_audit
from storage.session import make_engine
from tests.databases import BACKENDS, fresh_database
from tests.helpers import small_registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "sql.md", ROOT / "README.md"]
WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3), dt.date(2014, 11, 10)]
pytestmark = pytest.mark.slow


def _queries() -> list[pytest.param]:
    found = []
    for doc in DOCS:
        for index, block in enumerate(re.findall(r"```sql\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)):
            found.append(pytest.param(block.strip().rstrip(";"), id=f"{doc.name}-{index}"))
    return found


def test_docs_hold_queries() -> None:
    assert len(_queries()) >= 6


@pytest.fixture(scope="module", params=BACKENDS)
def audited_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database filled by a real three-week audit whose features carry the demo's names."""
    folder = tmp_path_factory.mktemp("sql-docs")
    registry = small_registry(folder, WEEKS, n_features=4)
    for drop in registry.iterdir():
        (drop / "audit.toml").write_text('feature_names = ["pm2.5", "DEWP", "TEMP", "PRES"]\n')
    with fresh_database(request.param, folder) as url, prefect_test_harness(server_startup_timeout=120):
        result = weekly_audit(registry=str(registry), db_url=url, out_dir=str(folder / "out"))
        assert isinstance(result, AuditResult)
        yield url


@pytest.mark.parametrize("query", _queries())
def test_documented_query_returns_rows(audited_db: str, query: str) -> None:
    with make_engine(audited_db).connect() as connection:
        rows = connection.execute(sa.text(query)).all()
    assert rows, f"no rows from:\n{query}"
