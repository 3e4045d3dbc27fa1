"""The cut-over of a method's definition (issue 18): saliency became the mean |gradient| (version 2).

A drop audited with version 1 is re-scored with version 2 when the next drop is audited and its
files are still in the registry; otherwise that method's comparison is "not comparable" (no
statistics, both versions stored and reported). Figures stored before are made version 1 here by
hand, as revision 0012 makes them.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.weekly_audit import AuditResult, weekly_audit
from storage.session import make_engine
from tests.helpers import small_registry

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3)]
METHODS = ["saliency", "gradient_x_input"]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _audit_first_week_as_version_1(tmp_path: Path, db_url: str) -> Path:
    """A registry of two drops whose first was audited before saliency's cut-over (version 1)."""
    registry = small_registry(tmp_path, WEEKS)
    out = tmp_path / "out"
    first = weekly_audit(
        registry=str(registry), db_url=db_url, out_dir=str(out), week=WEEKS[0], methods=METHODS
    )
    assert isinstance(first, AuditResult)
    with make_engine(db_url).begin() as connection:
        for table in ("importances", "method_results"):
            connection.execute(sa.text(f"UPDATE {table} SET method_version = 1 WHERE method = 'saliency'"))
    return registry


def _comparison(db_url: str) -> sa.Row[tuple[object, ...]]:
    with make_engine(db_url).connect() as connection:
        return connection.execute(
            sa.text(
                "SELECT spearman, ndcg, top_k, method_version, previous_method_version FROM comparisons "
                "WHERE method = 'saliency'"
            )
        ).one()


def test_the_previous_drop_is_rescored_when_its_files_are_there(tmp_path: Path, db_url: str) -> None:
    registry = _audit_first_week_as_version_1(tmp_path, db_url)
    result = weekly_audit(
        registry=str(registry), db_url=db_url, out_dir=str(tmp_path / "out"), methods=METHODS
    )
    assert isinstance(result, AuditResult) and result.audited_weeks == (WEEKS[1],)
    with make_engine(db_url).connect() as connection:
        versions = connection.execute(
            sa.text("SELECT week, method_version FROM importance_history WHERE method = 'saliency'")
        ).all()
        parameters = connection.execute(
            sa.text(
                "SELECT m.parameters FROM method_results AS m JOIN audit_runs AS r ON r.id = m.run_id "
                "JOIN model_drops AS d ON d.id = r.drop_id WHERE m.method = 'saliency' AND d.week = :week"
            ),
            {"week": WEEKS[0]},
        ).scalar_one()
    assert {version for _, version in versions} == {2}
    stored = parameters if isinstance(parameters, dict) else json.loads(parameters)
    assert stored["rescored_for"] == WEEKS[1].isoformat()
    comparison = _comparison(db_url)
    assert (comparison.method_version, comparison.previous_method_version) == (2, 2)
    assert comparison.spearman is not None and comparison.top_k > 0


def test_not_comparable_when_the_previous_drop_is_gone(tmp_path: Path, db_url: str) -> None:
    registry = _audit_first_week_as_version_1(tmp_path, db_url)
    shutil.rmtree(registry / WEEKS[0].isoformat())
    out = tmp_path / "out"
    result = weekly_audit(registry=str(registry), db_url=db_url, out_dir=str(out), methods=METHODS)
    assert isinstance(result, AuditResult) and result.report_path is not None
    comparison = _comparison(db_url)
    assert (comparison.method_version, comparison.previous_method_version) == (2, 1)
    assert comparison.spearman is None and comparison.ndcg is None and comparison.top_k == 0
    with make_engine(db_url).connect() as connection:
        judged = connection.execute(
            sa.text("SELECT COUNT(*) FROM importance_changes WHERE method = 'saliency'")
        ).scalar_one()
    assert judged == 0  # no drift call across versions
    html = result.report_path.read_text(encoding="utf-8")
    assert "not comparable: method version 1 last week, 2 this week" in html
