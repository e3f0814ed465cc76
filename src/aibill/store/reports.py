"""The reports' reads: a user's accounts across mandates, the holds overdue in
them, and a mandate's usage totalled per group, from its entries or, for
whole UTC days, from the daily rollups (``usage_days`` and
``usage_days_by_instance``) a trigger keeps in each debit's transaction.

SQLAlchemy Core; every statement is built once (the usage totals once per
shape of report: its group keys, its filters and the backend) with its values
as parameters. Each function runs inside the read transaction its caller opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    DateTime,
    Row,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
)

from aibill.domain.model import (
    POOL_ACCOUNT,
    BillingModel,
    EntryKind,
    HoldStatus,
    wallet_account,
)
from aibill.domain.reports import PERIOD_KEYS
from aibill.store.schema import (
    accounts,
    entries,
    holds,
    mandates,
    memberships,
    usage_days,
    usage_days_by_instance,
    users,
)

USAGE_REASON = "usage"
"""The reason of the debits a usage report counts."""
PICO_PER_MICRO = 10**6
_MICRO_SQL = literal_column(str(PICO_PER_MICRO), BigInteger)

_E = entries.c
_GROUP_COLUMNS: Mapping[str, Any] = {
    "provider": _E.provider,
    "model": _E.model,
    "feature_code": _E.feature_code,
    "feature_instance": _E.feature_instance,
    "user": _E.user_id,
    "workflow_id": _E.workflow_id,
}
"""The entries' column of each group key (and of each filter) that is not a period."""


# ------------------------------------------------------------------- balances

_USER_KNOWN = select(users.c.user_id).where(users.c.user_id == bindparam("user"))


def _user_accounts() -> Select[Any]:
    m, d, a = memberships.c, mandates.c, accounts.c
    account = case(
        (d.billing_model == BillingModel.PREPAY_USER.value, bindparam("wallet", type_=String)),
        else_=POOL_ACCOUNT,
    )
    return (
        select(
            m.mandate_id,
            d.billing_model,
            d.currency,
            account.label("account"),
            a.account_id,
            a.credits_posted,
            a.debits_posted,
            a.debits_pending,
            a.overdraft_limit,
        )
        .join(mandates, d.mandate_id == m.mandate_id)
        .outerjoin(accounts, and_(a.mandate_id == m.mandate_id, a.account_id == account))
        .where(m.user_id == bindparam("user"))
        .order_by(m.mandate_id)
    )


_USER_ACCOUNTS = _user_accounts()

_H = holds.c
_OVERDUE = (
    select(_H.mandate_id, _H.account_id, func.sum(_H.amount_micros))
    .where(
        _H.mandate_id.in_(bindparam("mandates", expanding=True)),
        _H.account_id.in_(bindparam("accounts", expanding=True)),
        _H.status == HoldStatus.PENDING.value,
        _H.expires_at <= bindparam("now"),
    )
    .group_by(_H.mandate_id, _H.account_id)
)


def user_known(conn: Connection, user: str) -> bool:
    """Whether ``user`` is a registered identity."""
    return conn.execute(_USER_KNOWN, {"user": user}).first() is not None


def user_accounts(conn: Connection, user: str) -> Sequence[Row[Any]]:
    """One row per mandate ``user`` is a member of, by mandate: its billing model
    and currency, the ``account`` its billing model names for ``user`` (the pool
    or their wallet), and that account's counters (``account_id`` None when the
    account does not exist)."""
    params = {"user": user, "wallet": wallet_account(user)}
    return conn.execute(_USER_ACCOUNTS, params).all()


def overdue_holds(
    conn: Connection, mandate_ids: Sequence[str], user: str, now: datetime
) -> dict[tuple[str, str], int]:
    """The micro-units still counted as pending in the pool and ``user``'s wallet
    of each of ``mandate_ids`` by holds that expired at or before ``now``, by
    (mandate, account)."""
    params = {
        "mandates": list(mandate_ids),
        "accounts": [POOL_ACCOUNT, wallet_account(user)],
        "now": now,
    }
    return {(mid, acc): int(total) for mid, acc, total in conn.execute(_OVERDUE, params)}


