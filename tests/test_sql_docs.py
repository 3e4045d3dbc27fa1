"""Every SQL query in docs/sql.md and README.md runs against a real audit's database and returns rows."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

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


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three weekly drops whose features carry the demo's names (built once, audited per backend)."""
    registry = small_registry(tmp_path_factory.mktemp("sql-docs"), WEEKS, n_features=4)
    for drop in registry.iterdir():
        (drop / "audit.toml").write_text('feature_names = ["pm2.5", "DEWP", "TEMP", "PRES"]\n')
    return registry


@pytest.fixture(scope="module", params=BACKENDS)
def audited_db(
    request: pytest.FixtureRequest,
    registry: Path,
    tmp_path_factory: pytest.TempPathFactory,
    prefect_harness: str,
) -> Iterator[str]:
    """A database filled by a real three-week audit of `registry`."""
    folder = tmp_path_factory.mktemp("sql-docs-audit")
    with fresh_database(request.param, folder) as url:
        result = weekly_audit(registry=str(registry), db_url=url, out_dir=str(folder / "out"))
        assert isinstance(result, AuditResult)
        _log_a_notification(url)
        yield url


def _log_a_notification(url: str) -> None:
    """One alert in the log, as `flows.alerts.notify_task` writes it (the queries of "Alerts")."""
    from sqlalchemy.orm import Session

    from storage import notification_log

    with Session(make_engine(url)) as session, session.begin():
        attempt = notification_log.record_attempt(
            session,
            model_name="registry",
            week=WEEKS[-1],
            verdict="alert",
            hashed_target=notification_log.target_hash("json://127.0.0.1/hook"),
            target_kind="json",
            run_id=None,
            error="sending: not confirmed",
        )
        notification_log.set_outcome(session, attempt, sent=True)


@pytest.mark.parametrize("query", _queries())
def test_documented_query_returns_rows(audited_db: str, query: str) -> None:
    with make_engine(audited_db).connect() as connection:
        rows = connection.execute(sa.text(query)).all()
    assert rows, f"no rows from:\n{query}"
