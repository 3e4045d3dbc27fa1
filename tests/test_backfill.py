"""Backfill, catch-up and gaps: drops audited in date order, each against the latest earlier drop."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.cli import main
from flows.weekly_audit import AuditResult, weekly_audit
from storage.session import make_engine
from tests.helpers import small_registry

W1, W2, W3 = dt.date(2026, 3, 2), dt.date(2026, 3, 9), dt.date(2026, 3, 16)
METHODS = ["permutation", "weight_sum"]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three weekly drops built once; each test copies the ones that have "arrived" into its registry."""
    return small_registry(tmp_path_factory.mktemp("drops"), [W1, W2, W3])


def _arrive(drops: Path, registry: Path, *weeks: dt.date) -> None:
    for week in weeks:
        shutil.copytree(drops / week.isoformat(), registry / week.isoformat())


def _audit(
    registry: Path,
    db_url: str,
    out: Path,
    from_week: dt.date | None = None,
    to_week: dt.date | None = None,
    redo: bool = False,
) -> AuditResult:
    result = weekly_audit(
        registry=str(registry),
        db_url=db_url,
        out_dir=str(out),
        model_name="demo",
        methods=METHODS,
        from_week=from_week,
        to_week=to_week,
        redo=redo,
    )
    assert isinstance(result, AuditResult), result
    return result


def _compared(db_url: str) -> list[tuple[str, str]]:
    """(week, previous week) of every drift call, by week."""
    with make_engine(db_url).connect() as connection:
        rows = connection.execute(sa.text("SELECT week, previous_week FROM audit_verdicts ORDER BY week"))
        return [(str(week), str(previous)) for week, previous in rows]


def _current_runs(db_url: str) -> dict[str, int]:
    """week -> id of its current (succeeded) run."""
    with make_engine(db_url).connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT d.week, r.id FROM audit_runs r JOIN model_drops d ON d.id = r.drop_id "
                "WHERE r.status = 'succeeded'"
            )
        )
        return {str(week): run_id for week, run_id in rows}


def _previous_run_ids(db_url: str, run_id: int) -> set[int]:
    with make_engine(db_url).connect() as connection:
        rows = connection.execute(
            sa.text("SELECT DISTINCT previous_run_id FROM comparisons WHERE run_id = :run"), {"run": run_id}
        )
        return set(rows.scalars())


def test_a_missed_run_is_caught_up_in_order(tmp_path: Path, drops: Path) -> None:
    registry, out = tmp_path / "registry", tmp_path / "out"
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    registry.mkdir()
    _arrive(drops, registry, W1)
    assert _audit(registry, db_url, out).audited_weeks == (W1,)

    # the scheduled run after W2 was missed: W2 and W3 are both new at the next run
    _arrive(drops, registry, W2, W3)
    result = _audit(registry, db_url, out)

    assert result.audited_weeks == (W2, W3)
    assert _compared(db_url) == [(str(W2), str(W1)), (str(W3), str(W2))]
    runs = _current_runs(db_url)
    assert runs[str(W1)] < runs[str(W2)] < runs[str(W3)]  # audited oldest first
    assert _previous_run_ids(db_url, runs[str(W3)]) == {runs[str(W2)]}
    assert result.report_path == out / str(W3) / "report.html" and result.report_path.is_file()


def test_gap_then_backfill_then_redo(
    tmp_path: Path, drops: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    _arrive(drops, registry, W1, W3)  # no retrain in the week of W2

    with caplog.at_level(logging.WARNING):
        assert _audit(registry, db_url, out).audited_weeks == (W1, W3)
    assert f"no drop for week of {W2}: compared with {W1}" in caplog.text
    assert _compared(db_url) == [(str(W3), str(W1))]

    # W2's drop turns up late: a backfill of its week audits it against W1, and W3's comparison,
    # whose previous drop is now W2, is made again
    _arrive(drops, registry, W2)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        backfill = _audit(registry, db_url, out, from_week=W2, to_week=W2)
    assert backfill.audited_weeks == (W2,)
    assert "no drop for week" not in caplog.text
    assert _compared(db_url) == [(str(W2), str(W1)), (str(W3), str(W2))]
    runs = _current_runs(db_url)
    assert _previous_run_ids(db_url, runs[str(W3)]) == {runs[str(W2)]}
    assert backfill.report_path == out / str(W3) / "report.html"

    # without --redo the range holds nothing new; with it, its drops are audited again, oldest first
    assert _audit(registry, db_url, out, from_week=W1, to_week=W2).audited_weeks == ()
    redo = _audit(registry, db_url, out, from_week=W1, to_week=W2, redo=True)
    assert redo.audited_weeks == (W1, W2)
    again = _current_runs(db_url)
    assert runs[str(W2)] < again[str(W1)] < again[str(W2)] and again[str(W3)] == runs[str(W3)]
    assert _previous_run_ids(db_url, again[str(W2)]) == {again[str(W1)]}
    assert _previous_run_ids(db_url, again[str(W3)]) == {again[str(W2)]}  # compared with the new figures


def test_backfill_command(tmp_path: Path, drops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["backfill", "--registry", str(drops), "--out", str(out), "--model-name", "demo", "--quiet"]

    code = main([*argv, "--from", "2026-03-05", "--to", "20260316", "--methods", "weight_sum"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == str(out / str(W3) / "report.html")
    assert "drift-audit: 2026" not in captured.err  # --quiet: no progress lines
    assert _compared(f"sqlite:///{out.resolve() / 'drift-audit.db'}") == [(str(W3), str(W2))]


_ALL = "2026-03-02, 2026-03-09, 2026-03-16"


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        (
            ["--from", "2026-03-16", "--to", "2026-03-09"],
            "the range starts (2026-03-16) after it ends (2026-03-09); swap the two dates",
        ),
        (
            ["--from", "2025-01-01", "--to", "2025-06-30"],
            "no drop from 2025-01-01 to 2025-06-30 in the registry (drops: " + _ALL + ")",
        ),
        (
            ["--from", "2026-04-01"],
            "no drop from 2026-04-01 to the last drop in the registry (drops: " + _ALL + ")",
        ),
    ],
)
def test_bad_range_is_a_one_line_error(
    tmp_path: Path, drops: Path, capsys: pytest.CaptureFixture[str], dates: list[str], message: str
) -> None:
    code = main(["backfill", "--registry", str(drops), "--out", str(tmp_path / "out"), *dates])

    err = capsys.readouterr().err
    assert code == 1
    assert err == f"drift-audit: error: {message}\n"
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_bad_date_is_a_usage_error(drops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["backfill", "--registry", str(drops), "--from", "2026-02-30"])
    assert exited.value.code == 2
    assert "'2026-02-30' is not a date" in capsys.readouterr().err
