"""Mandates, users, members, accounts and spending limits: the statements of
the settings an admin changes (SQLAlchemy Core; none is on the money path)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

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
_PENDING = "pending"


def mandate_row(conn: Connection, mandate: str) -> Any:
    """The mandate's row, or None."""
    return conn.execute(select(mandates).where(_M.mandate_id == mandate)).first()


def mandate_rows(conn: Connection, only: str | None = None) -> list[Any]:
    """Every mandate's row by name, or only ``only``'s."""
    query = select(mandates).order_by(_M.mandate_id)
    if only is not None:
        query = query.where(_M.mandate_id == only)
    return list(conn.execute(query))


def insert_mandate(
    conn: Connection, mandate: str, billing_model: str, currency: str, now: datetime
) -> None:
    conn.execute(
        mandates.insert(),
        {
            "mandate_id": mandate,
            "billing_model": billing_model,
            "currency": currency,
            "created_at": now,
        },
    )


def set_billing_model(conn: Connection, mandate: str, billing_model: str) -> None:
    conn.execute(
        update(mandates).where(_M.mandate_id == mandate).values(billing_model=billing_model)
    )


def pending_holds(conn: Connection, mandate: str) -> int:
    """How many of the mandate's holds are pending."""
    count = conn.execute(
        select(func.count())
        .select_from(holds)
        .where(_H.mandate_id == mandate, _H.status == _PENDING)
    ).scalar_one()
    return int(count)


def insert_user(conn: Connection, user: str, now: datetime) -> None:
    conn.execute(users.insert(), {"user_id": user, "created_at": now})


def user_names(conn: Connection) -> list[str]:
    return list(conn.execute(select(users.c.user_id).order_by(users.c.user_id)).scalars())


def mandates_of_user(conn: Connection, user: str, *, limit: int) -> list[str]:
    """The first ``limit`` mandates ``user`` is a member of, by mandate id."""
    m = memberships.c
    query = select(m.mandate_id).where(m.user_id == user).order_by(m.mandate_id).limit(limit)
    return list(conn.execute(query).scalars())


def member_rows(conn: Connection, mandate: str) -> list[Any]:
    """The mandate's members (``user_id``, ``created_at``) by name."""
    m = memberships.c
    query = select(m.user_id, m.created_at).where(m.mandate_id == mandate).order_by(m.user_id)
    return list(conn.execute(query))


def member_names(conn: Connection, mandate: str) -> list[str]:
    m = memberships.c
    query = select(m.user_id).where(m.mandate_id == mandate).order_by(m.user_id)
    return list(conn.execute(query).scalars())


def roles_by_member(conn: Connection, mandate: str) -> dict[str, list[str]]:
    """Each member's roles, in role order."""
    r = member_roles.c
    roles: dict[str, list[str]] = {}
    query = select(r.user_id, r.role).where(r.mandate_id == mandate).order_by(r.role)
    for row in conn.execute(query):
        roles.setdefault(row.user_id, []).append(row.role)
    return roles


def insert_member(conn: Connection, mandate: str, user: str, now: datetime) -> None:
    conn.execute(memberships.insert(), {"mandate_id": mandate, "user_id": user, "created_at": now})


def insert_member_role(conn: Connection, mandate: str, user: str, role: str, now: datetime) -> None:
    conn.execute(
        member_roles.insert(),
        {"mandate_id": mandate, "user_id": user, "role": role, "created_at": now},
    )


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
    conn.execute(accounts.insert(), {**values, "currency": currency, "created_at": now})


def account_names(conn: Connection, mandate: str) -> list[str]:
    query = select(_A.account_id).where(_A.mandate_id == mandate).order_by(_A.account_id)
    return list(conn.execute(query).scalars())


def account_row(conn: Connection, mandate: str, account: str) -> Any:
    """The account's owner and counters, or None."""
    query = select(
        _A.user_id, _A.credits_posted, _A.debits_posted, _A.debits_pending, _A.overdraft_limit
    ).where(_A.mandate_id == mandate, _A.account_id == account)
    return conn.execute(query).first()


def set_overdraft_limit(conn: Connection, mandate: str, account: str, micros: int) -> None:
    conn.execute(
        update(accounts)
        .where(_A.mandate_id == mandate, _A.account_id == account)
        .values(overdraft_limit=micros)
    )


def limit_micros(conn: Connection, mandate: str, scope: str, subject: str, period: str) -> Any:
    """The limit's amount, or None when there is none."""
    where = _limit_key(mandate, scope, subject, period)
    return conn.execute(select(_L.amount_micros).where(*where)).scalar()


def replace_limit(
    conn: Connection,
    mandate: str,
    scope: str,
    subject: str,
    period: str,
    micros: int | None,
    now: datetime,
) -> None:
    """Set the limit to ``micros``, or remove it (``None``)."""
    conn.execute(spending_limits.delete().where(*_limit_key(mandate, scope, subject, period)))
    if micros is not None:
        key = {"mandate_id": mandate, "scope": scope, "subject": subject, "period": period}
        conn.execute(spending_limits.insert().values(**key, amount_micros=micros, updated_at=now))


def limit_rows(conn: Connection, mandate: str) -> list[Any]:
    query = (
        select(spending_limits)
        .where(_L.mandate_id == mandate)
        .order_by(_L.scope, _L.subject, _L.period)
    )
    return list(conn.execute(query).all())


def _limit_key(mandate: str, scope: str, subject: str, period: str) -> list[Any]:
    return [_L.mandate_id == mandate, _L.scope == scope, _L.subject == subject, _L.period == period]
