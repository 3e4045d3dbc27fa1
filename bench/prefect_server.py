"""What Prefect's own machinery costs per flow run under the test harness (issue 19): the server's
CPU with its task-run recorder on and off, and the flow runs' wall time with and without Prefect's
flow-run heartbeat thread (which each run waits for at its end).

Three small audits (`tests.helpers.small_registry`, 3 weekly drops each, every method) per setting,
against `prefect_test_harness` as the test suite uses it. The server's CPU is read from its
process (/proc/<pid>/stat) before and after the runs.

    .venv/bin/python bench/prefect_server.py [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _common  # sets TF's log level and Keras' home before TF is imported

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="bench-prefect-home-")
sys.path.insert(0, str(_common.REPO))

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3), dt.date(2014, 11, 10)]


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(runs: int, *, record_task_runs: bool, heartbeats: bool) -> dict[str, object]:
    """Wall time, this process's CPU and the server's CPU of `runs` audits under one setting."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.weekly_audit import weekly_audit
    from tests.helpers import small_registry

    recorder = {"server.services.task_run_recorder.enabled": record_task_runs}
    heartbeat = {} if heartbeats else {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    with (
        temporary_settings(updates=recorder),
        prefect_test_harness(server_startup_timeout=300),
        temporary_settings(updates=heartbeat),
    ):
        server = SubprocessASGIServer._instances[None].server_process
        assert server is not None
        time.sleep(5)  # let the server finish starting up
        server_before, own_before, wall_before = _process_cpu(server.pid), time.process_time(), time.time()
        for _ in range(runs):
            root = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
            registry = str(small_registry(root, WEEKS))
            weekly_audit(registry=registry, db_url=f"sqlite:///{root}/a.db", out_dir=str(root / "out"))
        return {
            "record_task_runs": record_task_runs,
            "heartbeats": heartbeats,
            "runs": runs,
            "wall_s": round(time.time() - wall_before, 1),
            "flow_process_cpu_s": round(time.process_time() - own_before, 1),
            "server_cpu_s": round(_process_cpu(server.pid) - server_before, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = [(True, True), (False, True), (False, False)]
    results = [measure(args.runs, record_task_runs=r, heartbeats=h) for r, h in settings]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
