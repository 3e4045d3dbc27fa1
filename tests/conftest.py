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


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database per test, on each backend."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def prefect_harness(request: pytest.FixtureRequest) -> Iterator[None]:
    """A temporary Prefect server for one test module's flow runs. A module whose server starts
    beside heavy work sets ``PREFECT_STARTUP_TIMEOUT`` (seconds; 120 otherwise)."""
    from prefect.testing.utilities import prefect_test_harness

    timeout = getattr(request.module, "PREFECT_STARTUP_TIMEOUT", 120)
    with prefect_test_harness(server_startup_timeout=timeout):
        yield


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """moto's S3 server on 127.0.0.1 with IAM authentication on (tests/servers.py), one per session,
    started when a test first asks for it."""
    from tests.servers import s3_server as start

    with start() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """``mlflow server`` (SQLite backend, local artifact root) on 127.0.0.1, one per session, started
    when a test first asks for it (it takes 20 s to over a minute to migrate its database)."""
    from tests.servers import mlflow_server as start

    with start(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server
