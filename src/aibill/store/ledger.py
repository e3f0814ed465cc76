"""The money path's statements: accounts, holds, entries and idempotency records.

Every statement here runs on the driver's cursor (:mod:`aibill.store.fast`),
inside the unit of work the service opened, and is built once, at import. A
reservation or a debit is one *conditional* UPDATE of the account
(:func:`take`): SQLite runs one writer at a time (``BEGIN IMMEDIATE``) and
PostgreSQL re-checks the condition after waiting for the row lock, so two holds
can never both spend the same money, in threads or in processes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Connection, Table, select, tuple_

from aibill.domain import rules
from aibill.store import fast, overlay
from aibill.store.schema import accounts, entries, holds, idempotency_keys, memberships
from aibill.store.schema import mandates as mandates_table
from aibill.store.types import UTCDateTime

COUNTERS_SQL = "credits_posted, debits_posted, debits_pending, overdraft_limit"
_COUNTER_COLUMNS = [accounts.c[name] for name in COUNTERS_SQL.split(", ")]
_HOLD_TIMES = ("created_at", "expires_at", "resolved_at")
_HOLD_JSON = ("metadata", "estimate")


def _mandate_query(with_user: bool, with_key: bool) -> fast.Statement:
    cols = ["m.billing_model", "m.currency"]
    joins = []
    if with_user:
        cols.append("mb.user_id AS member")
        joins.append(
            "LEFT JOIN memberships mb ON mb.mandate_id = m.mandate_id AND mb.user_id = :user"
        )
    if with_key:
        cols += ["k.operation", "k.request", "k.outcome", "k.result"]
        joins.append(
            "LEFT JOIN idempotency_keys k"
            " ON k.mandate_id = m.mandate_id AND k.idempotency_key = :key"
        )
    return fast.Statement(
        f"SELECT {', '.join(cols)} FROM mandates m {' '.join(joins)} WHERE m.mandate_id = :mandate",
        json_columns=("request", "result"),
    )


def _take_statement(pending: bool, enforce: bool) -> fast.Statement:
    column = "debits_pending" if pending else "debits_posted"
    # rules.available over the row (rule 2): the check and the write are one step.
    condition = f" AND {rules.AVAILABLE_SQL} >= :micros" if enforce else ""
    return fast.Statement(
        f"UPDATE accounts SET {column} = {column} + :micros"
        f" WHERE mandate_id = :mandate AND account_id = :account{condition}"
        f" RETURNING {COUNTERS_SQL}"
    )


def _insert_statement(table: Table) -> fast.Statement:
    """INSERT of every column; times and JSON converted as their column types say."""
    names = [c.name for c in table.columns]
    return fast.Statement(
        f"INSERT INTO {table.name} ({', '.join(names)})"
        f" VALUES ({', '.join(':' + n for n in names)})",
        times=[c.name for c in table.columns if isinstance(c.type, UTCDateTime)],
        json_columns=[c.name for c in table.columns if isinstance(c.type, JSON)],
    )


def _spent_statements(column: str) -> tuple[fast.Statement, fast.Statement]:
    posted = fast.Statement(
        "SELECT COALESCE(SUM(amount_micros), 0) AS total FROM entries"
        f" WHERE mandate_id = :mandate AND {column} = :subject AND kind = 'debit'"
        " AND posted_at >= :start AND posted_at < :end",
        times=("start", "end"),
    )
    held = fast.Statement(
        "SELECT COALESCE(SUM(amount_micros), 0) AS total FROM holds"
        f" WHERE mandate_id = :mandate AND status = 'pending' AND {column} = :subject"
        " AND expires_at > :now",
        times=("now",),
    )
    return posted, held


_MANDATE = {(u, k): _mandate_query(u, k) for u in (False, True) for k in (False, True)}
_TAKE = {(p, f): _take_statement(p, f) for p in (False, True) for f in (False, True)}
_INSERT_HOLD = _insert_statement(holds)
_INSERT_ENTRY = _insert_statement(entries)
_INSERT_OUTCOME = _insert_statement(idempotency_keys)
_POST_CAPTURE = fast.Statement(
    "UPDATE accounts SET debits_posted = debits_posted + :micros,"
    " debits_pending = debits_pending - :freed"
    f" WHERE mandate_id = :mandate AND account_id = :account RETURNING {COUNTERS_SQL}"
)
_FREE_PENDING = fast.Statement(
    "UPDATE accounts SET debits_pending = debits_pending - :micros"
    " WHERE mandate_id = :mandate AND account_id = :account"
)
_CREDIT = fast.Statement(
    "UPDATE accounts SET credits_posted = credits_posted + :micros"
    " WHERE mandate_id = :mandate AND account_id = :account"
    " RETURNING credits_posted, debits_posted"
)
_COUNTERS_SQL = (
    f"SELECT {COUNTERS_SQL} FROM accounts WHERE mandate_id = :mandate AND account_id = :account"
)
_READ_COUNTERS = fast.Statement(_COUNTERS_SQL)
_LOCK_COUNTERS = fast.Statement(_COUNTERS_SQL + " FOR UPDATE")
_HAS_LIMITS = fast.Statement(
    "SELECT 1 AS found FROM spending_limits WHERE mandate_id = :mandate LIMIT 1"
)
_MARK_CAPTURED = fast.Statement(
    "UPDATE holds SET status = 'captured', resolved_at = :now, captured_micros = :micros,"
    " entry_id = :entry WHERE mandate_id = :mandate AND hold_id = :hold",
    times=("now",),
)
_END_HOLD = fast.Statement(
    "UPDATE holds SET status = :status, resolved_at = :now"
    " WHERE mandate_id = :mandate AND hold_id = :hold",
    times=("now",),
)
_EXPIRE_OVERDUE = fast.Statement(
    "UPDATE holds SET status = 'expired', resolved_at = :now"
    " WHERE mandate_id = :mandate AND account_id = :account AND status = 'pending'"
    " AND expires_at <= :now RETURNING amount_micros",
    times=("now",),
)
_OVERDUE_TOTAL = fast.Statement(
    "SELECT COALESCE(SUM(amount_micros), 0) AS total FROM holds"
    " WHERE mandate_id = :mandate AND account_id = :account AND status = 'pending'"
    " AND expires_at <= :now",
    times=("now",),
)
_HOLD_SQL = (
    f"SELECT {', '.join(c.name for c in holds.columns)} FROM holds"
    " WHERE mandate_id = :mandate AND hold_id = :hold"
)
_READ_HOLD = fast.Statement(_HOLD_SQL, times=_HOLD_TIMES, json_columns=_HOLD_JSON)
_LOCK_HOLD = fast.Statement(_HOLD_SQL + " FOR UPDATE", times=_HOLD_TIMES, json_columns=_HOLD_JSON)
_LIMITS_SQL = (
    "SELECT scope, subject, period, amount_micros, spent_since, spent_micros"
    " FROM spending_limits"
    " WHERE mandate_id = :mandate AND ((scope = 'user' AND subject = :user)"
    " OR (scope = 'feature_instance' AND subject = :feature_instance))"
    " ORDER BY scope, subject, period"
)
_LIMITS = fast.Statement(_LIMITS_SQL, times=("spent_since",))
_LIMITS_FOR_UPDATE = fast.Statement(_LIMITS_SQL + " FOR UPDATE", times=("spent_since",))
_SPENT = {
    "user": _spent_statements("user_id"),
    "feature_instance": _spent_statements("feature_instance"),
}


def mandate(conn: Connection, mandate: str, user: str | None, key: str | None) -> Any:
    """The mandate's billing model and currency, with the user's membership
    (``member``) and the idempotency record of ``key`` when asked, in one query;
    None when there is no such mandate."""
    stmt = _MANDATE[(user is not None, key is not None)]
    params = {"mandate": mandate, "user": user, "key": key}
    ov = overlay.of(conn)
    if ov is None:
        return stmt.first(conn, params)
    return ov.mandate(mandate, user, key, lambda: stmt.first(conn, params))


def take(
    conn: Connection, mandate: str, account: str, micros: int, *, pending: bool, enforce: bool
) -> Any:
    """Add ``micros`` to the account's pending (a hold) or posted debits; with
    ``enforce`` only if the available balance covers it. The counters after the
    change, or None when refused."""
    ov = overlay.of(conn)
    if ov is None:
        params = {"mandate": mandate, "account": account, "micros": micros}
        return _TAKE[(pending, enforce)].first(conn, params)
    found = _group_counters(conn, ov, mandate, account)
    if found is None:
        return None
    return ov.take((mandate, account), found, micros, pending=pending, enforce=enforce)


def add_credit(conn: Connection, mandate: str, account: str, micros: int) -> Any:
    """Add ``micros`` to the account's credits; its posted counters after."""
    ov = overlay.of(conn)
    if ov is None:
        return _CREDIT.one(conn, {"mandate": mandate, "account": account, "micros": micros})
    return _group_change(conn, ov, mandate, account, (micros, 0, 0))