# --------------------------------------------------------------- usage totals


def _period(period: str, sqlite: bool) -> ColumnElement[Any]:
    """The start of the period of ``posted_at``, in UTC, computed by the database.

    PostgreSQL truncates the UTC wall time (``date_trunc`` weeks start on
    Monday). SQLite stores naive UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``); the
    day is its first ten characters, taken as text, because SQLite's date
    functions round the time to milliseconds and would carry 23:59:59.9995
    into the next day. A week's Monday is the coming Sunday (that day itself,
    if it is a Sunday) minus six days.
    """
    col = _E.posted_at
    if not sqlite:
        utc = func.timezone(literal_column("'UTC'"), col)
        return func.date_trunc(literal_column(f"'{period}'"), utc)
    day = func.substr(col, literal_column("1"), literal_column("10"))
    if period == "day":
        return day
    if period == "week":
        return func.date(day, literal_column("'weekday 0'"), literal_column("'-6 days'"))
    return func.date(day, literal_column("'start of month'"))


def _total(col: Any) -> Any:
    return func.coalesce(func.sum(func.coalesce(col, 0)), 0)


@lru_cache(maxsize=256)
def _usage_totals(
    keys: tuple[str, ...], filters: tuple[str, ...], since: bool, until: bool, sqlite: bool
) -> Select[Any]:
    """The usage totals of one shape of report; its values are parameters."""
    key_exprs = [
        (_period(k, sqlite) if k in PERIOD_KEYS else _GROUP_COLUMNS[k]).label(f"k{i}")
        for i, k in enumerate(keys)
    ]
    conds = [
        _E.mandate_id == bindparam("mandate"),
        _E.kind == EntryKind.DEBIT.value,
        _E.reason == USAGE_REASON,
    ]
    conds += [_GROUP_COLUMNS[name] == bindparam(name) for name in filters]
    if since:
        conds.append(_E.posted_at >= bindparam("since"))
    if until:
        conds.append(_E.posted_at < bindparam("until"))
    # The provider cost is summed in two halves (whole micro-units and the pico
    # rest) so that no sum comes near SQLite's 64-bit limit.
    pico = _E.provider_cost_pico
    return (
        select(
            *key_exprs,
            _E.provider_currency,
            func.count().label("calls"),
            _total(_E.input_tokens).label("input_tokens"),
            _total(_E.output_tokens).label("output_tokens"),
            _total(_E.cache_read_tokens).label("cache_read_tokens"),
            _total(_E.cache_write_tokens).label("cache_write_tokens"),
            _total(pico // _MICRO_SQL).label("cost_hi"),
            _total(pico % _MICRO_SQL).label("cost_lo"),
            _total(_E.amount_micros).label("amount"),
        )
        .where(*conds)
        .group_by(*key_exprs, _E.provider_currency)
    )


def usage_totals(
    conn: Connection,
    mandate: str,
    keys: tuple[str, ...],
    filters: Mapping[str, str],
    since: datetime | None,
    until: datetime | None,
) -> Sequence[Row[Any]]:
    """The usage debits of ``mandate`` posted in ``since <= posted_at < until``
    with the tags in ``filters`` (user, provider, model, feature_code,
    feature_instance, workflow_id), totalled per group of ``keys`` and provider
    currency: the group's values as ``k0``, ``k1``, ... (a period as its start,
    as the backend gives it), then ``provider_currency``, ``calls``, the token
    totals, the provider cost in two halves (``cost_hi`` in micro-units,
    ``cost_lo`` in pico-units) and ``amount`` in micro-units. Unordered."""
    sqlite = conn.dialect.name == "sqlite"
    stmt = _usage_totals(keys, tuple(filters), since is not None, until is not None, sqlite)
    params: dict[str, Any] = {"mandate": mandate, **filters}
    if since is not None:
        params["since"] = since
    if until is not None:
        params["until"] = until
    return conn.execute(stmt, params).all()


# -------------------------------------------------------------- daily rollups

_ROLLUP_COLUMNS = {"user": "user_id"}
"""A report name whose rollup column is named otherwise."""


def _rollup_names(table: Table) -> frozenset[str]:
    named = {_ROLLUP_COLUMNS.get(n, n): n for n in _GROUP_COLUMNS}
    return frozenset(named[c.name] for c in table.c if c.name in named) | frozenset(PERIOD_KEYS)


_ROLLUPS = tuple((table, _rollup_names(table)) for table in (usage_days, usage_days_by_instance))


def rollup_for(keys: tuple[str, ...], filters: Mapping[str, str]) -> Table | None:
    """The smallest daily rollup that holds every key and filter of a report, or
    None when none does (a workflow is not rolled up) or a filter asks for an
    empty value (which a rollup keeps for "untagged")."""
    if any(value == "" for value in filters.values()):
        return None
    names = {*keys, *filters}
    return next((table for table, held in _ROLLUPS if names <= held), None)


def _day_period(period: str, day: Any, sqlite: bool) -> ColumnElement[Any]:
    """The start of the period of a rollup's ``day``, as :func:`_period` gives
    it for an entry's time."""
    if not sqlite:
        return func.date_trunc(literal_column(f"'{period}'"), cast(day, DateTime()))
    text_day = func.substr(day, literal_column("1"), literal_column("10"))
    if period == "day":
        return text_day
    if period == "week":
        return func.date(text_day, literal_column("'weekday 0'"), literal_column("'-6 days'"))
    return func.date(text_day, literal_column("'start of month'"))


@lru_cache(maxsize=256)
def _rollup_totals(
    table: Table,
    keys: tuple[str, ...],
    filters: tuple[str, ...],
    since: bool,
    until: bool,
    sqlite: bool,
) -> Select[Any]:
    """The totals of one shape of report read from ``table``; as
    :func:`_usage_totals` gives them, with '' (untagged) given back as NULL."""
    c = table.c

    def column(name: str) -> Any:
        return c[_ROLLUP_COLUMNS.get(name, name)]

    key_exprs = [
        (_day_period(k, c.day, sqlite) if k in PERIOD_KEYS else func.nullif(column(k), "")).label(
            f"k{i}"
        )
        for i, k in enumerate(keys)
    ]
    conds = [c.mandate_id == bindparam("mandate")]
    conds += [column(name) == bindparam(name) for name in filters]
    if since:
        conds.append(c.day >= bindparam("since_day"))
    if until:
        conds.append(c.day < bindparam("until_day"))
    currency = func.nullif(c.provider_currency, "")
    return (
        select(
            *key_exprs,
            currency.label("provider_currency"),
            func.sum(c.calls).label("calls"),
            func.sum(c.input_tokens).label("input_tokens"),
            func.sum(c.output_tokens).label("output_tokens"),
            func.sum(c.cache_read_tokens).label("cache_read_tokens"),
            func.sum(c.cache_write_tokens).label("cache_write_tokens"),
            func.sum(c.cost_micros).label("cost_hi"),
            func.sum(c.cost_pico).label("cost_lo"),
            func.sum(c.amount_micros).label("amount"),
        )
        .where(*conds)
        .group_by(*key_exprs, currency)
    )


def rollup_totals(
    conn: Connection,
    table: Table,
    mandate: str,
    keys: tuple[str, ...],
    filters: Mapping[str, str],
    days: tuple[datetime | None, datetime | None],
) -> Sequence[Row[Any]]:
    """:func:`usage_totals` over the whole UTC days from ``days[0]`` up to
    ``days[1]`` (day starts; None: open), read from the daily rollup ``table``
    (see :func:`rollup_for`)."""
    sqlite = conn.dialect.name == "sqlite"
    first, end = days
    stmt = _rollup_totals(table, keys, tuple(filters), first is not None, end is not None, sqlite)
    params: dict[str, Any] = {"mandate": mandate, **filters}
    if first is not None:
        params["since_day"] = first.date()
    if end is not None:
        params["until_day"] = end.date()
    return conn.execute(stmt, params).all()
