"""SQLite's writers take turns, in the order they came, within one process.

SQLite runs one writer at a time. Left to itself, a writer that finds the
database locked sleeps and polls (its busy handler), so under load a write
may wait hundreds of milliseconds for a lock that was free long before. Here
every write transaction of a process on one SQLite database first waits for
its turn in a queue, first come first served, and only then begins; the lock
is then almost always free. Writers of other processes still meet SQLite's
busy handler (the server runs one process on SQLite).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from aibill.domain.errors import StoreUnavailable
from aibill.store.engine import SQLITE_BUSY_TIMEOUT_MS

DEFAULT_WAIT_S = SQLITE_BUSY_TIMEOUT_MS / 1000
"""As long as SQLite's own busy handler would wait."""


class WriterQueue:
    """The writers of one database in this process, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    @contextmanager
    def turn(self, wait_s: float = DEFAULT_WAIT_S) -> Iterator[None]:
        """Wait for this writer's turn (at most ``wait_s``, then
        ``StoreUnavailable``), hold it for the block, then pass it on."""
        mine = threading.Event()
        with self._lock:
            if self._held:
                self._waiting.append(mine)
            else:
                self._held = True
                mine.set()
        if not mine.wait(wait_s):
            with self._lock:
                if not mine.is_set():
                    self._waiting.remove(mine)
                    raise StoreUnavailable("The database stayed busy with other writes.")
        try:
            yield
        finally:
            with self._lock:
                if self._waiting:
                    self._waiting.popleft().set()
                else:
                    self._held = False


_queues: dict[str, WriterQueue] = {}
_by_engine: weakref.WeakKeyDictionary[Engine, WriterQueue | None] = weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()


def queue_for(engine: Engine) -> WriterQueue | None:
    """The queue of ``engine``'s SQLite database (shared by every engine on
    the same file in this process); None for PostgreSQL, whose writers lock
    rows, not the database."""
    with _queues_lock:
        if engine in _by_engine:
            return _by_engine[engine]
        queue = None
        if engine.dialect.name == "sqlite":
            database = engine.url.database or ""
            if database in ("", ":memory:") or database.startswith("file:"):
                queue = WriterQueue()  # a database of this engine only
            else:
                queue = _queues.setdefault(os.path.realpath(database), WriterQueue())
        _by_engine[engine] = queue
        return queue
