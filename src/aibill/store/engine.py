"""Engines for SQLite and PostgreSQL, set up for durability and for races.

SQLite: WAL journal, ``synchronous=FULL`` by default (a committed transaction
survives power loss), foreign keys on, a busy timeout, and every write
transaction opened with ``BEGIN IMMEDIATE`` so two writers never both read and
then fight to upgrade their lock (which SQLite would answer with an error,
not a wait).

PostgreSQL: psycopg 3, READ COMMITTED; the ledger's updates are conditional
single-row UPDATEs, which PostgreSQL re-checks after waiting for a row lock, so
two holds can never both see the same available balance.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from aibill.domain.errors import InvalidRequest
from aibill.store import fast

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
SQLITE_BUSY_TIMEOUT_MS = 30_000
_BEGIN_IMMEDIATE = fast.Statement("BEGIN IMMEDIATE")
_BEGIN_DEFERRED = fast.Statement("BEGIN DEFERRED")


def make_engine(url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 5) -> Engine:
    """Create the engine for ``url`` with aibill's settings."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InvalidRequest(f"Not a database URL: {url!r}.", field="url") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, sqlite_synchronous.upper(), pool_size)
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        # No pre-ping (a round trip per transaction): a connection found dead is
        # invalidated and the unit of work retried on a fresh one (store.tx).
        return create_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size * 2, pool_recycle=3600
        )
    raise InvalidRequest(
        f"aibill stores its ledger in SQLite or PostgreSQL, not {backend!r}.", field="url"
    )


def _sqlite_engine(url: str, synchronous: str, pool_size: int) -> Engine:
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise InvalidRequest(
            f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}.",
            field="sqlite_synchronous",
        )
    parsed = make_url(url)
    memory = parsed.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        # One shared connection: every thread must see the same in-memory database.
        from sqlalchemy.pool import StaticPool

        kwargs["poolclass"] = StaticPool
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size * 3
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not memory:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # On the driver's cursor (store.fast): this runs once per transaction.
        if conn.get_execution_options().get("aibill_read_only"):
            _BEGIN_DEFERRED.run(conn, {})
        else:
            _BEGIN_IMMEDIATE.run(conn, {})

    return engine