def post_capture(conn: Connection, mandate: str, account: str, debit: int, freed: int) -> Any:
    """Post a capture's debit and free its reservation; the counters after."""
    ov = overlay.of(conn)
    if ov is None:
        params = {"mandate": mandate, "account": account, "micros": debit, "freed": freed}
        return _POST_CAPTURE.one(conn, params)
    return _group_change(conn, ov, mandate, account, (0, debit, -freed))


def counters(conn: Connection, mandate: str, account: str) -> Any:
    """The account's counters, or None when there is no such account."""
    ov = overlay.of(conn)
    known = None if ov is None else ov.known_counters((mandate, account))
    if known is not None:
        return known
    return _READ_COUNTERS.first(conn, {"mandate": mandate, "account": account})


def lock_counters(conn: Connection, mandate: str, account: str, *, lock: bool) -> Any:
    """The account's counters, locked for the transaction with ``lock``
    (PostgreSQL; SQLite's single writer already is); None when there is no
    such account."""
    stmt = _LOCK_COUNTERS if lock else _READ_COUNTERS
    return stmt.first(conn, {"mandate": mandate, "account": account})


def has_limits(conn: Connection, mandate: str) -> bool:
    """Whether the mandate has any spending limit."""
    return _HAS_LIMITS.first(conn, {"mandate": mandate}) is not None


