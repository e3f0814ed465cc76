"""Mandates, users, members, accounts and spending limits: the statements of
the settings an admin changes (SQLAlchemy Core; none is on the money path).

Every statement is built once, at import; its values are bound when it runs,
under names apart from the columns an INSERT or UPDATE sets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, Integer, bindparam, func, select, text, update

from aibill.store.schema import (
    accounts,
    holds,
    mandates,
    member_roles,
    memberships,
    spending_limits,
    users,
)

_A = accounts.c
_H = holds.c
_M = mandates.c
_L = spending_limits.c
_R = member_roles.c
_MB = memberships.c
_MANDATE: BindParameter[str] = bindparam("mandate")
_USER: BindParameter[str] = bindparam("user")
_ACCOUNT: BindParameter[str] = bindparam("account")

_MANDATE_ROW = select(mandates).where(_M.mandate_id == _MANDATE)
_ALL_MANDATES = select(mandates).order_by(_M.mandate_id)
_INSERT_MANDATE = mandates.insert()
_SET_BILLING_MODEL = (
    update(mandates).where(_M.mandate_id == _MANDATE).values(billing_model=bindparam("model"))
)
_PENDING_HOLDS = (
    select(func.count()).select_from(holds).where(_H.mandate_id == _MANDATE, _H.status == "pending")
)
_INSERT_USER = users.insert()
_USER_NAMES = select(users.c.user_id).order_by(users.c.user_id)
_MANDATES_OF_USER = (
    select(_MB.mandate_id)
    .where(_MB.user_id == _USER)
    .order_by(_MB.mandate_id)
    .limit(bindparam("limit", type_=Integer))
)
_MEMBER_ROWS = (
    select(_MB.user_id, _MB.created_at).where(_MB.mandate_id == _MANDATE).order_by(_MB.user_id)
)
_MEMBER_NAMES = select(_MB.user_id).where(_MB.mandate_id == _MANDATE).order_by(_MB.user_id)
_ROLES = select(_R.user_id, _R.role).where(_R.mandate_id == _MANDATE).order_by(_R.role)
_INSERT_MEMBER = memberships.insert()
_INSERT_MEMBER_ROLE = member_roles.insert()
_INSERT_ACCOUNT = accounts.insert()
_ACCOUNT_NAMES = select(_A.account_id).where(_A.mandate_id == _MANDATE).order_by(_A.account_id)
_ACCOUNT_ROW = select(
    _A.user_id, _A.credits_posted, _A.debits_posted, _A.debits_pending, _A.overdraft_limit
).where(_A.mandate_id == _MANDATE, _A.account_id == _ACCOUNT)
_SET_OVERDRAFT = (
    update(accounts)
    .where(_A.mandate_id == _MANDATE, _A.account_id == _ACCOUNT)
    .values(overdraft_limit=bindparam("micros"))
)
_LIMIT_KEY = (
    _L.mandate_id == _MANDATE,
    _L.scope == bindparam("limit_scope"),
    _L.subject == bindparam("limit_subject"),
    _L.period == bindparam("limit_period"),
)
_LIMIT_MICROS = select(_L.amount_micros).where(*_LIMIT_KEY)
_DELETE_LIMIT = spending_limits.delete().where(*_LIMIT_KEY)
_INSERT_LIMIT = spending_limits.insert()
_UPDATE_LIMIT = (
    update(spending_limits)
    .where(*_LIMIT_KEY)
    .values(amount_micros=bindparam("micros"), updated_at=bindparam("now"))
)
_LIMIT_ROWS = (
    select(spending_limits)
    .where(_L.mandate_id == _MANDATE)
    .order_by(_L.scope, _L.subject, _L.period)
)


def mandate_row(conn: Connection, mandate: str) -> Any:
    """The mandate's row, or None."""
    return conn.execute(_MANDATE_ROW, {"mandate": mandate}).first()


def mandate_rows(conn: Connection, only: str | None = None) -> list[Any]:
    """Every mandate's row by name, or only ``only``'s."""
    if only is not None:
        row = mandate_row(conn, only)
        return [] if row is None else [row]
    return list(conn.execute(_ALL_MANDATES))


def insert_mandate(
    conn: Connection, mandate: str, billing_model: str, currency: str, now: datetime
) -> None:
    values = {"mandate_id": mandate, "billing_model": billing_model}
    conn.execute(_INSERT_MANDATE, {**values, "currency": currency, "created_at": now})


def set_billing_model(conn: Connection, mandate: str, billing_model: str) -> None:
    conn.execute(_SET_BILLING_MODEL, {"mandate": mandate, "model": billing_model})


def pending_holds(conn: Connection, mandate: str) -> int:
    """How many of the mandate's holds are pending."""
    return int(conn.execute(_PENDING_HOLDS, {"mandate": mandate}).scalar_one())


