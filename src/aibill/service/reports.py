"""Reports: a user's balances across mandates, usage totals, and CSV exports.

Everything here only reads. A report is computed in one read transaction (one
snapshot); a CSV export of history reads page by page, so its memory stays
flat however long the history is.

The public entry points are methods of :class:`~aibill.service.billing.Billing`
(``balances_for_user``, ``usage_report``, ``export_history_csv``,
``iter_history_csv``, ``export_usage_report_csv``, ``iter_usage_report_csv``);
they delegate to the functions below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TextIO, TypeVar, Unpack

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    and_,
    case,
    func,
    literal_column,
    select,
)

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.csvcell import neutralize
from aibill.domain.model import (
    POOL_ACCOUNT,
    BillingModel,
    Entry,
    EntryKind,
    HistoryFilters,
    HoldStatus,
    Page,
    UsageFilters,
    check_name,
    wallet_account,
)
from aibill.domain.money import from_micros
from aibill.domain.reports import (
    GROUP_KEYS,
    PERIOD_KEYS,
    GroupBy,
    KeyValue,
    UsageRow,
    UserBalance,
    write_lines,
)
from aibill.domain.text import check_searchable
from aibill.domain.times import check_optional_time
from aibill.store.schema import accounts, entries, holds, mandates, memberships, users

T = TypeVar("T")


class LedgerReads(Protocol):
    """What the reports read through the ledger (``aibill.service.billing.Billing``
    is one): its engine, clock and read transactions, a mandate's context, and
    its history. A protocol, so that this module needs nothing from the module
    that calls it."""

    @property
    def engine(self) -> Engine: ...

    def _now(self) -> datetime: ...

    def _read(self, work: Callable[[Connection], T]) -> T: ...

    def _ctx(self, conn: Connection, mandate: str) -> Any: ...

    @property
    def history(self) -> Callable[..., Page]: ...


HISTORY_CSV_COLUMNS = (
    "entry_id",
    "posted_at",
    "kind",
    "reason",
    "account",
    "user",
    "amount",
    "currency",
    "balance_after",
    "provider",
    "model",
    "model_matched",
    "feature_code",
    "feature_instance",
    "workflow_id",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "provider_cost",
    "provider_currency",
    "fx_rate",
    "markup_percent",
    "price_source",
    "hold_id",
    "over_balance",
    "shortfall",
    "over_limit",
    "description",
)
"""The header of a history export, in this order. New columns are only ever appended."""
USAGE_CSV_TOTALS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)
EXPORT_PAGE = 1000
MAX_FILTER_LENGTH = 200
USAGE_REASON = "usage"
_PICO_PER_MICRO = 10**6
_PICO_PER_UNIT = 10**12
_MICRO_SQL = literal_column(str(_PICO_PER_MICRO), BigInteger)
_TEXT_FILTERS = ("user", "provider", "model", "feature_code", "feature_instance", "workflow_id")

CsvLines = Iterator[str]
TextOut = TextIO


# ------------------------------------------------------------------- balances


def balances_for_user(billing: LedgerReads, user: str) -> list[UserBalance]:
    """Every mandate ``user`` is a member of, with the balance of the account its
    billing model names for them, sorted by mandate. Read in one snapshot."""
    check_name(user, "user")
    m, d, a, h = memberships.c, mandates.c, accounts.c, holds.c
    account = case(
        (d.billing_model == BillingModel.PREPAY_USER.value, wallet_account(user)),
        else_=POOL_ACCOUNT,
    )
    rows_q = (
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
        .where(m.user_id == user)
        .order_by(m.mandate_id)
    )

    def work(conn: Connection) -> list[UserBalance]:
        if conn.execute(select(users.c.user_id).where(users.c.user_id == user)).first() is None:
            raise e.UnknownUser(user)
        rows = conn.execute(rows_q).all()
        overdue: dict[tuple[str, str], int] = {}
        if rows:
            now = billing._now()
            q = (
                select(h.mandate_id, h.account_id, func.sum(h.amount_micros))
                .where(
                    h.mandate_id.in_([r.mandate_id for r in rows]),
                    h.account_id.in_([POOL_ACCOUNT, wallet_account(user)]),
                    h.status == HoldStatus.PENDING.value,
                    h.expires_at <= now,
                )
                .group_by(h.mandate_id, h.account_id)
            )
            overdue = {(mid, acc): int(total) for mid, acc, total in conn.execute(q)}
        out = []
        for r in rows:
            if r.account_id is None:
                raise e.UnknownAccount(
                    f"Mandate {r.mandate_id!r} has no account {r.account!r}.", account=r.account
                )
            balance = rules.balance(r.credits_posted, r.debits_posted)
            pending = r.debits_pending - overdue.get((r.mandate_id, r.account), 0)
            out.append(
                UserBalance(
                    mandate=r.mandate_id,
                    user=user,
                    billing_model=BillingModel(r.billing_model),
                    account=r.account,
                    currency=r.currency,
                    balance=from_micros(balance),
                    available=from_micros(rules.available(balance, pending, r.overdraft_limit)),
                    pending=from_micros(pending),
                )
            )
        return out

    return billing._read(work)


# --------------------------------------------------------------- usage report


def _check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    keys = (group_by,) if isinstance(group_by, str) else tuple(group_by)
    for key in keys:
        if key not in GROUP_KEYS:
            raise e.InvalidRequest(
                f"group_by items must be among {', '.join(GROUP_KEYS)}, not {key!r}.",
                field="group_by",
            )
    if len(set(keys)) != len(keys):
        raise e.InvalidRequest("group_by names a key twice.", field="group_by")
    periods = [k for k in keys if k in PERIOD_KEYS]
    if len(periods) > 1:
        raise e.InvalidRequest(
            f"group_by takes at most one period, not {' and '.join(periods)}.", field="group_by"
        )
    return keys


def _check_range(since: datetime | None, until: datetime | None) -> None:
    since = check_optional_time(since, "since")
    until = check_optional_time(until, "until")
    if since is not None and until is not None and until < since:
        raise e.InvalidRequest("until must not be before since.", field="until")


def _period_expr(period: str, sqlite: bool) -> ColumnElement[Any]:
    """The start of the period of ``posted_at``, in UTC, computed by the database.

    PostgreSQL truncates the UTC wall time (``date_trunc`` weeks start on
    Monday). SQLite stores naive UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``); the
    day is its first ten characters, taken as text, because SQLite's date
    functions round the time to milliseconds and would carry 23:59:59.9995
    into the next day. A week's Monday is the coming Sunday (that day itself,
    if it is a Sunday) minus six days.
    """
    col = entries.c.posted_at
    if not sqlite:
        utc = func.timezone(literal_column("'UTC'"), col)
        return func.date_trunc(literal_column(f"'{period}'"), utc)
    day = func.substr(col, literal_column("1"), literal_column("10"))
    if period == "day":
        return day
    if period == "week":
        return func.date(day, literal_column("'weekday 0'"), literal_column("'-6 days'"))
    return func.date(day, literal_column("'start of month'"))


def _as_utc(value: object) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise AssertionError(f"unexpected period value {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _pico_decimal(pico: int) -> Decimal:
    """Pico-units as an exact Decimal in plain notation, without trailing zeros."""
    whole, frac = divmod(pico, _PICO_PER_UNIT)
    digits = f"{frac:012d}".rstrip("0")
    return Decimal(f"{whole}.{digits}" if digits else str(whole))


def _sort_key(keys: tuple[KeyValue, ...]) -> tuple[tuple[bool, Any], ...]:
    # Untagged (None) groups after the tagged ones, on both backends.
    return tuple((v is None, "" if v is None else v) for v in keys)


def usage_report(
    billing: LedgerReads,
    mandate: str,
    *,
    group_by: Sequence[str] = ("day",),
    since: datetime | None = None,
    until: datetime | None = None,
    user: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    feature_code: str | None = None,
    feature_instance: str | None = None,
    workflow_id: str | None = None,
) -> list[UsageRow]:
    """Usage of a mandate, totalled per group, sorted by the group keys.

    Counts the usage debits (entries with reason ``usage``) posted in
    ``since <= posted_at < until``, optionally only those tagged with the given
    user, provider, model (as asked), feature code, feature instance or
    workflow. Credits, refunds and adjustments are not usage and do not count.
    """
    keys = _check_group_by(group_by)
    _check_range(since, until)
    filters = {
        "user": user,
        "provider": provider,
        "model": model,
        "feature_code": feature_code,
        "feature_instance": feature_instance,
        "workflow_id": workflow_id,
    }
    for name, value in filters.items():
        if value is not None:
            check_searchable(value, name, max_length=MAX_FILTER_LENGTH)
    sqlite = billing.engine.dialect.name == "sqlite"
    c = entries.c
    columns = {
        "provider": c.provider,
        "model": c.model,
        "feature_code": c.feature_code,
        "feature_instance": c.feature_instance,
        "user": c.user_id,
        "workflow_id": c.workflow_id,
    }
    key_exprs = [
        (_period_expr(k, sqlite) if k in PERIOD_KEYS else columns[k]).label(f"k{i}")
        for i, k in enumerate(keys)
    ]
    conds = [c.mandate_id == mandate, c.kind == EntryKind.DEBIT.value, c.reason == USAGE_REASON]
    conds += [columns[name] == value for name, value in filters.items() if value is not None]
    if since is not None:
        conds.append(c.posted_at >= since)
    if until is not None:
        conds.append(c.posted_at < until)

    def total(col: Any) -> Any:
        return func.coalesce(func.sum(func.coalesce(col, 0)), 0)

    # The provider cost is summed in two halves (whole micro-units and the pico
    # rest) so that no sum comes near SQLite's 64-bit limit.
    pico = c.provider_cost_pico
    stmt = (
        select(
            *key_exprs,
            c.provider_currency,
            func.count().label("calls"),
            total(c.input_tokens).label("input_tokens"),
            total(c.output_tokens).label("output_tokens"),
            total(c.cache_read_tokens).label("cache_read_tokens"),
            total(c.cache_write_tokens).label("cache_write_tokens"),
            total(pico // _MICRO_SQL).label("cost_hi"),
            total(pico % _MICRO_SQL).label("cost_lo"),
            total(c.amount_micros).label("amount"),
        )
        .where(*conds)
        .group_by(*key_exprs, c.provider_currency)
    )

    def work(conn: Connection) -> tuple[str, Sequence[Any]]:
        ctx = billing._ctx(conn, mandate)
        return ctx.currency, conn.execute(stmt).all()

    currency, rows = billing._read(work)
    groups: dict[tuple[KeyValue, ...], dict[str, Any]] = {}
    for r in rows:
        values = tuple(_as_utc(r[i]) if k in PERIOD_KEYS else r[i] for i, k in enumerate(keys))
        g = groups.setdefault(
            values,
            {"calls": 0, "amount": 0, "cost": {}, **dict.fromkeys(USAGE_CSV_TOTALS[1:], 0)},
        )
        g["calls"] += int(r.calls)
        g["amount"] += int(r.amount)
        for name in USAGE_CSV_TOTALS[1:]:
            g[name] += int(getattr(r, name))
        if r.provider_currency is not None:
            cost = int(r.cost_hi) * _PICO_PER_MICRO + int(r.cost_lo)
            g["cost"][r.provider_currency] = g["cost"].get(r.provider_currency, 0) + cost
    return [
        UsageRow(
            keys=dict(zip(keys, values, strict=True)),
            calls=g["calls"],
            input_tokens=g["input_tokens"],
            output_tokens=g["output_tokens"],
            cache_read_tokens=g["cache_read_tokens"],
            cache_write_tokens=g["cache_write_tokens"],
            provider_cost={cur: _pico_decimal(p) for cur, p in sorted(g["cost"].items())},
            amount=from_micros(g["amount"]),
            currency=currency,
        )
        for values, g in sorted(groups.items(), key=lambda item: _sort_key(item[0]))
    ]


# ------------------------------------------------------------------------ CSV


_QUOTED = (",", '"', "\r", "\n")
# Quoted too when neutralising: a spreadsheet that splits on ``;`` or tab (as
# Excel does in many locales) would otherwise start a new cell there, and that
# cell could start with a formula.
_QUOTED_SAFE = (*_QUOTED, ";", "\t")


def _line_writer(spreadsheet_safe: bool) -> Callable[[Sequence[object]], str]:
    """Renders one row as a CSV line (RFC 4180, ``\\r\\n``). With
    ``spreadsheet_safe``, text cells go through :func:`neutralize` (numbers,
    times and flags never do: the column's type decides, not the content)."""
    quoted = _QUOTED_SAFE if spreadsheet_safe else _QUOTED

    def field(value: object) -> str:
        text = _cell(value)
        if spreadsheet_safe and isinstance(value, str):
            text = neutralize(text)
        if any(c in text for c in quoted):
            return '"' + text.replace('"', '""') + '"'
        return text

    def render(cells: Sequence[object]) -> str:
        return ",".join(field(v) for v in cells) + "\r\n"

    return render


def _cell(value: object) -> str:
    """Plain text for one CSV cell: money as plain decimals, never floats or exponents."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, float):  # pragma: no cover - no money is ever a float
        raise TypeError("aibill never writes floats")
    return str(value)


def _iso(when: datetime) -> str:
    """ISO 8601 in UTC with microseconds and ``Z``: one fixed width, sorts as text."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _history_cells(entry: Entry) -> list[object]:
    return [
        entry.id,
        entry.posted_at,
        entry.kind.value,
        entry.reason,
        entry.account,
        entry.user,
        entry.amount,
        entry.currency,
        entry.balance_after,
        entry.provider,
        entry.model,
        entry.model_matched,
        entry.feature_code,
        entry.feature_instance,
        entry.workflow_id,
        entry.input_tokens,
        entry.output_tokens,
        entry.cache_read_tokens,
        entry.cache_write_tokens,
        entry.provider_cost,
        entry.provider_currency,
        entry.fx_rate,
        entry.markup_percent,
        entry.price_source,
        entry.hold_id,
        entry.over_balance,
        entry.shortfall,
        entry.over_limit,
        entry.description,
    ]


def iter_history_csv(
    billing: LedgerReads,
    mandate: str,
    *,
    page_size: int = EXPORT_PAGE,
    spreadsheet_safe: bool = True,
    **filters: Unpack[HistoryFilters],
) -> Iterator[str]:
    """The mandate's history as CSV lines (header first, each ending ``\\r\\n``),
    newest first, with the same filters as ``history()``.

    The first page is read before this returns, so a bad filter or an unknown
    mandate raises here, before any line is produced. Then one page of
    ``page_size`` entries is read at a time, each in its own short read.
    """
    first = billing.history(mandate, limit=page_size, **filters)
    render = _line_writer(spreadsheet_safe)

    def lines(page: Page | None) -> Iterator[str]:
        # Only the page being written is held: the previous one is let go
        # before the next is read.
        yield render(HISTORY_CSV_COLUMNS)
        while page is not None:
            for entry in page.entries:
                yield render(_history_cells(entry))
            cursor, page = page.cursor, None
            if cursor is not None:
                page = billing.history(mandate, limit=page_size, cursor=cursor, **filters)

    return lines(first)


def usage_csv_header(keys: Sequence[str], currencies: Sequence[str]) -> list[str]:
    """The header of a usage report export: the group keys, the totals, one
    ``provider_cost_<CURRENCY>`` column per provider currency, the billed amount."""
    return [
        *keys,
        *USAGE_CSV_TOTALS,
        *(f"provider_cost_{cur}" for cur in currencies),
        "amount",
        "currency",
    ]


def iter_usage_report_csv(
    billing: LedgerReads,
    mandate: str,
    *,
    group_by: Sequence[str] = ("day",),
    spreadsheet_safe: bool = True,
    **filters: Unpack[UsageFilters],
) -> Iterator[str]:
    """A usage report as CSV lines, header first.

    The report is computed before this returns (so a bad argument raises
    here). A period is written as the date its bucket starts (``YYYY-MM-DD``,
    UTC midnight); a group without a cost in some currency leaves that cell
    empty.
    """
    rows = usage_report(billing, mandate, group_by=group_by, **filters)
    keys = _check_group_by(group_by)
    currencies = sorted({cur for r in rows for cur in r.provider_cost})
    render = _line_writer(spreadsheet_safe)

    def lines() -> Iterator[str]:
        yield render(usage_csv_header(keys, currencies))
        for r in rows:
            values = [
                v.date().isoformat() if isinstance(v, datetime) else v for v in r.keys.values()
            ]
            yield render(
                [
                    *values,
                    r.calls,
                    r.input_tokens,
                    r.output_tokens,
                    r.cache_read_tokens,
                    r.cache_write_tokens,
                    *(r.provider_cost.get(cur) for cur in currencies),
                    r.amount,
                    r.currency,
                ]
            )

    return lines()


__all__ = [
    "GROUP_KEYS",
    "HISTORY_CSV_COLUMNS",
    "PERIOD_KEYS",
    "CsvLines",
    "GroupBy",
    "TextOut",
    "UsageRow",
    "UserBalance",
    "balances_for_user",
    "iter_history_csv",
    "iter_usage_report_csv",
    "usage_csv_header",
    "usage_report",
    "write_lines",
]