def members_among(conn: Connection, mandate: str, users: Collection[str]) -> set[str]:
    """Which of ``users`` are members of the mandate, in one query."""
    if not users:
        return set()
    query = select(memberships.c.user_id).where(
        memberships.c.mandate_id == mandate, memberships.c.user_id.in_(sorted(users))
    )
    return set(conn.scalars(query))


def outcomes_of(conn: Connection, mandate: str, keys: Collection[str]) -> dict[str, Any]:
    """The stored first outcomes of those of ``keys`` the mandate has used, by
    key, in one query: each ``(operation, request, outcome, result)``."""
    if not keys:
        return {}
    k = idempotency_keys.c
    query = select(k.idempotency_key, k.operation, k.request, k.outcome, k.result).where(
        k.mandate_id == mandate, k.idempotency_key.in_(sorted(keys))
    )
    return {
        r.idempotency_key: (r.operation, r.request, r.outcome, r.result)
        for r in conn.execute(query)
    }


def hold_row(conn: Connection, mandate: str, hold_id: str, *, lock: bool) -> Any:
    """The hold's row, locked for the transaction with ``lock`` (PostgreSQL;
    SQLite's single writer already is); None when there is no such hold."""
    stmt = _LOCK_HOLD if lock else _READ_HOLD
    params = {"mandate": mandate, "hold": hold_id}
    ov = overlay.of(conn)
    if ov is None:
        return stmt.first(conn, params)
    return ov.hold((mandate, hold_id), lambda: stmt.first(conn, params))


