"""Task runners of the weekly audit: threads in the flow's process (default) or a Dask cluster.

The method tasks of a drop are submitted together and run concurrently on the runner; everything
else runs in the flow's process. `weekly_audit.with_options(task_runner=task_runner(...))` picks one
(the CLI's ``--task-runner`` and ``--dask-address``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any, TypeAlias, cast

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from audit.types import AuditError
from flows.settings import RUNNER_KINDS

#: A task runner as `@flow` and `Flow.with_options` take it. Prefect's `TaskRunner` is invariant in
#: its future type, so runners of narrower futures (threads: `PrefectConcurrentFuture`) are cast.
FlowTaskRunner: TypeAlias = TaskRunner[PrefectFuture[Any]]

#: Threads running method tasks at once with the default runner. Measured with bench/threads.py on
#: the 2-core CI machine (every method of one drop; median of 3 rounds; the machine was shared, load
#: average 7-11): an MLP on 20000 rows took 7.7 s one method after another, 5.6 s on 2 threads, 4.0 s
#: on 4; a Conv1D+LSTM on (5000, 24, 8) 34.7 s, 38.6 s (rounds from 21 to 53 s) and 17.6 s. Threads
#: were never clearly slower (TensorFlow releases the GIL in its kernels; the methods' Python
#: overhead and small kernels leave cores idle). On a loaded machine part of the gain is CPU taken
#: from other processes; 4 keeps the memory of concurrent methods small (each chunks its input under
#: `audit.forward`'s budget).
DEFAULT_MAX_WORKERS = 4
#: Environment variable read when ``--dask-address`` is not given.
DASK_ADDRESS_ENV = "DRIFT_AUDIT_DASK_ADDRESS"
#: The local Dask cluster started when no address is given: 2 single-threaded worker processes (the
#: CI machine's 2 cores; TensorFlow's own kernels use several threads each), so the methods run in
#: separate processes and each model is loaded once per worker. Its dashboard
#: listens on a free port (logged at start), so runs side by side do not collide.
LOCAL_CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}


def default_task_runner() -> FlowTaskRunner:
    """Method tasks on `DEFAULT_MAX_WORKERS` threads of the flow's process."""
    return cast(FlowTaskRunner, ThreadPoolTaskRunner(max_workers=DEFAULT_MAX_WORKERS))


def task_runner(kind: str, dask_address: str | None = None) -> FlowTaskRunner:
    """The task runner named `kind`: ``default`` (threads) or ``dask``.

    With ``dask``, tasks go to the scheduler at `dask_address` (or ``$DRIFT_AUDIT_DASK_ADDRESS``),
    e.g. ``tcp://scheduler:8786``; without one, to a `LOCAL_CLUSTER` started for the run.
    """
    if kind == "default":
        if dask_address:
            raise AuditError(f"--dask-address {dask_address} needs --task-runner dask")
        return default_task_runner()
    if kind != "dask":
        raise AuditError(f"unknown task runner {kind!r}; use one of {', '.join(RUNNER_KINDS)}")
    from prefect_dask.task_runners import DaskTaskRunner

    address = dask_address or os.environ.get(DASK_ADDRESS_ENV) or None
    runner = (
        DaskTaskRunner(address=address)
        if address is not None
        else DaskTaskRunner(cluster_kwargs=dict(LOCAL_CLUSTER))
    )
    return cast(FlowTaskRunner, runner)


@contextlib.contextmanager
def shared_api(kind: str, dask_address: str | None = None) -> Iterator[str | None]:
    """With a local Dask cluster and no Prefect server configured, the one temporary server that
    the flow and every worker report to; yields its API URL (None: nothing to share).

    Without a ``PREFECT_API_URL``, Prefect starts a temporary server in the flow's process, and each
    Dask worker process, finding no URL in the settings the task carries, would start its own: the
    workers' task runs would be missing from the flow run's history and each worker would spend
    seconds starting a server. Here the temporary server is started first and its URL set as the
    run's ``PREFECT_API_URL`` (Prefect's settings, which `prefect_dask` sends along with each task,
    and the environment the worker processes inherit), and stopped after the run.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, temporary_settings

    local_dask = kind == "dask" and not (dask_address or os.environ.get(DASK_ADDRESS_ENV))
    if not local_dask or PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield None
        return
    from prefect.server.api.server import SubprocessASGIServer

    # A port of its own: SubprocessASGIServer() without one is Prefect's process-wide default server,
    # which may already serve (and, stopped here, would be taken from) whoever else uses it.
    server = SubprocessASGIServer(port=_free_port())
    server.start()
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        server.stop()


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
