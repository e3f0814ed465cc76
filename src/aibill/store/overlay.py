"""A group's ledger writes kept in memory until its commit (concepts.md rule 13).

When group commit applies several units of work in one transaction
(:mod:`aibill.store.group`), each unit would otherwise send its statements
one after the other: read the mandate and the key, update the account, insert
the hold or the entry and the idempotency record, each a round trip. With an
:class:`Overlay` on the connection, the money path's statements
(:mod:`aibill.store.ledger`) are answered from memory where they can be:

- an account's counters are read (and on PostgreSQL locked) once, then
  changed in memory; one UPDATE per account writes the sum of the changes;
- a hold read once (and locked) is kept, and a new hold, entry or
  idempotency record is kept, to be inserted with the others in one driver
  call per table (:meth:`Overlay.flush`);
- a mandate, a membership and a key the group has already read or written
  are answered from memory.

Anything else that reads these tables (a spending limit's sums, an
overdue-hold sweep, any SQLAlchemy statement) first flushes what is kept, so
every statement sees exactly the rows a unit at a time would have written.

A unit that raises an aibill error has its changes undone in memory, as a
savepoint would undo them in the database. If its changes already reached
the database (a flush happened inside it), that cannot be undone:
:class:`NeedsSavepoints` is raised, the transaction rolls back, and the
group is applied again with a savepoint per unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import Connection

from aibill.domain import rules
from aibill.store import fast

KEY = "aibill.overlay"
Account = tuple[str, str]

_APPLY = fast.Statement(
    "UPDATE accounts SET credits_posted = credits_posted + :credits,"
    " debits_posted = debits_posted + :posted, debits_pending = debits_pending + :pending"
    " WHERE mandate_id = :mandate AND account_id = :account"
)
_SETTLE_HOLD = fast.Statement(
    "UPDATE holds SET status = :status, resolved_at = :resolved_at,"
    " captured_micros = :captured_micros, entry_id = :entry_id"
    " WHERE mandate_id = :mandate_id AND hold_id = :hold_id",
    times=("resolved_at",),
)
_HOLD_EXTRA = {"resolved_at": None, "captured_micros": None, "entry_id": None}


@dataclass(frozen=True, slots=True)
class Prefetch:
    """What a unit of work will read first: the idempotency keys, the holds and
    the accounts it may draw from (each with its mandate), so that a group
    reads them for all its units at once. A capture's or a release's account
    is its hold's."""

    keys: tuple[tuple[str, str], ...] = ()
    holds: tuple[tuple[str, str], ...] = ()
    accounts: tuple[tuple[str, str], ...] = ()
    members: tuple[tuple[str, str], ...] = ()


class NeedsSavepoints(Exception):
    """A unit failed after its writes reached the database: apply the group
    again, a savepoint per unit."""


class Counters:
    """An account's counters, changed in memory."""

    __slots__ = ("credits_posted", "debits_pending", "debits_posted", "overdraft_limit")

    def __init__(self, row: Any) -> None:
        self.credits_posted = int(row.credits_posted)
        self.debits_posted = int(row.debits_posted)
        self.debits_pending = int(row.debits_pending)
        self.overdraft_limit = int(row.overdraft_limit)

    def row(self) -> fast.Row:
        return fast.Row(
            {
                "credits_posted": self.credits_posted,
                "debits_posted": self.debits_posted,
                "debits_pending": self.debits_pending,
                "overdraft_limit": self.overdraft_limit,
            }
        )


def of(conn: Connection) -> Overlay | None:
    """The overlay of ``conn``'s transaction, if a group put one there."""
    found: Overlay | None = conn.info.get(KEY)
    return found


