"""The README's weekly set-up, done for real: a Prefect server, a process work pool, `prefect deploy`
from prefect.yaml, `prefect deployment run`, and a worker that runs the audit to completion.

Everything runs as the commands a user types, in subprocesses against a private server
(`prefect_server` in tests/conftest.py: its own PREFECT_HOME, a free loopback port, shared by the
test run). The server's scheduler service is off, so the Monday schedule is stored (and checked)
but creates no runs; the server dies with the test run, and with it every run it holds.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from storage.session import make_engine
from tests.helpers import small_registry
from tests.servers import PREFECT, PrefectServer, stop_process_group, tail

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = "weekly-audit/weekly-drift-audit"
POOL = "drift-audit-pool"
WEEKS = [dt.date(2024, 5, 6), dt.date(2024, 5, 13)]
TIMEZONE = "Europe/Berlin"
COMMAND_SECONDS = 120.0
FLOW_RUN_SECONDS = 240.0
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

pytestmark = pytest.mark.slow


def _prefect(server: PrefectServer, *args: str, env: dict[str, str] | None = None) -> str:
    """Run one `prefect` command against the test server from the repository root; its output."""
    result = subprocess.run(
        [PREFECT, "--no-prompt", *args],
        env={**server.env, "PWD": str(ROOT), **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"prefect {' '.join(args)} exited {result.returncode}:\n{output}"
    return output


def _param(name: str, value: object) -> Sequence[str]:
    return ("--param", f"{name}={value if isinstance(value, str) else json.dumps(value)}")


def test_deploy_run_and_work_the_weekly_audit(prefect_server: PrefectServer, tmp_path: Path) -> None:
    server = prefect_server
    registry = small_registry(tmp_path, WEEKS)
    out_dir = tmp_path / "out"
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"

    _prefect(server, "work-pool", "create", POOL, "--type", "process")
    _prefect(
        server,
        "deploy",
        "--name",
        "weekly-drift-audit",
        "--timezone",
        TIMEZONE,
        env={"DRIFT_AUDIT_REGISTRY": str(registry)},
    )

    deployment = httpx.get(f"{server.api_url}/deployments/name/{DEPLOYMENT}", timeout=10).json()
    assert deployment["entrypoint"] == "flows/weekly_audit.py:weekly_audit"
    assert deployment["work_pool_name"] == POOL
    assert deployment["parameters"] == {
        "registry": str(registry),  # the {{ $DRIFT_AUDIT_REGISTRY }} template, filled at deploy time
        "out_dir": "drift-audit-output",
        "db_url": None,
        "db_secret": None,
        "email_to": None,
    }
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]
    (schedule,) = deployment["schedules"]
    assert schedule["active"] is True
    assert schedule["schedule"]["cron"] == "0 6 * * 1"
    assert schedule["schedule"]["timezone"] == TIMEZONE

    output = _prefect(
        server,
        "deployment",
        "run",
        DEPLOYMENT,
        *_param("registry", str(registry)),
        *_param("out_dir", str(out_dir)),
        *_param("methods", ["weight_sum", "permutation"]),
    )
    match = UUID.search(output.split("UUID", 1)[-1])
    assert match is not None, f"no flow run id in:\n{output}"
    flow_run_id = match.group(0)

    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, "--run-once"],
            # the database comes from the worker's environment, as prefect.yaml's comments say
            env={**server.env, "PWD": str(ROOT), "DRIFT_AUDIT_DB_URL": db_url},
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        state = _final_state(server.api_url, flow_run_id, worker)
        worker.wait(timeout=COMMAND_SECONDS)  # --run-once: the worker exits after its flow run
    finally:
        stop_process_group(worker)
    assert state["type"] == "COMPLETED", f"flow run ended {state}:\n{tail(worker_log, 80)}"

    with make_engine(db_url).connect() as connection:
        runs = connection.execute(
            sa.text(
                "SELECT d.week, r.status, r.flow_run_id, COUNT(i.id) AS n_importances FROM audit_runs r "
                "JOIN model_drops d ON d.id = r.drop_id LEFT JOIN importances i ON i.run_id = r.id "
                "GROUP BY d.week, r.status, r.flow_run_id ORDER BY d.week"
            )
        ).all()
    assert [(str(r.week), r.status, r.flow_run_id) for r in runs] == [
        (week.isoformat(), "succeeded", flow_run_id) for week in WEEKS
    ]
    assert all(r.n_importances == 2 * 4 for r in runs)  # two methods x four features
    assert (out_dir / WEEKS[-1].isoformat() / "report.html").is_file()


def _final_state(api_url: str, flow_run_id: str, worker: subprocess.Popen[bytes]) -> dict[str, object]:
    """Poll the flow run until its state is final (the worker runs it); its state."""
    deadline = time.monotonic() + FLOW_RUN_SECONDS
    while time.monotonic() < deadline:
        flow_run = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10).json()
        state: dict[str, object] = flow_run["state"]
        if state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return state
        if worker.poll() is not None and state["type"] == "SCHEDULED":
            pytest.fail(f"the worker exited ({worker.returncode}) without taking flow run {flow_run_id}")
        time.sleep(1)
    pytest.fail(f"flow run {flow_run_id} not final after {FLOW_RUN_SECONDS:.0f} s")
