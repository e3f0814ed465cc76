"""Alembic environment: runs with the connection aibill hands it, or a URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import text

from aibill.store.engine import make_engine
from aibill.store.schema import metadata

config = context.config


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        url = os.environ.get("AIBILL_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("set sqlalchemy.url or AIBILL_DATABASE_URL")
        engine = make_engine(url)
        with engine.connect() as conn:
            _migrate(conn)
        engine.dispose()
    else:
        _migrate(connection)


def _migrate(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # type: ignore[attr-defined]
            # Several processes may start at once; one migrates, the others wait.
            connection.execute(text("SELECT pg_advisory_xact_lock(7231000001)"))  # type: ignore[attr-defined]
        context.run_migrations()


run_online()
