"""Engines for SQLite and PostgreSQL, set up for durability and for races.

SQLite: WAL journal, ``synchronous=FULL`` by default (a committed transaction
survives power loss), foreign keys on, a busy timeout, and every write
transaction opened with ``BEGIN IMMEDIATE`` so two writers never both read and
then fight to upgrade their lock (which SQLite would answer with an error,
not a wait).

PostgreSQL: psycopg 3, READ COMMITTED; the ledger's updates are conditional
single-row UPDATEs, which PostgreSQL re-checks after waiting for a row lock, so
two holds can never both see the same available balance.

Nothing waits without bound (:class:`StoreTimeouts`): making a connection
(PostgreSQL's ``connect_timeout``), one statement (PostgreSQL's
``statement_timeout``, which also bounds waiting for a lock) and waiting for
a free connection in the pool (both backends).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from aibill.domain.errors import InvalidRequest
from aibill.store import fast

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
SQLITE_BUSY_TIMEOUT_MS = 30_000
_BEGIN_IMMEDIATE = fast.Statement("BEGIN IMMEDIATE")
_BEGIN_DEFERRED = fast.Statement("BEGIN DEFERRED")


PG_MIN_CONNECT_TIMEOUT_S = 2  # libpq's floor: smaller values are taken as 2


@dataclass(frozen=True, slots=True)
class StoreTimeouts:
    """How long the store waits, in seconds, before giving up with
    ``StoreUnavailable``: for a new connection (PostgreSQL; at least 2 s, as
    libpq counts), for one statement (PostgreSQL), and for a free connection
    in the pool (both)."""

    connect_s: float = 5.0
    statement_s: float = 30.0
    pool_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "statement_s", "pool_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value <= 3600):
                raise InvalidRequest(
                    f"The {name} timeout must be more than 0 and at most 3600 seconds.",
                    field=name,
                )

    def postgres_connect_args(self, options: str | None) -> dict[str, Any]:
        """psycopg's connection arguments: the connect timeout (whole seconds)
        and the statement timeout, after any ``options`` the URL gives."""
        connect_s = max(PG_MIN_CONNECT_TIMEOUT_S, math.ceil(self.connect_s))
        statement = f"-c statement_timeout={max(1, round(self.statement_s * 1000))}"
        return {
            "connect_timeout": connect_s,
            "options": f"{options} {statement}" if options else statement,
        }


DEFAULT_TIMEOUTS = StoreTimeouts()


def make_engine(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 5,
    timeouts: StoreTimeouts = DEFAULT_TIMEOUTS,
) -> Engine:
    """Create the engine for ``url`` with aibill's settings."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InvalidRequest(f"Not a database URL: {url!r}.", field="url") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, sqlite_synchronous.upper(), pool_size, timeouts)
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        options = parsed.query.get("options")
        parsed = parsed.difference_update_query(["options", "connect_timeout"])
        # No pre-ping (a round trip per transaction): a connection found dead is
        # invalidated and the unit of work retried on a fresh one (store.tx).
        return create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_recycle=3600,
            pool_timeout=timeouts.pool_s,
            connect_args=timeouts.postgres_connect_args(
                options if isinstance(options, str) else None
            ),
        )
    raise InvalidRequest(
        f"aibill stores its ledger in SQLite or PostgreSQL, not {backend!r}.", field="url"
    )


def _sqlite_engine(url: str, synchronous: str, pool_size: int, timeouts: StoreTimeouts) -> Engine:
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
        kwargs["pool_timeout"] = timeouts.pool_s
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