def insert_user(conn: Connection, user: str, now: datetime) -> None:
    conn.execute(_INSERT_USER, {"user_id": user, "created_at": now})


def user_names(conn: Connection) -> list[str]:
    return list(conn.execute(_USER_NAMES).scalars())


def mandates_of_user(conn: Connection, user: str, *, limit: int) -> list[str]:
    """The first ``limit`` mandates ``user`` is a member of, by mandate id."""
    return list(conn.execute(_MANDATES_OF_USER, {"user": user, "limit": limit}).scalars())


def member_rows(conn: Connection, mandate: str) -> list[Any]:
    """The mandate's members (``user_id``, ``created_at``) by name."""
    return list(conn.execute(_MEMBER_ROWS, {"mandate": mandate}))


def member_names(conn: Connection, mandate: str) -> list[str]:
    return list(conn.execute(_MEMBER_NAMES, {"mandate": mandate}).scalars())


def roles_by_member(conn: Connection, mandate: str) -> dict[str, list[str]]:
    """Each member's roles, in role order."""
    roles: dict[str, list[str]] = {}
    for row in conn.execute(_ROLES, {"mandate": mandate}):
        roles.setdefault(row.user_id, []).append(row.role)
    return roles


def insert_member(conn: Connection, mandate: str, user: str, now: datetime) -> None:
    conn.execute(_INSERT_MEMBER, {"mandate_id": mandate, "user_id": user, "created_at": now})


def insert_member_role(conn: Connection, mandate: str, user: str, role: str, now: datetime) -> None:
    values = {"mandate_id": mandate, "user_id": user, "role": role}
    conn.execute(_INSERT_MEMBER_ROLE, {**values, "created_at": now})


def open_account(
    conn: Connection,
    mandate: str,
    account: str,
    currency: str,
    now: datetime,
    user: str | None = None,
) -> None:
    values: dict[str, Any] = {"mandate_id": mandate, "account_id": account}
    if user is not None:
        values["user_id"] = user
    conn.execute(_INSERT_ACCOUNT, {**values, "currency": currency, "created_at": now})


def account_names(conn: Connection, mandate: str) -> list[str]:
    return list(conn.execute(_ACCOUNT_NAMES, {"mandate": mandate}).scalars())


def account_row(conn: Connection, mandate: str, account: str) -> Any:
    """The account's owner and counters, or None."""
    return conn.execute(_ACCOUNT_ROW, {"mandate": mandate, "account": account}).first()


def set_overdraft_limit(conn: Connection, mandate: str, account: str, micros: int) -> None:
    conn.execute(_SET_OVERDRAFT, {"mandate": mandate, "account": account, "micros": micros})


def limit_micros(conn: Connection, mandate: str, scope: str, subject: str, period: str) -> Any:
    """The limit's amount, or None when there is none."""
    return conn.execute(_LIMIT_MICROS, _limit_key(mandate, scope, subject, period)).scalar()


def add_limit(
    conn: Connection,
    mandate: str,
    scope: str,
    subject: str,
    period: str,
    micros: int,
    now: datetime,
    spent: tuple[datetime, int],
) -> None:
    """A new limit of ``micros``; ``spent``: what the period starting at its
    first item has spent so far (kept up to date from then on as debits are
    inserted)."""
    key = {"mandate_id": mandate, "scope": scope, "subject": subject, "period": period}
    counted = {"spent_since": spent[0], "spent_micros": spent[1]}
    conn.execute(_INSERT_LIMIT, {**key, "amount_micros": micros, "updated_at": now, **counted})


def change_limit(
    conn: Connection,
    mandate: str,
    scope: str,
    subject: str,
    period: str,
    micros: int | None,
    now: datetime,
) -> None:
    """Change a limit's amount (its running total goes on), or remove it (``None``)."""
    key = _limit_key(mandate, scope, subject, period)
    if micros is None:
        conn.execute(_DELETE_LIMIT, key)
    else:
        conn.execute(_UPDATE_LIMIT, {**key, "micros": micros, "now": now})


def hold_debits_still(conn: Connection) -> None:
    """Make debits wait until this transaction ends (PostgreSQL; SQLite runs
    one writer at a time), so that none slips between a new limit's count of
    its period and the row that counts from then on. Taken before the
    transaction waits for any row, so it cannot close a cycle with a debit."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE entries IN SHARE MODE"))


def limit_rows(conn: Connection, mandate: str) -> list[Any]:
    return list(conn.execute(_LIMIT_ROWS, {"mandate": mandate}).all())


def _limit_key(mandate: str, scope: str, subject: str, period: str) -> dict[str, str]:
    return {
        "mandate": mandate,
        "limit_scope": scope,
        "limit_subject": subject,
        "limit_period": period,
    }
