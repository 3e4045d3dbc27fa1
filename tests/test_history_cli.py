"""`drift-audit history` on SQLite and PostgreSQL: formats, filters, and one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.cli import main
from storage.session import make_engine, upgrade_database
from tests.test_storage_drift import NAMES, WEEKS, _fill


@pytest.fixture
def filled(db_url: str) -> str:
    engine = make_engine(db_url)
    upgrade_database(engine)
    _fill(engine)  # four weeks, the last with DEWP ten times as important
    engine.dispose()
    return db_url


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["history", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_json_holds_the_history_with_drift_calls(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(
        capsys, "--db", filled, "--feature", "DEWP", "--method", "permutation", "--format", "json"
    )
    assert status == 0
    rows = json.loads(out)
    assert [row["week"] for row in rows] == [str(week) for week in WEEKS]
    assert set(rows[0]) == {
        "week",
        "model",
        "method",
        "feature",
        "value",
        "std",
        "rank",
        "method_version",
        "verdict",
    }
    assert rows[0]["verdict"] is None  # the first drop was not compared
    assert rows[-1]["verdict"] == "changed" and rows[-1]["rank"] == 1
    assert rows[-1]["value"] > 5 * rows[-2]["value"] and rows[0]["std"] == pytest.approx(0.01)


def test_csv_and_weeks_and_model_filters(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "--db", filled, "--model", "m", "--weeks", "2", "--format", "csv")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {row["week"] for row in rows} == {str(week) for week in WEEKS[-2:]}
    assert {row["feature"] for row in rows} == set(NAMES)
    assert len(rows) == 2 * 5 * len(NAMES)  # 2 weeks x 5 methods with per-feature figures x 4 features
    assert all(row["verdict"] in {"stable", "changed"} for row in rows)


def test_table_is_aligned(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "--db", filled, "--feature", "pm2.5")
    assert status == 0
    header, rule, *lines = out.splitlines()
    assert header.split() == [
        "week",
        "model",
        "method",
        "feature",
        "value",
        "std",
        "rank",
        "method_version",
        "verdict",
    ]
    starts = [
        index for index, char in enumerate(rule) if char == "-" and (index == 0 or rule[index - 1] == " ")
    ]
    assert len(starts) == 9 and len(lines) == len(WEEKS) * 5
    for line in lines:  # every column starts (text) or ends (numbers) where the rule says
        assert line[starts[0] : starts[0] + 10].count("-") == 2  # an ISO date
        assert line[starts[3] - 2 : starts[3]] == "  " and line[starts[3] :].startswith("pm2.5")


def test_default_db_is_the_one_run_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.database import default_db_url

    out_dir = tmp_path / "out"
    engine = make_engine(default_db_url(out_dir))
    upgrade_database(engine)
    _fill(engine)
    engine.dispose()
    status, out, _ = _run(capsys, "--out", str(out_dir), "--feature", "DEWP", "--format", "csv")
    assert status == 0 and out.count("DEWP") == len(WEEKS) * 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "other"], "no audits of model 'other'; change --model to one of: m"),
        (["--feature", "DEWp"], "no feature 'DEWp' in the figures; change --feature to one of: DEWP"),
        (["--method", "shap"], "no method 'shap' in the figures; change --method to one of:"),
        (["--feature", "O'Brien"], 'no feature "O\'Brien"'),  # bound, not spliced into the SQL
    ],
)
def test_a_filter_matching_nothing_says_what_to_change(
    filled: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = _run(capsys, "--db", filled, *args)
    assert status == 1 and out == ""
    assert err.startswith(f"drift-audit: error: {message}") and err.count("\n") == 1


def test_a_database_without_audits(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(db_url)
    with engine.connect() as connection:
        has_schema = sa.inspect(connection).has_table("importances")
    assert not has_schema
    status, _, err = _run(capsys, "--db", db_url)
    assert status == 1 and "holds no drift-audit schema" in err
    upgrade_database(engine)
    engine.dispose()
    status, _, err = _run(capsys, "--db", db_url)
    assert status == 1 and "holds no audits yet" in err and err.count("\n") == 1


def test_bad_database_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "audit.db"
    status, _, err = _run(capsys, "--db", f"sqlite:///{missing}")
    assert status == 1 and f"no database at {missing}" in err and not missing.exists()
    status, _, err = _run(capsys, "--db", "not a url")
    assert status == 1 and "is not a SQLAlchemy URL" in err
    status, _, err = _run(capsys, "--db", "postgresql+psycopg://drift:secret@127.0.0.1:1/none")
    assert status == 1 and err.startswith("drift-audit: error: cannot read database") and err.count("\n") == 1
    assert "secret" not in err
    with pytest.raises(SystemExit):
        main(["history", "--weeks", "0"])
