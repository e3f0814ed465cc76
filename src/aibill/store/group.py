"""Group commit: units of work in flight at once in one process share one
transaction and one commit (concepts.md rule 13).

A caller hands its unit of work to :meth:`GroupCommit.run` and waits. The
first caller finding no batch running leads: it applies every unit queued by
then (itself first, at most ``max_batch``) in one transaction, and commits.
Callers arriving meanwhile queue; when the batch is done, the head of the
queue leads the next one. Nothing waits on a timer, so a lone operation runs
at once, as it would alone.

On PostgreSQL a batch's units run one after the other with the ledger's
writes kept in memory (:mod:`aibill.store.overlay`): each account is read and
locked once, and the batch ends with one UPDATE per account and one multi-row
insert per table, instead of a round trip per statement of each unit. On
SQLite, whose statements run in the process, each unit runs in a savepoint of
its own.

Each unit keeps its own outcome. An aibill error raised by one (a conflict,
an unknown hold, a permission refused) undoes its own changes only; a
refusal it returns as :class:`~aibill.store.tx.Deferred` keeps what it wrote
(its idempotency record). When a failed unit's writes had already reached
the database, the batch is applied again, each unit in a savepoint of its
own (:func:`apply_each`). No outcome is handed back before the commit. When
the database asks to try again (a deadlock, a serialization failure, SQLite
busy, a unique key taken by another process), the whole batch is run again,
as :func:`aibill.store.tx.run` does for one unit; anything else that fails the
transaction fails every unit of the batch with the same error.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, event

from aibill.domain.errors import AibillError, StoreUnavailable
from aibill.store import ledger, overlay, tx

Work = Callable[[Connection], Any]

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_QUEUE = 4096
DEFAULT_MAX_WAIT_S = 30.0


class _Slot:
    """One caller's unit of work, and then its outcome."""

    __slots__ = ("done", "error", "lead", "reads", "result", "work")

    def __init__(self, work: Work, reads: overlay.Prefetch | None) -> None:
        self.work = work
        self.reads = reads
        self.done = threading.Event()
        self.lead = False
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        if isinstance(self.result, tx.Deferred):
            raise self.result.error
        return self.result


