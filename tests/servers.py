"""Real servers the tests talk to over 127.0.0.1, each started once per test run and shared.

A server costs seconds to start (Prefect's: about 15 s of CPU on 2 cores) and nothing to keep, so
every server is a session-scoped fixture in tests/conftest.py: started lazily by the first test that
asks for it, stopped when the run ends. Under pytest-xdist a session is one worker process, so each
worker starts its own (no locks, no port to agree on, and a worker's crash takes only its server).

To add one (an MLflow tracking server, moto's S3 server, a webhook receiver, ...):

- a command-line server: a session fixture in conftest.py that yields from `process_server`, with
  the command, the health path and an environment that keeps the developer's own settings out;
- a library's in-process server (aiosmtpd's `Controller`, moto's `ThreadedMotoServer`): a session
  fixture that starts it on `free_port()` and stops it after the `yield`.

Tests that share a server keep out of each other's way by name, never by emptiness: their own flow
run ids, work pool, bucket, experiment or mailbox, so any test order and any worker count holds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

#: Test files that share a server costly to start go to one worker together: one MLflow server (20 s
#: to over a minute to migrate its database) and one S3 server instead of one per worker.
SHARED_SERVER_GROUPS: dict[str, str] = {
    "test_sources_mlflow.py": "object-stores",
    "test_readme_sources.py": "object-stores",
    "test_sources_s3.py": "object-stores",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ProcessServer:
    """A server process the tests share: its base URL, its port and the file its output goes to."""

    url: str
    port: int
    log: Path


def stop_process_group(process: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    """End `process` and everything it started (its own process group): TERM, then KILL."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):  # the group may outlive its leader (a flow run)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file ('' when it does not exist): for failure messages."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def process_server(
    command: Sequence[str],
    *,
    health_path: str,
    env: Mapping[str, str],
    folder: Path,
    timeout: float,
    url_path: str = "",
) -> Iterator[ProcessServer]:
    """Run `command` (each `{port}` in it replaced by a free loopback port) in its own process
    group, from `folder`, with its output in `folder`/server.log; yield once
    `http://127.0.0.1:{port}{url_path}{health_path}` answers 200; stop the group afterwards.

    A server that exits or does not answer within `timeout` seconds raises `RuntimeError` with the
    end of its log.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}{url_path}"
    log = folder / "server.log"
    folder.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in command],
            env=dict(env),
            cwd=folder,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_healthy(Path(command[0]).name, f"{url}{health_path}", process, log, timeout)
        yield ProcessServer(url, port, log)
    finally:
        stop_process_group(process)


def _wait_until_healthy(
    name: str, health_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}:\n{tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(health_url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{name} did not answer {health_url} in {timeout:.0f} s:\n{tail(log)}")


@dataclass(frozen=True)
class PrefectServer:
    """A `prefect server start` process: its API URL, the environment for `prefect` commands and
    workers that talk to it, and a folder for their logs."""

    api_url: str
    env: Mapping[str, str]
    logs: Path


PREFECT = str(Path(sys.executable).with_name("prefect"))


@contextlib.contextmanager
def prefect_cli_server(folder: Path, *, timeout: float) -> Iterator[PrefectServer]:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME in `folder`."""
    # The user's own Prefect and drift-audit settings (a server, email recipients) stay out.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRIFT_AUDIT_"))}
    env.update(
        PREFECT_HOME=str(folder / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        # A deployment's schedule is stored but must not create runs a worker could take.
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        DO_NOT_TRACK="1",
        # Background loops no test uses: less CPU for the flow runs on a small machine.
        PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED="false",
        PREFECT_SERVER_SERVICES_FOREMAN_ENABLED="false",
        PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED="false",
        PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED="false",
        PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_ENABLED="false",
    )
    command = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", "{port}"]
    with process_server(
        command, health_path="/health", url_path="/api", env=env, folder=folder, timeout=timeout
    ) as server:
        logs = folder / "logs"
        logs.mkdir(exist_ok=True)
        yield PrefectServer(server.url, {**env, "PREFECT_API_URL": server.url}, logs)


#: The Prefect server's setting that turns its task-run recorder on or off.
TASK_RUN_RECORDER = "server.services.task_run_recorder.enabled"
#: Seconds to wait for Prefect's events worker to send what it holds when a harness starts or stops.
EVENTS_DRAIN_SECONDS = 30


@contextlib.contextmanager
def running_prefect_harness(*, startup_timeout: int, record_task_runs: bool = False) -> Iterator[str]:
    """Prefect's test server (its own temporary SQLite database) for flow runs in this process;
    yields its API URL, for a subprocess that must reach it (set PREFECT_API_URL in its environment).

    `record_task_runs`: the server's task-run recorder writes every task run and state into its
    database. It is more than half of the server's CPU (4.9 of 7.7 s over three small audits,
    bench/prefect_server.py) and
    only tests/test_db_secrets.py reads task runs back, so the shared harness runs without it.
    No flow-run heartbeats either (Prefect's crash detection, 180 s apart): their thread sleeps in
    1 s steps and each flow run waits for it at its end, 0.5 s on average. Flows run by a
    subprocess keep their heartbeats."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with contextlib.ExitStack() as stack:
        # the harness hands its settings to the server subprocess through its environment
        stack.enter_context(temporary_settings(updates={TASK_RUN_RECORDER: record_task_runs}))
        stack.enter_context(prefect_test_harness(server_startup_timeout=startup_timeout))
        stack.enter_context(temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        # Prefect's process-wide events worker keeps the server it first sent to: stop it now and
        # when this server stops (after sending what it holds), so that a harness started inside
        # another one gets this run's task-run events, and the outer one gets them back after.
        EventsWorker.drain_all(timeout=EVENTS_DRAIN_SECONDS)
        stack.callback(EventsWorker.drain_all, timeout=EVENTS_DRAIN_SECONDS)
        yield str(PREFECT_API_URL.value())