def insert_hold(conn: Connection, row: dict[str, Any]) -> None:
    ov = overlay.of(conn)
    if ov is None:
        _INSERT_HOLD.run(conn, row)
    else:
        ov.insert_hold(row)


def insert_entry(conn: Connection, row: dict[str, Any]) -> None:
    ov = overlay.of(conn)
    if ov is None:
        _INSERT_ENTRY.run(conn, row)
    else:
        ov.insert_entry(row)


def insert_outcome(conn: Connection, row: dict[str, Any]) -> None:
    """Remember an idempotent operation's first outcome."""
    ov = overlay.of(conn)
    if ov is None:
        _INSERT_OUTCOME.run(conn, row)
    else:
        ov.insert_outcome(row)


def insert_entries(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """Insert many entries in one driver call."""
    _INSERT_ENTRY.run_many(conn, rows)


def insert_outcomes(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """Remember many first outcomes in one driver call."""
    _INSERT_OUTCOME.run_many(conn, rows)


def mark_captured(
    conn: Connection, mandate: str, hold_id: str, micros: int, entry_id: str, now: datetime
) -> None:
    ov = overlay.of(conn)
    changes = {"status": "captured", "resolved_at": now.astimezone(UTC)}
    changes |= {"captured_micros": micros, "entry_id": entry_id}
    if ov is not None and ov.settle_hold((mandate, hold_id), changes):
        return
    flush(conn)
    params = {"mandate": mandate, "hold": hold_id, "now": now, "micros": micros}
    _MARK_CAPTURED.run(conn, {**params, "entry": entry_id})


def end_hold(
    conn: Connection,
    mandate: str,
    account: str,
    hold_id: str,
    status: str,
    micros: int,
    now: datetime,
) -> None:
    """End a pending hold (released or expired) and free its reservation."""
    ov = overlay.of(conn)
    changes = {"status": status, "resolved_at": now.astimezone(UTC)}
    if ov is not None and ov.settle_hold((mandate, hold_id), changes):
        _group_change(conn, ov, mandate, account, (0, 0, -micros))
        return
    flush(conn)
    _END_HOLD.run(conn, {"mandate": mandate, "hold": hold_id, "status": status, "now": now})
    _FREE_PENDING.run(conn, {"mandate": mandate, "account": account, "micros": micros})
    if ov is not None:
        ov.forget_account((mandate, account))


def expire_overdue(conn: Connection, mandate: str, account: str, now: datetime) -> int:
    """Expire the account's overdue holds, freeing their reservations; returns
    how many micro-units were freed."""
    flush(conn)
    rows = _EXPIRE_OVERDUE.run(conn, {"mandate": mandate, "account": account, "now": now})
    freed = sum(int(r.amount_micros) for r in rows)
    if freed:
        _FREE_PENDING.run(conn, {"mandate": mandate, "account": account, "micros": freed})
    ov = overlay.of(conn)
    if rows and ov is not None:
        ov.forget_account((mandate, account))
    return freed


def overdue_micros(conn: Connection, mandate: str, account: str, now: datetime) -> int:
    """What the account's holds past their time still reserve."""
    flush(conn)
    row = _OVERDUE_TOTAL.one(conn, {"mandate": mandate, "account": account, "now": now})
    return int(row.total)


def limits_for(
    conn: Connection, mandate: str, user: str | None, feature_instance: str | None, *, lock: bool
) -> list[Any]:
    """The spending limits on ``user`` or ``feature_instance``; locked for the
    transaction with ``lock``, so two holds cannot both squeeze under one.
    Each with what its period has spent so far (``spent_since``,
    ``spent_micros``), counted as debits are inserted."""
    flush(conn)  # a group's debits kept in memory are counted when written
    stmt = _LIMITS_FOR_UPDATE if lock else _LIMITS
    return stmt.run(conn, {"mandate": mandate, "user": user, "feature_instance": feature_instance})


def posted_between(
    conn: Connection, mandate: str, scope: str, subject: str, start: datetime, end: datetime
) -> int:
    """What ``subject``'s debits posted in ``start <= posted_at < end``, summed
    from the entries (a limit's running total is checked against this)."""
    flush(conn)
    params = {"mandate": mandate, "subject": subject, "start": start, "end": end}
    return int(_SPENT[scope][0].one(conn, params).total)


def held(conn: Connection, mandate: str, scope: str, subject: str, now: datetime) -> int:
    """What ``subject``'s open holds reserve, whenever placed (if captured, it
    posts now); a hold past its time no longer does."""
    flush(conn)
    params = {"mandate": mandate, "subject": subject, "now": now}
    return int(_SPENT[scope][1].one(conn, params).total)


# ------------------------------------------------- a group's writes in memory


def flush(conn: Connection) -> None:
    """Write what a group's overlay keeps (:mod:`aibill.store.overlay`), if any:
    before a statement that reads what it keeps."""
    ov = overlay.of(conn)
    if ov is not None:
        ov.flush(conn, _GROUP_INSERTS)


_GROUP_INSERTS = {
    "holds": _INSERT_HOLD,
    "entries": _INSERT_ENTRY,
    "idempotency_keys": _INSERT_OUTCOME,
}


def _group_counters(conn: Connection, ov: overlay.Overlay, mandate: str, account: str) -> Any:
    """The account's counters as the group has them, read (and on PostgreSQL
    locked) the first time."""
    lock = conn.dialect.name == "postgresql"
    return ov.counters((mandate, account), lambda: lock_counters(conn, mandate, account, lock=lock))


def _group_change(
    conn: Connection,
    ov: overlay.Overlay,
    mandate: str,
    account: str,
    delta: tuple[int, int, int],
) -> Any:
    """Add ``(credits, posted, pending)`` to the account in the group; its counters after."""
    found = _group_counters(conn, ov, mandate, account)
    if found is None:
        raise AssertionError(f"no account {account!r} in mandate {mandate!r}")
    ov.change((mandate, account), found, delta)
    return found.row()


def prefetch(conn: Connection, ov: overlay.Overlay, reads: Sequence[overlay.Prefetch]) -> None:
    """Read what a group's units will read first, one query per table for the
    whole group: their mandates and memberships, idempotency records, holds,
    and the accounts they may draw from (holds and accounts locked on
    PostgreSQL, in one order)."""
    mandates = sorted({m for read in reads for m, _ in read.keys + read.holds + read.accounts})
    if not mandates:
        return
    m = mandates_table.c
    ov.know_mandates(
        conn.execute(
            select(m.mandate_id, m.billing_model, m.currency).where(m.mandate_id.in_(mandates))
        )
    )
    members = sorted({pair for read in reads for pair in read.members})
    if members:
        b = memberships.c
        ov.know_members(
            members,
            conn.execute(
                select(b.mandate_id, b.user_id).where(tuple_(b.mandate_id, b.user_id).in_(members))
            ),
        )
    keys = sorted({pair for read in reads for pair in read.keys})
    if keys:
        k = idempotency_keys.c
        query = select(k.mandate_id, k.idempotency_key, k.operation, k.request, k.outcome, k.result)
        ov.know_keys(
            keys, conn.execute(query.where(tuple_(k.mandate_id, k.idempotency_key).in_(keys)))
        )
    lock = conn.dialect.name == "postgresql"
    drawn = {pair for read in reads for pair in read.accounts}
    held = sorted({pair for read in reads for pair in read.holds})
    if held:
        h = holds.c
        query = select(holds).where(tuple_(h.mandate_id, h.hold_id).in_(held))
        query = query.order_by(h.mandate_id, h.hold_id)
        drawn |= ov.know_holds(conn.execute(query.with_for_update() if lock else query))
    if drawn:
        a = accounts.c
        query = select(a.mandate_id, a.account_id, *_COUNTER_COLUMNS).where(
            tuple_(a.mandate_id, a.account_id).in_(sorted(drawn))
        )
        query = query.order_by(a.mandate_id, a.account_id)
        ov.know_accounts(drawn, conn.execute(query.with_for_update() if lock else query))
