"""Test-wide setup: keep every library's files out of $HOME, and share small fixtures.

Keras, Prefect and matplotlib write into $HOME on import, so the environment is pointed at a
temporary directory before any of them is imported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_STATE_DIR = Path(tempfile.mkdtemp(prefix="drift-audit-tests-"))
os.environ.setdefault("KERAS_HOME", str(_STATE_DIR / "keras"))
os.environ.setdefault("MPLCONFIGDIR", str(_STATE_DIR / "matplotlib"))
os.environ["PREFECT_HOME"] = str(_STATE_DIR / "prefect")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# No flow run may start Prefect's own temporary server (about 15 s each time): flow runs go to the
# shared `prefect_harness` below, and a test that forgets it fails at once with "No Prefect API URL".
os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# A developer's shell may hold real mail or Dask settings: the tests never send mail or reach a
# cluster unless a test sets these itself.
for _name in [name for name in os.environ if name.startswith(("DRIFT_AUDIT_EMAIL", "DRIFT_AUDIT_SMTP"))]:
    del os.environ[_name]
os.environ.pop("DRIFT_AUDIT_DASK_ADDRESS", None)

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.databases import BACKENDS, fresh_database  # noqa: E402
from tests.servers import (  # noqa: E402
    SHARED_SERVER_GROUPS,
    PrefectServer,
    prefect_cli_server,
    running_prefect_harness,
)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database per test, on each backend."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


#: Seconds a shared server may take to answer: it starts beside heavy work (TensorFlow training in
#: this worker or the other one on 2 cores), so well above its quiet-machine 15 s.
SERVER_STARTUP_TIMEOUT = 300


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    """The Prefect test server for every flow run of the test run (`running_prefect_harness`),
    started by the first test that asks for it; with pytest-xdist one per worker.

    The server holds the runs, artifacts, logs and blocks of every earlier test: a test that reads
    them back filters by its own flow run ids or names, never counts on an empty server."""
    with running_prefect_harness(startup_timeout=SERVER_STARTUP_TIMEOUT) as api_url:
        yield api_url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """moto's S3 server on 127.0.0.1 with IAM authentication on (tests/source_servers.py), one per session,
    started when a test first asks for it."""
    from tests.source_servers import s3_server as start

    with start() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """``mlflow server`` (SQLite backend, local artifact root) on 127.0.0.1, one per session, started
    when a test first asks for it (it takes 20 s to over a minute to migrate its database)."""
    from tests.source_servers import mlflow_server as start

    with start(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """`prefect server start` in a subprocess, as a user runs it (its own PREFECT_HOME, a free
    loopback port, the scheduler off), for tests that drive Prefect through its command line:
    deployments, work pools, workers. Shared by the test run: each test uses its own work pool
    and deployment names."""
    folder = tmp_path_factory.mktemp("prefect-server")
    with prefect_cli_server(folder, timeout=SERVER_STARTUP_TIMEOUT) as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The server-sharing files first, then test files with a `slow` test, then the rest; each
    file's tests kept together and in order.

    `make test` hands whole files (`--dist loadfile`; a `SHARED_SERVER_GROUPS` group as one unit,
    `pytest_xdist_make_scheduler`) to two worker processes in this order: the long ones start at
    once and the short ones fill in at the end, instead of one worker finishing alone on the drift
    benchmark while the other idles.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    # stable: the order within a file holds
    items.sort(key=lambda item: (item.path.name not in SHARED_SERVER_GROUPS, item.path not in slow_files))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadfile` with the files of a `SHARED_SERVER_GROUPS` group as one work unit.

    (pytest-xdist's own `--dist loadgroup` cannot do it here: it renames node ids through an
    attribute pytest 9.2 no longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedServerScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_SERVER_GROUPS.get(Path(path).name, path)

    return SharedServerScheduling(config, log)
