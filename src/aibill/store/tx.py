"""Running a unit of work: one transaction, retried a bounded number of times
when the database says "try again" (PostgreSQL serialization failure or
deadlock, SQLite busy, or a unique key that a racing transaction took first,
after which the retry reads what that transaction wrote).

Anything else the driver raises is translated into ``StoreUnavailable`` with
the original attached, so callers only ever see aibill's error tree; its
message is generic and the driver's text (which names hosts and ports) is
logged instead.

On SQLite, the write transactions of one process take turns in arrival
order (:mod:`aibill.store.writers`) instead of polling SQLite's lock.

Waiting is bounded: a connection that cannot be made (the engine's connect
timeout) or a pool that stays full (its pool timeout) is not retried, and a
connection that died under a unit of work is replaced once, so a database that
does not answer costs a caller one connect timeout, not one per attempt.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from aibill.domain.errors import AibillError, StoreUnavailable
from aibill.store.writers import WriterQueue, queue_for

T = TypeVar("T")
log = logging.getLogger("aibill.store")

MAX_ATTEMPTS = 8
MAX_RECONNECTS = 1
BACKOFF_BASE_S = 0.002
BACKOFF_CAP_S = 0.25

_PG_RETRY = {
    "40001",
    "40P01",
    "55P03",
}  # serialization_failure, deadlock_detected, lock_not_available
_PG_UNIQUE = "23505"


class Deferred(Exception):
    """Carries a business refusal out of a transaction that must still commit
    (the refusal is stored under its idempotency key)."""

    def __init__(self, error: AibillError) -> None:
        super().__init__(error.message)
        self.error = error


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def is_retryable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        # The connection died (server restart, network). Nothing of this unit of
        # work is committed unless the commit itself was cut off, and then the
        # retry replays the stored outcome by its idempotency key.
        return True
    state = _sqlstate(exc)
    if state is not None:
        return state in _PG_RETRY or state == _PG_UNIQUE
    if isinstance(exc, IntegrityError):
        return "UNIQUE constraint failed" in str(exc.orig)
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        return "database is locked" in text or "busy" in text
    return False


def _read_options(engine: Engine) -> dict[str, object]:
    """Reads see one snapshot: on PostgreSQL a REPEATABLE READ transaction, so
    a report's several SELECTs (verify, a history page) agree with each other
    while writers commit; SQLite's deferred transaction is already one snapshot."""
    if engine.dialect.name == "postgresql":
        return {"aibill_read_only": True, "isolation_level": "REPEATABLE READ"}
    return {"aibill_read_only": True}


def run(
    engine: Engine, work: Callable[[Connection], T | Deferred], *, read_only: bool = False
) -> T:
    """Run ``work`` in one transaction; commit when it returns.

    ``work`` may return a ``Deferred`` refusal: the transaction commits and the
    refusal is raised afterwards.
    """
    reconnects = 0
    writers = None if read_only else queue_for(engine)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with _turn(writers), _connect(engine) as raw:
                conn = raw.execution_options(**_read_options(engine)) if read_only else raw
                with conn.begin():
                    result = work(conn)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                reconnects += 1
            if is_retryable(exc) and attempt < MAX_ATTEMPTS and reconnects <= MAX_RECONNECTS:
                delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * random.random()
                log.info("retrying transaction (attempt %d): %s", attempt, exc.orig)
                time.sleep(delay)
                continue
            log.warning("the database could not complete a unit of work: %s", exc.orig)
            raise StoreUnavailable() from exc
        if isinstance(result, Deferred):
            raise result.error
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _turn(writers: WriterQueue | None) -> AbstractContextManager[None]:
    """This write's turn among the process's writers of a SQLite database."""
    return nullcontext() if writers is None else writers.turn()


def _connect(engine: Engine) -> Connection:
    """A connection from the pool, or ``StoreUnavailable`` when none can be had
    within the engine's pool and connect timeouts (not retried: each try would
    wait as long again). Only SQLite's "busy" while setting up a new
    connection goes back to the retry loop."""
    try:
        return engine.connect()
    except (DBAPIError, PoolTimeout) as exc:
        if isinstance(exc, DBAPIError) and not exc.connection_invalidated and is_retryable(exc):
            raise
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        log.warning("cannot get a database connection: %s", reason)
        raise StoreUnavailable() from exc
