"""A database password never reaches a flow run's stored parameters, its logs, the reports or the tables.

The URL travels through the environment (`drift-audit run --db`, a worker's ``DRIFT_AUDIT_DB_URL``)
or a Prefect Secret block (``--db-secret`` / the ``db_secret`` parameter); a ``db_url`` parameter
with a password is refused. Each run is then read back: the flow run, its states, task runs, logs
and artifacts through the Prefect API of the test server; every file the run wrote (reports, method
cache); every table's rows; the command's output and the Python log records.

PostgreSQL (127.0.0.1, trust auth: a URL with a password still connects) holds the figures where
it answers; those tests skip with the reason otherwise. The refusal and the error paths need no
database server.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa
from prefect.blocks.system import Secret
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import TaskRun
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogHandler

from flows.cli import main
from flows.database import DB_URL_ENV
from flows.weekly_audit import AuditResult, weekly_audit
from storage.session import make_engine
from tests.databases import fresh_database
from tests.helpers import small_registry
from tests.servers import running_prefect_harness

#: Distinctive enough that finding it anywhere means it leaked.
PASSWORD = "Pa55-n3ver-st0red-7d1c"
WEEKS = [dt.date(2024, 5, 6), dt.date(2024, 5, 13)]
METHODS = "weight_sum,permutation"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("recording_harness")]
PREFECT_STARTUP_TIMEOUT = 300
#: Seconds to wait for a flow run's task runs to be recorded by the Prefect server.
TASK_RUNS_SECONDS = 60


@pytest.fixture(scope="module")
def recording_harness() -> Iterator[str]:
    """A Prefect test server of this module's own, which records task runs (the shared one does
    not: tests/servers.py), so that the task runs are read back too."""
    with running_prefect_harness(startup_timeout=PREFECT_STARTUP_TIMEOUT, record_task_runs=True) as api_url:
        yield api_url


def with_password(url: str) -> str:
    """`url` with the test password as its user's password."""
    return sa.engine.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL schema; its URL carries a password."""
    with fresh_database("postgresql", tmp_path) as url:
        yield with_password(url)


# --- reading back everything a run left behind -----------------------------------------------------


def _prefect_records(flow_run_id: UUID) -> str:
    """Everything the Prefect API holds about one flow run, as JSON text."""
    APILogHandler().flush()  # logs are sent in batches: send the last ones before reading
    texts: list[str] = []
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        texts.append(flow_run.model_dump_json())
        texts += [state.model_dump_json() for state in client.read_flow_run_states(flow_run_id)]
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        task_runs = _task_runs(client, runs)
        texts += [task_run.model_dump_json() for task_run in task_runs]
        logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        offset, n_logs = 0, 0
        while page := client.read_logs(log_filter=logs, limit=200, offset=offset):
            texts += [log.model_dump_json() for log in page]
            offset, n_logs = offset + len(page), n_logs + len(page)
        artifacts = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        texts += [artifact.model_dump_json() for artifact in client.read_artifacts(artifact_filter=artifacts)]
    assert n_logs > 0, "the flow run's logs were not read back"
    assert task_runs, "the flow run's task runs were not read back"
    return "\n".join(texts)


def _task_runs(client: SyncPrefectClient, runs: FlowRunFilter) -> list[TaskRun]:
    """The flow run's task runs, once the server has recorded them: their events are sent in the
    background and recorded as they arrive, so an empty answer right after the run is retried."""
    EventsWorker.drain_all(timeout=TASK_RUNS_SECONDS)  # send the events it still holds
    deadline = time.monotonic() + TASK_RUNS_SECONDS
    while not (task_runs := client.read_task_runs(flow_run_filter=runs)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return task_runs


def _flow_run_ids(db_url: str) -> set[UUID]:
    with make_engine(db_url).connect() as connection:
        rows = connection.execute(sa.text("SELECT DISTINCT flow_run_id FROM audit_runs")).scalars()
        return {UUID(str(row)) for row in rows}


def _table_text(db_url: str) -> str:
    """Every row of every table of the database, as text."""
    engine = make_engine(db_url)
    texts: list[str] = []
    with engine.connect() as connection:
        for table in sa.inspect(connection).get_table_names():
            texts += [str(row) for row in connection.execute(sa.text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    return "\n".join(texts)


def _files_holding(folder: Path, secret: str) -> list[Path]:
    """The files under `folder` (reports, the method cache, ...) whose bytes hold `secret`."""
    return [path for path in folder.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]


def _assert_nothing_holds_the_password(db_url: str, out_dir: Path, *texts: str) -> None:
    flow_run_ids = _flow_run_ids(db_url)
    assert flow_run_ids, "no audit run stamped with its flow run"
    for flow_run_id in flow_run_ids:
        records = _prefect_records(flow_run_id)
        assert str(WEEKS[-1]) in records  # the logs were read: they name the weeks
        assert PASSWORD not in records
    tables = _table_text(db_url)
    assert "succeeded" in tables and PASSWORD not in tables
    assert any(out_dir.rglob("report.html")) and _files_holding(out_dir, PASSWORD) == []
    for text in texts:
        assert PASSWORD not in text


# --- the command line ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_cli_db_with_a_password_reaches_the_flow_through_the_environment_only(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    registry, out = small_registry(tmp_path, WEEKS), tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        code = main(
            ["run", "--registry", str(registry), "--db", pg_url, "--out", str(out), "--methods", METHODS]
        )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert DB_URL_ENV not in os.environ  # restored after the run
    assert not (out / "drift-audit.db").exists()  # the figures went to PostgreSQL, not the default
    (flow_run_id,) = _flow_run_ids(pg_url)
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(flow_run_id).parameters
    assert parameters["registry"] == str(registry) and parameters.get("db_url") is None
    _assert_nothing_holds_the_password(pg_url, out, captured.out, captured.err, caplog.text)


@pytest.mark.postgres
def test_cli_db_secret_reads_the_url_from_a_prefect_secret_block(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    Secret(value=pg_url).save("drift-audit-test-db", overwrite=True)
    registry, out = small_registry(tmp_path, WEEKS), tmp_path / "out"
    argv = ["run", "--registry", str(registry), "--db-secret", "drift-audit-test-db", "--out", str(out)]
    with caplog.at_level(logging.DEBUG):
        code = main([*argv, "--methods", METHODS])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (flow_run_id,) = _flow_run_ids(pg_url)
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(flow_run_id).parameters
    assert parameters["db_secret"] == "drift-audit-test-db"
    _assert_nothing_holds_the_password(pg_url, out, captured.out, captured.err, caplog.text)


def test_a_missing_secret_block_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = small_registry(tmp_path, WEEKS[:1])
    code = main(
        ["run", "--registry", str(registry), "--db-secret", "no-such-block", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("drift-audit: error: cannot load the Prefect Secret block 'no-such-block'")
    assert "--db-secret" in err[-1]


def test_an_unreachable_database_fails_in_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    registry, out = small_registry(tmp_path, WEEKS[:1]), tmp_path / "out"
    url = f"postgresql+psycopg://auditor:{PASSWORD}@127.0.0.1:1/drift"  # nothing listens on port 1
    with caplog.at_level(logging.DEBUG):
        code = main(
            ["run", "--registry", str(registry), "--db", url, "--out", str(out), "--methods", "weight_sum"]
        )
    captured = capsys.readouterr()
    assert code == 1
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("drift-audit: error: OperationalError") and "127.0.0.1" in last
    assert PASSWORD not in captured.out + captured.err + caplog.text
    with get_client(sync_client=True) as client:
        (flow_run,) = [
            run for run in client.read_flow_runs() if run.parameters.get("registry") == str(registry)
        ]
    records = _prefect_records(flow_run.id)
    assert "Connection refused" in records and PASSWORD not in records
    assert _files_holding(tmp_path, PASSWORD) == []


# --- deployments: the worker's environment, and the refused parameter ------------------------------


def test_the_worker_environment_gives_the_database_when_no_parameter_does(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = db_url if db_url.startswith("sqlite") else with_password(db_url)
    monkeypatch.setenv(DB_URL_ENV, url)
    registry, out = small_registry(tmp_path, WEEKS), tmp_path / "out"
    state = weekly_audit(registry=str(registry), out_dir=str(out), methods=["weight_sum"], return_state=True)
    assert isinstance(state.result(), AuditResult)
    assert not (out / "drift-audit.db").exists()
    assert state.state_details.flow_run_id in _flow_run_ids(url)
    _assert_nothing_holds_the_password(url, out)

    # a db_url parameter (without a password) comes before the environment
    elsewhere = f"sqlite:///{tmp_path / 'param.db'}"
    assert isinstance(
        weekly_audit(registry=str(registry), out_dir=str(out), db_url=elsewhere, methods=["weight_sum"]),
        AuditResult,
    )
    assert len(_flow_run_ids(elsewhere)) == 1


def test_a_db_url_parameter_with_a_password_is_refused(tmp_path: Path) -> None:
    registry = small_registry(tmp_path, WEEKS[:1])
    url = f"postgresql+psycopg://auditor:{PASSWORD}@127.0.0.1:1/drift"
    state = weekly_audit(registry=str(registry), out_dir=str(tmp_path / "out"), db_url=url, return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "\n" not in message and PASSWORD not in message
    assert DB_URL_ENV in message and "Prefect Secret block" in message and "db_secret" in message
    assert "auditor:***@127.0.0.1:1/drift" in message
    # why it is refused: Prefect stored the parameter with the run before any code of ours ran
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(state.state_details.flow_run_id).parameters["db_url"] == url


# --- history and db upgrade read DRIFT_AUDIT_DB_URL too --------------------------------------------


def test_history_and_db_upgrade_take_the_environments_url_and_never_print_its_password(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade"]) == 1
    assert (
        capsys.readouterr().err
        == f"drift-audit: error: no database to upgrade: pass --db URL or set {DB_URL_ENV}\n"
    )
    url = db_url if db_url.startswith("sqlite") else with_password(db_url)
    monkeypatch.setenv(DB_URL_ENV, url)
    assert main(["db", "upgrade"]) == 0
    err = capsys.readouterr().err
    assert err.endswith("is at the newest schema revision\n") and PASSWORD not in err
    assert "sqlite" in err or ":***@" in err
    assert main(["history"]) == 1  # the upgraded, empty database of the environment
    err = capsys.readouterr().err
    assert "holds no audits yet" in err and err.count("\n") == 1 and PASSWORD not in err
