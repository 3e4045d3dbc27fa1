"""Alembic environment: runs migrations on the connection `storage.session.upgrade_database` passes in,
or on the URL given with ``alembic -x url=...`` / ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from storage.models import Base

target_metadata = Base.metadata
config = context.config


def _run(connection: object) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.begin() as new_connection:
        _run(new_connection)
