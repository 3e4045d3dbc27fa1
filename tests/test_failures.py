"""Failure behaviour of the flow: a method that raises is a result; loading or storing that fails
fails the run without half-written rows; a transient I/O error is retried, nothing else is; a failed
comparison or artifact does not stop the other drops, the report or the e-mail."""

from __future__ import annotations

import datetime as dt
import errno
import logging
from pathlib import Path

import httpx
import keras
import pytest
import sqlalchemy as sa
import tensorflow as tf
from prefect import task
from prefect.cache_policies import NO_CACHE

import flows.tasks
import flows.weekly_audit
from audit.methods import MethodContext, MethodSpec
from audit.methods import base as method_registry
from audit.types import AuditError, DriftConfig, FloatArray, Importance, ReportInput
from flows.cli import main
from flows.tasks import is_transient_error, store_task
from flows.weekly_audit import AuditResult, weekly_audit
from reports.sections import HISTORY_FEATURES, HISTORY_WEEKS
from storage import writes
from storage.session import make_engine
from tests.helpers import small_registry, table_counts

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3)]
METHODS = ["weight_sum", "saliency"]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _exploding(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext
) -> Importance:
    raise ZeroDivisionError("the <b>exploding</b> method divided by zero")


@pytest.fixture
def exploding(monkeypatch: pytest.MonkeyPatch) -> str:
    """A method, registered for one test, that always raises."""
    spec = MethodSpec("exploding", _exploding, needs_eval_sample=True, description="always raises")
    monkeypatch.setitem(method_registry._REGISTRY, "exploding", spec)
    return "exploding"


@pytest.fixture
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store task's retries without its backoff (about 2 s, then 4 s): the tests do not wait."""
    fast = store_task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
    monkeypatch.setattr(flows.weekly_audit, "store_task", fast)


def _rows(db_url: str, query: str) -> list[sa.Row[tuple[object, ...]]]:
    with make_engine(db_url).connect() as connection:
        return list(connection.execute(sa.text(query)))


def _audited(tmp_path: Path) -> tuple[list[str], str]:
    """Both weeks audited with `METHODS`: the CLI arguments of a re-audit of week 2, and the DB URL."""
    registry = small_registry(tmp_path, WEEKS)
    db_url = f"sqlite:///{tmp_path / 'a.db'}"
    args = ["run", "--registry", str(registry), "--db", db_url, "--out", str(tmp_path / "out")]
    assert main([*args, "--methods", ",".join(METHODS)]) == 0
    return [*args, "--methods", ",".join(METHODS), "--week", WEEKS[1].isoformat()], db_url


def test_a_method_that_raises_is_failed_with_its_error_and_the_others_are_stored(
    tmp_path: Path, db_url: str, exploding: str
) -> None:
    registry = small_registry(tmp_path, WEEKS[:1])
    result = weekly_audit(
        registry=str(registry), db_url=db_url, out_dir=str(tmp_path / "out"), methods=[*METHODS, exploding]
    )

    assert isinstance(result, AuditResult) and result.audited_weeks == (WEEKS[0],)
    outcomes = {
        row.method: (row.status, row.reason)
        for row in _rows(db_url, "SELECT method, status, reason FROM method_results")
    }
    assert outcomes["exploding"] == (
        "failed",
        "ZeroDivisionError: the <b>exploding</b> method divided by zero",
    )
    assert {outcomes[m][0] for m in METHODS} == {"ok"}
    stored = {row.method for row in _rows(db_url, "SELECT DISTINCT method FROM importance_history")}
    assert stored == set(METHODS)
    assert result.report_path is not None
    html = result.report_path.read_text(encoding="utf-8")
    assert "exploding" in html and "divided by zero" in html
    assert "the &lt;b&gt;exploding&lt;/b&gt; method" in html  # the error is shown, escaped
    for method in METHODS:
        assert method in html


def test_a_load_failure_fails_the_run_and_adds_only_a_failed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, db_url = _audited(tmp_path)
    before = table_counts(make_engine(db_url))
    history = _rows(db_url, "SELECT * FROM importance_history ORDER BY week, method, feature")
    (tmp_path / "registry" / WEEKS[1].isoformat() / "model.keras").write_bytes(b"")

    assert main(args) == 1
    assert "model file is empty" in capsys.readouterr().err.strip().splitlines()[-1]
    assert table_counts(make_engine(db_url)) == {**before, "audit_runs": before["audit_runs"] + 1}
    last = _rows(db_url, "SELECT status, error FROM audit_runs ORDER BY id DESC LIMIT 1")[0]
    assert last.status == "failed" and "model file is empty" in last.error
    assert _rows(db_url, "SELECT * FROM importance_history ORDER BY week, method, feature") == history


