"""Reading the ledger: entries and their pages, holds, overdue holds, and the
sums ``verify`` recomputes the counters from (SQLAlchemy Core)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    Integer,
    Select,
    Table,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.types import Date

from aibill.store.schema import (
    accounts,
    entries,
    holds,
    mandates,
    spending_limits,
    usage_days,
    usage_days_by_instance,
)

_A = accounts.c
_E = entries.c
_H = holds.c
_S = spending_limits.c
_PENDING = "pending"
_MANDATE: BindParameter[str] = bindparam("mandate")
_NOW = bindparam("now", type_=holds.c.expires_at.type)
_OVERDUE = (_H.status == _PENDING, _H.expires_at <= _NOW)

_ENTRY_ROW = select(entries).where(_E.mandate_id == _MANDATE, _E.entry_id == bindparam("entry"))
_ENTRY_EXISTS = select(_E.entry_id).where(
    _E.mandate_id == _MANDATE, _E.entry_id == bindparam("entry")
)
_HOLD_ROW = select(holds).where(_H.mandate_id == _MANDATE, _H.hold_id == bindparam("hold"))
_OPEN_HOLDS = (
    select(holds)
    .where(_H.mandate_id == _MANDATE, _H.status == _PENDING, _H.expires_at > _NOW)
    .order_by(_H.created_at.desc(), _H.hold_id.desc())
    .limit(bindparam("limit", type_=Integer))
)
_ANY_OVERDUE = select(_H.hold_id).where(_H.mandate_id == _MANDATE, *_OVERDUE).limit(1)
_ANY_OVERDUE_OF = (
    select(_H.hold_id)
    .where(_H.mandate_id == _MANDATE, _H.account_id == bindparam("account"), *_OVERDUE)
    .limit(1)
)
_COUNT_OVERDUE = select(func.count()).where(
    _H.mandate_id == _MANDATE, _H.account_id == bindparam("account"), *_OVERDUE
)
_OVERDUE_ACCOUNTS = select(_H.mandate_id, _H.account_id).where(*_OVERDUE).distinct()
_ENTRY_SUMS = select(
    _E.mandate_id, _E.account_id, _E.kind, func.coalesce(func.sum(_E.amount_micros), 0)
).group_by(_E.mandate_id, _E.account_id, _E.kind)
_PENDING_SUMS = (
    select(_H.mandate_id, _H.account_id, func.sum(_H.amount_micros))
    .where(_H.status == _PENDING)
    .group_by(_H.mandate_id, _H.account_id)
)
_COUNTERS = select(
    _A.mandate_id, _A.account_id, _A.credits_posted, _A.debits_posted, _A.debits_pending
)
# The same, for one mandate.
_OVERDUE_ACCOUNTS_OF = _OVERDUE_ACCOUNTS.where(_H.mandate_id == _MANDATE)
_ENTRY_SUMS_OF = _ENTRY_SUMS.where(_E.mandate_id == _MANDATE)
_PENDING_SUMS_OF = _PENDING_SUMS.where(_H.mandate_id == _MANDATE)
_COUNTERS_OF = _COUNTERS.where(_A.mandate_id == _MANDATE)


def entry_row(conn: Connection, mandate: str, entry_id: str) -> Any:
    """The entry's row, or None."""
    return conn.execute(_ENTRY_ROW, {"mandate": mandate, "entry": entry_id}).first()


def entry_exists(conn: Connection, mandate: str, entry_id: str) -> bool:
    found = conn.execute(_ENTRY_EXISTS, {"mandate": mandate, "entry": entry_id}).first()
    return found is not None


def entry_page(
    conn: Connection,
    mandate: str,
    equal: Mapping[str, str | None],
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
    omit: frozenset[str] = frozenset(),
) -> list[Any]:
    """Entries of ``mandate`` whose columns equal the given (non-None) values,
    in ``since <= posted_at < until``, newest first, after the cursor
    ``(posted_at, entry_id)``; one more than ``limit``, to tell whether more
    follow. ``omit``: columns not to read (an export's page leaves out the
    breakdown it does not write)."""
    conds = [_E.mandate_id == mandate]
    conds += [_E[name] == value for name, value in equal.items() if value is not None]
    if since is not None:
        conds.append(_E.posted_at >= since)
    if until is not None:
        conds.append(_E.posted_at < until)
    if after is not None:
        # A row comparison: both databases use it as an index condition,
        # where "a < x OR (a = x AND b < y)" is filtered row by row.
        conds.append(tuple_(_E.posted_at, _E.entry_id) < tuple_(after[0], after[1]))
    query = (
        select(*[c for c in entries.columns if c.name not in omit])
        .where(*conds)
        .order_by(_E.posted_at.desc(), _E.entry_id.desc())
        .limit(limit + 1)
    )
    return list(conn.execute(query).all())


def hold_row(conn: Connection, mandate: str, hold_id: str) -> Any:
    """The hold's row, or None."""
    return conn.execute(_HOLD_ROW, {"mandate": mandate, "hold": hold_id}).first()


def open_hold_rows(conn: Connection, mandate: str, now: datetime, limit: int) -> list[Any]:
    """The mandate's pending holds not yet past their time, newest first."""
    params = {"mandate": mandate, "now": now, "limit": limit}
    return list(conn.execute(_OPEN_HOLDS, params).all())


def has_overdue(conn: Connection, mandate: str, now: datetime, account: str | None = None) -> bool:
    """Whether the mandate (or one of its accounts) has a pending hold past its time."""
    if account is None:
        found = conn.execute(_ANY_OVERDUE, {"mandate": mandate, "now": now})
    else:
        found = conn.execute(_ANY_OVERDUE_OF, {"mandate": mandate, "account": account, "now": now})
    return found.first() is not None


