"""The test run's own set-up: the files grouped around a shared server exist and use that server."""

from __future__ import annotations

from pathlib import Path

from tests.servers import SHARED_SERVER_GROUPS

TESTS = Path(__file__).parent


def test_every_grouped_file_exists_and_asks_for_a_shared_server() -> None:
    """A renamed file would silently leave its group and start a server of its own again."""
    for name in SHARED_SERVER_GROUPS:
        source = (TESTS / name).read_text(encoding="utf-8")
        assert "mlflow_server" in source or "s3_server" in source, name
