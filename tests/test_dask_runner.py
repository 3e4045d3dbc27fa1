"""The flow on a local Dask cluster (2 worker processes) stores the same figures as the default runner."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from audit.types import AuditError
from flows.cli import main
from flows.runners import DASK_ADDRESS_ENV, LOCAL_CLUSTER, task_runner
from flows.weekly_audit import AuditResult, weekly_audit
from storage.session import make_engine
from tests.helpers import mlp_ignoring, small_registry

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3)]


def test_runner_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DASK_ADDRESS_ENV, raising=False)
    assert isinstance(task_runner("default"), ThreadPoolTaskRunner)
    local = task_runner("dask")
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert {key: local.cluster_kwargs[key] for key in ("n_workers", "threads_per_worker", "processes")} == {
        "n_workers": 2,
        "threads_per_worker": 1,
        "processes": True,
    }
    assert local.cluster_kwargs == LOCAL_CLUSTER
    assert task_runner("dask", "tcp://scheduler:8786").address == "tcp://scheduler:8786"
    monkeypatch.setenv(DASK_ADDRESS_ENV, "tcp://from-env:8786")
    assert task_runner("dask").address == "tcp://from-env:8786"
    assert isinstance(task_runner("default"), ThreadPoolTaskRunner)  # the variable only matters for dask
    with pytest.raises(AuditError, match="needs --task-runner dask"):
        task_runner("default", "tcp://scheduler:8786")


def _figures(db_url: str, query: str) -> tuple[list[tuple[object, ...]], np.ndarray]:
    with make_engine(db_url).connect() as connection:
        rows = [tuple(row) for row in connection.execute(sa.text(query))]
    return [row[:-1] for row in rows], np.array([row[-1] for row in rows], dtype=float)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_local_dask_cluster_gives_the_figures_of_the_default_runner(tmp_path: Path) -> None:
    registry = small_registry(tmp_path, WEEKS)
    mlp_ignoring(4, 3, seed=11).save(registry / WEEKS[1].isoformat() / "model_seed1.keras")
    default_db = f"sqlite:///{tmp_path / 'default.db'}"
    dask_db = f"sqlite:///{tmp_path / 'dask.db'}"

    result = weekly_audit(registry=str(registry), db_url=default_db, out_dir=str(tmp_path / "default"))
    assert isinstance(result, AuditResult) and result.audited_weeks == tuple(WEEKS)
    # Another output folder: nothing comes from the default run's method cache.
    args = ["run", "--registry", str(registry), "--db", dask_db, "--out", str(tmp_path / "dask")]
    assert main([*args, "--task-runner", "dask", "--quiet"]) == 0

    queries = [
        "SELECT week, method, feature, value FROM importance_history ORDER BY 1, 2, 3",
        "SELECT week, method, feature, std FROM importance_history ORDER BY 1, 2, 3",
        "SELECT r.id, m.kind, m.label, m.method, m.feature, m.value FROM model_importances m "
        "JOIN audit_runs r ON r.id = m.run_id ORDER BY 1, 2, 3, 4, 5",
    ]
    for query in queries:
        default_keys, default_values = _figures(default_db, query)
        dask_keys, dask_values = _figures(dask_db, query)
        assert default_keys == dask_keys and len(default_keys) > 0
        np.testing.assert_allclose(dask_values, default_values, rtol=1e-6, equal_nan=True)
    kinds = {key[1] for key in _figures(dask_db, queries[2])[0]}
    assert len(kinds) == 2  # the reseeded copy and the frozen set were both scored on the workers


@pytest.mark.slow
def test_local_dask_workers_get_the_flows_temporary_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PREFECT_API_URL, `shared_api` starts one temporary server and hands its URL to the
    flow's settings (which prefect_dask sends with each task) and to the environment the local
    cluster's worker processes inherit: no worker starts a server of its own (before issue 15 each
    did). An end-to-end `drift-audit run --task-runner dask` with ephemeral Prefect printed "Starting
    temporary server" once (208 s on the shared machine: too slow for the suite)."""
    import os

    from distributed import Client, LocalCluster
    from prefect.context import serialize_context
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    from flows.runners import shared_api

    # Prefect's process-wide default server (the test harness's, when an earlier test started it)
    default = SubprocessASGIServer._instances.get(None)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv(DASK_ADDRESS_ENV, raising=False)
    ephemeral = {
        PREFECT_API_URL: None,
        PREFECT_SERVER_EPHEMERAL_ENABLED: True,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 300,  # beside other work on 2 cores
    }
    with temporary_settings(updates=ephemeral):
        with shared_api("dask", "tcp://remote:8786") as none:
            assert none is None  # a remote cluster: nothing started here
        with shared_api("dask") as url:
            assert url is not None and url.startswith("http://127.0.0.1:")
            assert PREFECT_API_URL.value() == url
            assert serialize_context()["settings_context"]["settings"]["api"]["url"] == url
            with (
                LocalCluster(
                    n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
                ) as cluster,
                Client(cluster) as client,
            ):
                seen = client.run(lambda: os.environ.get("PREFECT_API_URL"))
            assert list(seen.values()) == [url]
        assert "PREFECT_API_URL" not in os.environ and not PREFECT_API_URL.value()
    # the run's server was its own: stopping it left the default one running (it once stopped the
    # harness's, and every later flow test of this worker was refused)
    assert default is None or (default.server_process is not None and default.server_process.poll() is None)