def overdue_accounts(conn: Connection, mandate: str | None, now: datetime) -> list[tuple[str, str]]:
    """The ``(mandate, account)`` pairs with a pending hold past its time."""
    if mandate is None:
        rows = conn.execute(_OVERDUE_ACCOUNTS, {"now": now})
    else:
        rows = conn.execute(_OVERDUE_ACCOUNTS_OF, {"mandate": mandate, "now": now})
    return [(m, a) for m, a in rows.all()]


def count_overdue(conn: Connection, mandate: str, account: str, now: datetime) -> int:
    params = {"mandate": mandate, "account": account, "now": now}
    return int(conn.execute(_COUNT_OVERDUE, params).scalar_one())


def entry_sums(conn: Connection, mandate: str | None) -> Iterator[tuple[str, str, str, int]]:
    """``(mandate, account, kind, total)`` over every entry."""
    rows = conn.execute(*_for(_ENTRY_SUMS, _ENTRY_SUMS_OF, mandate))
    for m, a, kind, total in rows:
        yield m, a, kind, int(total)


def pending_sums(conn: Connection, mandate: str | None) -> Iterator[tuple[str, str, int]]:
    """``(mandate, account, total)`` over every pending hold."""
    for m, a, total in conn.execute(*_for(_PENDING_SUMS, _PENDING_SUMS_OF, mandate)):
        yield m, a, int(total)


def counter_rows(conn: Connection, mandate: str | None) -> list[Any]:
    """Every account's stored counters."""
    return list(conn.execute(*_for(_COUNTERS, _COUNTERS_OF, mandate)))


def _for(every: Any, one: Any, mandate: str | None) -> tuple[Any, dict[str, str]]:
    """The statement over every mandate, or over ``mandate`` with its value."""
    return (every, {}) if mandate is None else (one, {"mandate": mandate})


def limit_totals(conn: Connection, mandate: str | None) -> list[Any]:
    """Every spending limit's running total: ``mandate_id``, ``scope``,
    ``subject``, ``period``, ``spent_since``, ``spent_micros``."""
    query = select(
        _S.mandate_id, _S.scope, _S.subject, _S.period, _S.spent_since, _S.spent_micros
    ).order_by(_S.mandate_id, _S.scope, _S.subject, _S.period)
    if mandate is not None:
        query = query.where(_S.mandate_id == mandate)
    return list(conn.execute(query).all())


# -------------------------------------------------------------- daily rollups

ROLLUPS = (usage_days, usage_days_by_instance)
ROLLUP_SUMS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_micros",
    "cost_pico",
    "amount_micros",
)
RollupTotals = dict[tuple[str, ...], tuple[int, ...]]


def _rollup_key(table: Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


def mandate_ids(conn: Connection) -> list[str]:
    """Every mandate, by id."""
    query = select(mandates.c.mandate_id).order_by(mandates.c.mandate_id)
    return list(conn.execute(query).scalars())


def _rollup_stored(table: Table) -> Select[Any]:
    """The rollup's rows of one mandate: key columns, then ``ROLLUP_SUMS``."""
    key = _rollup_key(table)
    columns = [*(table.c[n] for n in key), *(table.c[n] for n in ROLLUP_SUMS)]
    return select(*columns).where(table.c.mandate_id == _MANDATE)


def _rollup_recount(table: Table, sqlite: bool) -> Select[Any]:
    """The same rows, counted from the mandate's usage debits."""
    if sqlite:
        day: Any = func.substr(_E.posted_at, literal_column("1"), literal_column("10"))
    else:
        day = cast(func.timezone(literal_column("'UTC'"), _E.posted_at), Date())
    groups = [
        _E.mandate_id if n == "mandate_id" else day if n == "day" else func.coalesce(_E[n], "")
        for n in _rollup_key(table)
    ]
    pico = _E.provider_cost_pico
    sums = [
        func.count(),
        *(func.sum(func.coalesce(_E[n], 0)) for n in ROLLUP_SUMS[1:5]),
        func.sum(func.coalesce(pico // 1_000_000, 0)),
        func.sum(func.coalesce(pico % 1_000_000, 0)),
        func.sum(_E.amount_micros),
    ]
    return (
        select(*groups, *sums)
        .where(_E.mandate_id == _MANDATE, _E.kind == "debit", _E.reason == "usage")
        .group_by(*groups)
    )


def rollup_differences(
    conn: Connection, table: Table, mandate: str
) -> tuple[RollupTotals, RollupTotals]:
    """The daily rollup's rows of ``mandate`` that disagree with its usage
    debits, as ``(stored, counted)``: each key (its columns, the day as
    ``YYYY-MM-DD``) to its totals in the order of ``ROLLUP_SUMS``; a key on one
    side only is a row missing from the other. The database compares the two
    (``EXCEPT`` each way), so only differences leave it: nothing when sound."""
    stored = _rollup_stored(table).cte("stored")
    counted = _rollup_recount(table, conn.dialect.name == "sqlite").cte("counted")
    sides = {
        "stored": select(stored).except_(select(counted)).subquery(),
        "counted": select(counted).except_(select(stored)).subquery(),
    }
    query = union_all(
        *(select(literal(name).label("side"), *side.c) for name, side in sides.items())
    )
    width = len(_rollup_key(table))
    found: tuple[RollupTotals, RollupTotals] = ({}, {})
    for side, *row in conn.execute(query, {"mandate": mandate}):
        key = tuple(str(v)[:10] if i == 1 else str(v) for i, v in enumerate(row[:width]))
        found[0 if side == "stored" else 1][key] = tuple(int(v) for v in row[width:])
    return found