class GroupCommit:
    """Applies the units of work of concurrent callers in shared transactions.

    ``max_batch`` bounds a batch, ``max_queue`` the callers waiting (one more
    is refused at once with ``StoreUnavailable``), and ``max_wait_s`` how long a
    caller waits in the queue before it gives up, unapplied, with
    ``StoreUnavailable``. ``in_memory``: keep a batch's writes in memory
    (:func:`apply_in_memory`), else a savepoint per unit (:func:`apply_each`);
    by default on PostgreSQL, where every statement is a round trip, and not
    on SQLite, whose statements run in the process and cost less than keeping
    them.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        in_memory: bool | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s <= 0:
            raise ValueError("max_batch, max_queue and max_wait_s must be positive")
        self._engine = engine
        self.in_memory = engine.dialect.name == "postgresql" if in_memory is None else in_memory
        """Whether a batch keeps its writes in memory (see the class's docstring)."""
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._queue: deque[_Slot] = deque()
        self._busy = False
        self.batches = 0
        """How many transactions have been committed (for tests and metrics)."""
        self.units = 0
        """How many units of work they applied."""
        self.reruns = 0
        """How many batches were applied again with a savepoint per unit."""
        if not event.contains(engine, "before_cursor_execute", _flush_first):
            event.listen(engine, "before_cursor_execute", _flush_first)

    @property
    def waiting(self) -> int:
        """How many units are queued, not yet taken into a batch."""
        with self._lock:
            return sum(1 for slot in self._queue if not slot.lead)

    def run(self, work: Work, reads: overlay.Prefetch | None = None) -> Any:
        """Apply ``work`` (in a batch when others are in flight) and return its
        result once it is committed; raise its error, or its ``Deferred``
        refusal after the commit, as :func:`aibill.store.tx.run` would.
        ``reads``: what it reads first, read for the whole batch at once."""
        slot = _Slot(work, reads)
        with self._lock:
            if len(self._queue) >= self._max_queue:
                raise StoreUnavailable("Too many operations are waiting for the database.")
            self._queue.append(slot)
            if not self._busy:
                self._busy = slot.lead = True
        if not slot.lead:
            self._wait(slot)
        if slot.lead:
            self._lead()
        return slot.outcome()

    def _wait(self, slot: _Slot) -> None:
        """Wait until a batch applied ``slot``, or it is ``slot``'s turn to lead."""
        if slot.done.wait(self._max_wait_s):
            return
        with self._lock:
            if slot in self._queue and not slot.lead:
                self._queue.remove(slot)
                slot.error = StoreUnavailable("The database did not get to this operation in time.")
                return
        slot.done.wait()  # taken into a batch meanwhile: its outcome comes with the commit

    def _lead(self) -> None:
        """Apply the queue's head batch, then hand the lead to the next caller."""
        with self._lock:
            count = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(count)]
        try:
            self._apply(batch)
        except BaseException as exc:  # interrupted: no caller waits for nothing
            for slot in batch:
                slot.error = slot.error or exc
            raise
        finally:
            with self._lock:
                if self._queue:
                    head = self._queue[0]
                    head.lead = True
                    head.done.set()
                else:
                    self._busy = False
            for slot in batch:
                if not slot.lead:
                    slot.done.set()

    def _apply(self, batch: list[_Slot]) -> None:
        if len(batch) == 1:  # alone: exactly as tx.run, no savepoint
            slot = batch[0]
            try:
                slot.result = tx.run(self._engine, slot.work)
            except Exception as exc:  # handed to its caller
                slot.error = exc
            self._count(1)
            return
        works = [s.work for s in batch]
        reads = [s.reads for s in batch if s.reads is not None]
        try:
            if self.in_memory:
                try:
                    outcomes = tx.run(self._engine, lambda c: apply_in_memory(c, works, reads))
                except overlay.NeedsSavepoints:
                    self.reruns += 1
                    outcomes = tx.run(self._engine, lambda conn: apply_each(conn, works))
            else:
                outcomes = tx.run(self._engine, lambda conn: apply_each(conn, works))
        except Exception as exc:  # the transaction failed: every unit fails with it
            for slot in batch:
                slot.error = exc
            return
        for slot, (result, error) in zip(batch, outcomes, strict=True):
            slot.result, slot.error = result, error
        self._count(len(batch))

    def _count(self, units: int) -> None:
        with self._lock:
            self.batches += 1
            self.units += units


def apply_in_memory(
    conn: Connection, works: list[Work], reads: list[overlay.Prefetch] | None = None
) -> list[tuple[Any, AibillError | None]]:
    """Run each unit of work in ``conn``'s transaction with the ledger's
    writes kept in memory (:mod:`aibill.store.overlay`) and written together
    at the end: per unit, its result or its aibill error with its changes
    undone. Raises ``NeedsSavepoints`` when a failed unit's writes had
    already reached the database."""
    ov = overlay.Overlay()
    conn.info[overlay.KEY] = ov
    try:
        ledger.prefetch(conn, ov, reads or [])
        outcomes: list[tuple[Any, AibillError | None]] = []
        for work in works:
            ov.begin_unit()
            try:
                outcomes.append((work(conn), None))
            except AibillError as exc:
                ov.undo_unit()
                outcomes.append((None, exc))
        ledger.flush(conn)
        return outcomes
    finally:
        del conn.info[overlay.KEY]


def _flush_first(conn: Connection, *_: Any) -> None:
    """Before any SQLAlchemy statement in a group's transaction, write what
    its overlay keeps, so that the statement sees it."""
    if overlay.KEY in conn.info:
        ledger.flush(conn)


def apply_each(conn: Connection, works: list[Work]) -> list[tuple[Any, AibillError | None]]:
    """Run each unit of work in ``conn``'s transaction, each in a savepoint of
    its own: per unit, its result (a ``Deferred`` refusal included), or its
    aibill error with its writes undone. Any other error fails them all."""
    return [_in_savepoint(conn, work) for work in works]


def _in_savepoint(conn: Connection, work: Work) -> tuple[Any, AibillError | None]:
    savepoint = conn.begin_nested()
    try:
        result = work(conn)
    except AibillError as exc:
        savepoint.rollback()
        return None, exc
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()
    return result, None
