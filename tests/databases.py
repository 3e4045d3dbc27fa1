"""Test databases: a SQLite file, or a private schema on the PostgreSQL server when one answers."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_base_url() -> str:
    return os.environ.get("DRIFT_AUDIT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_reachable(url: str) -> str | None:
    """None when the server answers, else why not (the skip reason)."""
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as error:
        return f"no PostgreSQL at {url} ({type(error).__name__}); set DRIFT_AUDIT_TEST_PG_URL to run these"
    return None


@contextlib.contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """A new empty database URL: a SQLite file in `folder`, or a private schema on the PostgreSQL
    server (dropped afterwards), so tests and concurrent runs never collide."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'audit.db'}"
        return
    base = postgres_base_url()
    reason = _postgres_reachable(base)
    if reason is not None:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