class Overlay:
    """What one group's units have read and written of the ledger, in memory."""

    def __init__(self) -> None:
        self._counters: dict[Account, Counters | None] = {}
        self._deltas: dict[Account, list[int]] = {}  # credits, posted, pending
        self._holds: dict[tuple[str, str], dict[str, Any]] = {}
        self._new_holds: set[tuple[str, str]] = set()
        self._settled: set[tuple[str, str]] = set()
        self._entries: list[dict[str, Any]] = []
        self._outcomes: dict[tuple[str, str], dict[str, Any]] = {}
        self._stored: dict[tuple[str, str], tuple[Any, ...] | None] = {}
        self._mandates: dict[str, Any] = {}
        self._members: dict[tuple[str, str], bool] = {}
        self._undo: list[Callable[[], None]] = []
        self.flushed_in_unit = False

    # ---------------------------------------------------------------- units

    def begin_unit(self) -> None:
        self._undo.clear()
        self.flushed_in_unit = False

    def undo_unit(self) -> None:
        """Undo the failed unit's changes, newest first."""
        if self.flushed_in_unit:
            raise NeedsSavepoints()
        while self._undo:
            self._undo.pop()()

    @property
    def dirty(self) -> bool:
        return bool(
            self._deltas or self._new_holds or self._settled or self._entries or self._outcomes
        )

    # ------------------------------------------------------- mandate and key

    def mandate(
        self, mandate: str, user: str | None, key: str | None, read: Callable[[], Any]
    ) -> Any:
        """``ledger.mandate``'s row, from memory where the group knows it."""
        stored, key_known = self._key(mandate, key)
        known = mandate in self._mandates and (user is None or (mandate, user) in self._members)
        if not known or not key_known:
            row = read()
            if row is None:
                return None
            self._mandates[mandate] = (row.billing_model, row.currency)
            if user is not None:
                self._members[(mandate, user)] = row.member is not None
            if not key_known:
                return row
        billing_model, currency = self._mandates[mandate]
        out = {"billing_model": billing_model, "currency": currency}
        if user is not None:
            out["member"] = user if self._members[(mandate, user)] else None
        if key is not None:
            names = ("operation", "request", "outcome", "result")
            out |= dict(zip(names, stored or (None,) * 4, strict=True))
        return fast.Row(out)

    def _key(self, mandate: str, key: str | None) -> tuple[tuple[Any, ...] | None, bool]:
        """The first outcome stored under ``key`` as the group knows it, and
        whether it knows (None: no outcome yet)."""
        if key is None:
            return None, True
        ident = (mandate, key)
        kept = self._outcomes.get(ident)
        if kept is not None:
            return _stored(kept), True
        if ident in self._stored:
            return self._stored[ident], True
        return None, False

    def know_mandates(self, rows: Iterable[Any]) -> None:
        """Mandates read for the group (one not among them is read when asked)."""
        for row in rows:
            self._mandates[row.mandate_id] = (row.billing_model, row.currency)

    def know_members(self, asked: Iterable[tuple[str, str]], rows: Iterable[Any]) -> None:
        """Which of the ``asked`` (mandate, user) pairs are memberships."""
        found = {(row.mandate_id, row.user_id) for row in rows}
        for pair in asked:
            self._members[pair] = pair in found

    def know_keys(self, asked: Iterable[tuple[str, str]], rows: Iterable[Any]) -> None:
        """The first outcomes stored under the ``asked`` keys (absent: none yet)."""
        found = {(r.mandate_id, r.idempotency_key): r for r in rows}
        for pair in asked:
            row = found.get(pair)
            self._stored[pair] = None if row is None else _stored(row._mapping)

    def know_holds(self, rows: Iterable[Any]) -> set[Account]:
        """Hold rows read (and locked) for the group; their accounts."""
        accounts = set()
        for row in rows:
            self._holds[(row.mandate_id, row.hold_id)] = dict(row._mapping)
            accounts.add((row.mandate_id, row.account_id))
        return accounts

    def know_accounts(self, asked: Iterable[Account], rows: Iterable[Any]) -> None:
        """Accounts read (and locked) for the group; an asked one not among
        ``rows`` does not exist."""
        found = {(row.mandate_id, row.account_id): row for row in rows}
        for account in asked:
            row = found.get(account)
            self._counters[account] = None if row is None else Counters(row)

    def insert_outcome(self, row: dict[str, Any]) -> None:
        ident = (row["mandate_id"], row["idempotency_key"])
        self._outcomes[ident] = row

        def undo() -> None:
            del self._outcomes[ident]

        self._undo.append(undo)

    # --------------------------------------------------------------- accounts

    def counters(self, account: Account, read: Callable[[], Any]) -> Counters | None:
        if account not in self._counters:
            row = read()
            self._counters[account] = None if row is None else Counters(row)
        return self._counters[account]

    def known_counters(self, account: Account) -> fast.Row | None:
        """The counters as the group has them, or None when not read yet."""
        found = self._counters.get(account)
        return None if found is None else found.row()

    def change(self, account: Account, counters: Counters, delta: tuple[int, int, int]) -> None:
        """Add ``(credits, posted, pending)`` to the account, undoably."""
        credits, posted, pending = delta
        counters.credits_posted += credits
        counters.debits_posted += posted
        counters.debits_pending += pending
        sums = self._deltas.setdefault(account, [0, 0, 0])
        sums[0] += credits
        sums[1] += posted
        sums[2] += pending

        def undo() -> None:
            counters.credits_posted -= credits
            counters.debits_posted -= posted
            counters.debits_pending -= pending
            sums[0] -= credits
            sums[1] -= posted
            sums[2] -= pending

        self._undo.append(undo)

    def take(
        self, account: Account, counters: Counters, micros: int, *, pending: bool, enforce: bool
    ) -> fast.Row | None:
        """``ledger.take`` in memory: the same condition (rule 2), the same answer."""
        if enforce and not rules.fits(rules.account_available(counters), micros):
            return None
        self.change(account, counters, (0, 0, micros) if pending else (0, micros, 0))
        return counters.row()

    def forget_account(self, account: Account) -> None:
        """Read the account (and its holds) again: a statement changed them in the database."""
        self._counters.pop(account, None)
        for ident in [i for i, h in self._holds.items() if (i[0], h["account_id"]) == account]:
            del self._holds[ident]

    # ------------------------------------------------------------------ holds

    def hold(self, ident: tuple[str, str], read: Callable[[], Any]) -> fast.Row | None:
        if ident not in self._holds:
            row = read()
            if row is None:
                return None
            self._holds[ident] = dict(row._mapping)
        return fast.Row(dict(self._holds[ident]))

    def insert_hold(self, row: dict[str, Any]) -> None:
        ident = (row["mandate_id"], row["hold_id"])
        stored = {**row, **_HOLD_EXTRA}
        for name in ("created_at", "expires_at"):
            stored[name] = stored[name].astimezone(UTC)
        self._holds[ident] = stored
        self._new_holds.add(ident)

        def undo() -> None:
            self._holds.pop(ident, None)
            self._new_holds.discard(ident)

        self._undo.append(undo)

    def settle_hold(self, ident: tuple[str, str], changes: dict[str, Any]) -> bool:
        """Change a hold the group has read; False when it has not."""
        held = self._holds.get(ident)
        if held is None:
            return False
        before = {name: held[name] for name in changes}
        was_settled = ident in self._settled
        held.update(changes)
        if ident not in self._new_holds:
            self._settled.add(ident)

        def undo() -> None:
            held.update(before)
            if not was_settled:
                self._settled.discard(ident)

        self._undo.append(undo)
        return True

    # ---------------------------------------------------------------- entries

    def insert_entry(self, row: dict[str, Any]) -> None:
        self._entries.append(row)

        def undo() -> None:
            self._entries.pop()

        self._undo.append(undo)

    # ------------------------------------------------------------------ flush

    def flush(self, conn: Connection, insert: dict[str, fast.Statement]) -> None:
        """Write what is kept: one UPDATE per account changed, then the new
        holds, entries, settled holds and idempotency records, one driver call
        per table. ``insert`` names the INSERT of each table."""
        if not self.dirty:
            return
        self.flushed_in_unit = True
        for (mandate, account), (credits, posted, pending) in sorted(self._deltas.items()):
            if credits or posted or pending:
                params = {"credits": credits, "posted": posted, "pending": pending}
                _APPLY.run(conn, {**params, "mandate": mandate, "account": account})
        insert["holds"].run_many(conn, [self._holds[i] for i in sorted(self._new_holds)])
        insert["entries"].run_many(conn, self._entries)
        settled = [{**self._holds[i], **_ident(i)} for i in sorted(self._settled)]
        _SETTLE_HOLD.run_many(conn, settled)
        insert["idempotency_keys"].run_many(conn, list(self._outcomes.values()))
        for ident, kept in self._outcomes.items():
            self._stored[ident] = _stored(kept)
        self._deltas.clear()
        self._new_holds.clear()
        self._settled.clear()
        self._entries = []
        self._outcomes.clear()


def _stored(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["operation"], row["request"], row["outcome"], row["result"])


def _ident(ident: tuple[str, str]) -> dict[str, str]:
    return {"mandate_id": ident[0], "hold_id": ident[1]}