@pytest.mark.usefixtures("no_retry_delay")
def test_a_store_failure_fails_the_run_and_writes_nothing_half(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args, db_url = _audited(tmp_path)
    before = table_counts(make_engine(db_url))
    history = _rows(db_url, "SELECT * FROM importance_history ORDER BY week, method, feature")
    real = writes.record_success
    calls: list[int] = []

    def fails_midway(session: sa.orm.Session, run_id: int, **kwargs: object) -> None:
        calls.append(run_id)
        real(session, run_id, **kwargs)  # every row written in the transaction...
        raise ConnectionResetError("connection reset by peer")  # ...then it breaks before the commit

    monkeypatch.setattr(writes, "record_success", fails_midway)
    state = weekly_audit(
        registry=str(tmp_path / "registry"),
        db_url=db_url,
        out_dir=str(tmp_path / "out"),
        methods=METHODS,
        week=WEEKS[1],
        return_state=True,
    )
    assert state.is_failed() and "connection reset by peer" in (state.message or "")
    assert main(args) == 1
    assert "connection reset by peer" in capsys.readouterr().err.strip().splitlines()[-1]
    assert len(calls) == 6  # transient: each of the 2 runs tried 3 times

    assert table_counts(make_engine(db_url)) == {**before, "audit_runs": before["audit_runs"] + 2}
    statuses = [row.status for row in _rows(db_url, "SELECT status FROM audit_runs ORDER BY id")]
    assert statuses == ["succeeded", "succeeded", "failed", "failed"]
    assert _rows(db_url, "SELECT * FROM importance_history ORDER BY week, method, feature") == history


@pytest.mark.usefixtures("no_retry_delay")
def test_a_transient_database_error_in_store_is_retried(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = small_registry(tmp_path, WEEKS[:1])
    real = writes.record_success
    calls: list[int] = []

    def fails_once(session: sa.orm.Session, run_id: int, **kwargs: object) -> None:
        calls.append(run_id)
        real(session, run_id, **kwargs)
        if len(calls) == 1:
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(writes, "record_success", fails_once)
    result = weekly_audit(
        registry=str(registry), db_url=db_url, out_dir=str(tmp_path / "out"), methods=METHODS
    )

    assert isinstance(result, AuditResult) and result.audited_weeks == (WEEKS[0],)
    assert len(calls) == 2 and calls[0] == calls[1]  # the same run, stored on the second try
    counts = table_counts(make_engine(db_url))
    assert counts["audit_runs"] == 1 and counts["method_results"] == len(METHODS)
    assert counts["importances"] == len(METHODS) * 4  # exactly one set of rows: 4 features per method


@pytest.mark.usefixtures("no_retry_delay")
def test_an_error_that_is_not_transient_io_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = small_registry(tmp_path, WEEKS[:1])
    calls: list[int] = []

    def bug(session: sa.orm.Session, run_id: int, **kwargs: object) -> None:
        calls.append(run_id)
        raise TypeError("record_success() got an unexpected keyword argument 'copies'")

    monkeypatch.setattr(writes, "record_success", bug)
    state = weekly_audit(
        registry=str(registry), out_dir=str(tmp_path / "out"), methods=METHODS, return_state=True
    )
    assert state.is_failed() and "TypeError: record_success()" in (state.message or "")
    assert len(calls) == 1  # a bug fails the same way every time: tried once


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (sa.exc.OperationalError("SELECT 1", {}, Exception("database is locked")), True),
        (sa.exc.DBAPIError("COMMIT", {}, Exception("gone"), connection_invalidated=True), True),
        (sa.exc.DBAPIError("INSERT", {}, Exception("bad value")), False),
        (sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (TimeoutError("timed out"), True),
        (ConnectionRefusedError("refused"), True),
        (OSError(errno.EIO, "Input/output error"), True),
        (httpx.ConnectError("Prefect API unreachable"), True),
        (FileNotFoundError(errno.ENOENT, "No such file", "model.keras"), False),
        (PermissionError(errno.EACCES, "Permission denied"), False),
        (IsADirectoryError(errno.EISDIR, "Is a directory"), False),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), False),
        (AuditError("model.keras: the model file is empty"), False),
        (ValueError("bad shape"), False),
        (TypeError("unexpected keyword"), False),
        (tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"), False),
        (MemoryError(), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_only_transient_io_errors_are_retried(error: BaseException, transient: bool) -> None:
    assert is_transient_error(error) is transient


def _counting_compare(
    monkeypatch: pytest.MonkeyPatch, calls: list[dt.date], fail_week: dt.date | None = None
) -> None:
    """Replace the flow's compare task with one that records each week compared and fails for
    `fail_week` (no retries, so the test does not wait)."""
    real = flows.weekly_audit.compare_task

    @task(name="compare", cache_policy=NO_CACHE)
    def compare(db_url: str, model_name: str, week: dt.date, drift_config: DriftConfig) -> ReportInput:
        calls.append(week)
        if week == fail_week:
            raise AuditError(f"the stored audit of {week} cannot be read")
        return real.fn(db_url, model_name, week, drift_config)

    monkeypatch.setattr(flows.weekly_audit, "compare_task", compare)


def test_a_failed_comparison_fails_the_run_but_not_the_later_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = small_registry(tmp_path, WEEKS)
    db_url = f"sqlite:///{tmp_path / 'a.db'}"
    calls: list[dt.date] = []
    _counting_compare(monkeypatch, calls, fail_week=WEEKS[0])
    state = weekly_audit(
        registry=str(registry),
        db_url=db_url,
        out_dir=str(tmp_path / "out"),
        methods=METHODS,
        return_state=True,
    )

    assert state.is_failed()
    assert state.message == (
        f"1 of 2 drop(s) failed; {WEEKS[0]}: comparison failed: the stored audit of {WEEKS[0]} cannot be read"
    )
    assert calls == WEEKS  # the second drop was audited, compared and reported all the same
    statuses = [row.status for row in _rows(db_url, "SELECT status FROM audit_runs ORDER BY id")]
    assert statuses == ["succeeded", "succeeded"]  # the first drop's figures are stored
    assert (tmp_path / "out" / WEEKS[1].isoformat() / "report.html").is_file()


def test_the_reported_week_is_compared_once_and_with_the_report_history_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, db_url = _audited(tmp_path)
    calls: list[dt.date] = []
    windows: list[tuple[object, object]] = []
    real_history = flows.tasks.report_history

    def history(*args: object, weeks: int, top_k: int) -> object:
        windows.append((weeks, top_k))
        return real_history(*args, weeks=weeks, top_k=top_k)  # type: ignore[arg-type]

    monkeypatch.setattr(flows.tasks, "report_history", history)
    _counting_compare(monkeypatch, calls)
    # re-auditing week 1 makes week 2's comparison stale: both are compared once, and week 1 reported
    out = tmp_path / "out"
    result = weekly_audit(
        registry=str(tmp_path / "registry"), db_url=db_url, out_dir=str(out), methods=METHODS, week=WEEKS[0]
    )
    assert isinstance(result, AuditResult) and result.report_path == out / str(WEEKS[0]) / "report.html"
    assert sorted(calls) == WEEKS
    assert set(windows) == {(HISTORY_WEEKS, HISTORY_FEATURES)}


def test_artifacts_that_cannot_be_published_do_not_fail_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    @task(name="publish-artifacts", cache_policy=NO_CACHE)
    def api_down(*args: object) -> None:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(flows.weekly_audit, "artifacts_task", api_down)
    registry = small_registry(tmp_path, WEEKS[:1])
    with caplog.at_level(logging.WARNING):
        result = weekly_audit(registry=str(registry), out_dir=str(tmp_path / "out"), methods=METHODS)
    assert isinstance(result, AuditResult) and result.report_path is not None
    assert result.report_path.is_file()
    assert "Prefect artifacts not published: ConnectError: [Errno 111] Connection refused" in caplog.text


@pytest.mark.parametrize(
    ("methods", "error"),
    [([], "no method to run"), (["weight_sum", "shap"], "unknown method(s) shap; available: ")],
)
def test_a_bad_method_list_fails_before_any_drop_is_loaded(
    tmp_path: Path, methods: list[str], error: str
) -> None:
    registry = small_registry(tmp_path, WEEKS[:1])
    db_url = f"sqlite:///{tmp_path / 'a.db'}"
    state = weekly_audit(
        registry=str(registry),
        db_url=db_url,
        out_dir=str(tmp_path / "out"),
        methods=methods,
        return_state=True,
    )
    assert state.is_failed() and (state.message or "").count(error) == 1
    assert not sa.inspect(make_engine(db_url)).has_table("audit_runs")  # nothing started
