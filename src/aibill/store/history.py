"""Reading the ledger: entries and their pages, holds, overdue holds, and the
sums ``verify`` recomputes the counters from (SQLAlchemy Core)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from aibill.store.schema import accounts, entries, holds

_A = accounts.c
_E = entries.c
_H = holds.c
_PENDING = "pending"


def entry_row(conn: Connection, mandate: str, entry_id: str) -> Any:
    """The entry's row, or None."""
    query = select(entries).where(_E.mandate_id == mandate, _E.entry_id == entry_id)
    return conn.execute(query).first()


def entry_exists(conn: Connection, mandate: str, entry_id: str) -> bool:
    query = select(_E.entry_id).where(_E.mandate_id == mandate, _E.entry_id == entry_id)
    return conn.execute(query).first() is not None


def entry_page(
    conn: Connection,
    mandate: str,
    equal: Mapping[str, str | None],
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Any]:
    """Entries of ``mandate`` whose columns equal the given (non-None) values,
    in ``since <= posted_at < until``, newest first, after the cursor
    ``(posted_at, entry_id)``; one more than ``limit``, to tell whether more follow."""
    conds = [_E.mandate_id == mandate]
    conds += [_E[name] == value for name, value in equal.items() if value is not None]
    if since is not None:
        conds.append(_E.posted_at >= since)
    if until is not None:
        conds.append(_E.posted_at < until)
    if after is not None:
        conds.append(
            or_(_E.posted_at < after[0], and_(_E.posted_at == after[0], _E.entry_id < after[1]))
        )
    query = (
        select(entries)
        .where(*conds)
        .order_by(_E.posted_at.desc(), _E.entry_id.desc())
        .limit(limit + 1)
    )
    return list(conn.execute(query).all())


def hold_row(conn: Connection, mandate: str, hold_id: str) -> Any:
    """The hold's row, or None."""
    return conn.execute(
        select(holds).where(_H.mandate_id == mandate, _H.hold_id == hold_id)
    ).first()


def open_hold_rows(conn: Connection, mandate: str, now: datetime, limit: int) -> list[Any]:
    """The mandate's pending holds not yet past their time, newest first."""
    query = (
        select(holds)
        .where(_H.mandate_id == mandate, _H.status == _PENDING, _H.expires_at > now)
        .order_by(_H.created_at.desc(), _H.hold_id.desc())
        .limit(limit)
    )
    return list(conn.execute(query).all())


def has_overdue(conn: Connection, mandate: str, now: datetime, account: str | None = None) -> bool:
    """Whether the mandate (or one of its accounts) has a pending hold past its time."""
    conds = [_H.mandate_id == mandate, _H.status == _PENDING, _H.expires_at <= now]
    if account is not None:
        conds.insert(1, _H.account_id == account)
    return conn.execute(select(_H.hold_id).where(*conds).limit(1)).first() is not None


def overdue_accounts(conn: Connection, mandate: str | None, now: datetime) -> list[tuple[str, str]]:
    """The ``(mandate, account)`` pairs with a pending hold past its time."""
    query = (
        select(_H.mandate_id, _H.account_id)
        .where(_H.status == _PENDING, _H.expires_at <= now)
        .distinct()
    )
    if mandate is not None:
        query = query.where(_H.mandate_id == mandate)
    return [(m, a) for m, a in conn.execute(query).all()]


def count_overdue(conn: Connection, mandate: str, account: str, now: datetime) -> int:
    query = select(func.count()).where(
        _H.mandate_id == mandate,
        _H.account_id == account,
        _H.status == _PENDING,
        _H.expires_at <= now,
    )
    return int(conn.execute(query).scalar_one())


def entry_sums(conn: Connection, mandate: str | None) -> Iterator[tuple[str, str, str, int]]:
    """``(mandate, account, kind, total)`` over every entry."""
    query = select(
        _E.mandate_id, _E.account_id, _E.kind, func.coalesce(func.sum(_E.amount_micros), 0)
    ).group_by(_E.mandate_id, _E.account_id, _E.kind)
    if mandate is not None:
        query = query.where(_E.mandate_id == mandate)
    for m, a, kind, total in conn.execute(query):
        yield m, a, kind, int(total)


def pending_sums(conn: Connection, mandate: str | None) -> Iterator[tuple[str, str, int]]:
    """``(mandate, account, total)`` over every pending hold."""
    query = (
        select(_H.mandate_id, _H.account_id, func.sum(_H.amount_micros))
        .where(_H.status == _PENDING)
        .group_by(_H.mandate_id, _H.account_id)
    )
    if mandate is not None:
        query = query.where(_H.mandate_id == mandate)
    for m, a, total in conn.execute(query):
        yield m, a, int(total)


def counter_rows(conn: Connection, mandate: str | None) -> list[Any]:
    """Every account's stored counters."""
    query = select(
        _A.mandate_id, _A.account_id, _A.credits_posted, _A.debits_posted, _A.debits_pending
    )
    if mandate is not None:
        query = query.where(_A.mandate_id == mandate)
    return list(conn.execute(query))
