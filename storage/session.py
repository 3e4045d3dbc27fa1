"""Engines and schema upgrades. The caller owns sessions: ``with Session(engine) as s, s.begin():``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from audit.types import AuditError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: How long a SQLite writer waits for another one to finish (two audits writing the same file).
SQLITE_BUSY_TIMEOUT_MS = 30000
#: Key of the PostgreSQL advisory lock that serializes schema upgrades (two flows starting at once).
_UPGRADE_LOCK_KEY = 0x6472696674  # "drift"


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for any SQLAlchemy URL; SQLite files get foreign keys, a busy timeout and a parent
    folder. With `create` False a SQLite file that does not exist is an error (readers, e.g.
    ``drift-audit history``, must not create an empty database)."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise AuditError(
            f"database URL {redacted_url(url)!r} is not a SQLAlchemy URL; e.g. sqlite:///audit.db or "
            "postgresql+psycopg://user@host/db"
        ) from error
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(str(parsed.database))
        if not create and not database.is_file():
            raise AuditError(f"no database at {database}; run `drift-audit run` first or pass --db URL")
        database.parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(parsed, pool_pre_ping=True)
    except ArgumentError as error:  # e.g. a dialect or driver that is not installed
        raise AuditError(f"database URL {redacted_url(url)!r}: {error}") from error
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent: an up-to-date database is left alone).

    Concurrent upgrades (two flows starting at once) are serialized: on PostgreSQL by a transaction
    advisory lock, on SQLite by taking the write lock first (``BEGIN IMMEDIATE``); the second one
    then finds the schema current.
    """
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
        elif connection.dialect.name == "sqlite":
            # pysqlite opens transactions lazily, before the first INSERT/UPDATE/DELETE only; open
            # it now, as a writer, so the version check and the DDL happen under one write lock
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def require_current_schema(engine: Engine) -> None:
    """An `AuditError` naming the fix when the database is not at the newest schema revision (a
    command that must not migrate, e.g. ``prune --dry-run``, checks this first)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise AuditError(
            f"database {engine.url.render_as_string(hide_password=True)} is at schema "
            f"revision {current or 'none'}, not {head}; run `drift-audit db upgrade --db URL` first"
        )


def redacted_url(url: str) -> str:
    """`url` with any password replaced by ***, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"
