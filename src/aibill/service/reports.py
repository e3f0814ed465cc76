"""Reports: a user's balances across mandates, usage totals, and CSV exports.

Everything here only reads. A report is computed in one read transaction (one
snapshot); a CSV export of history reads page by page, so its memory stays
flat however long the history is.

The public entry points are methods of :class:`~aibill.service.billing.Billing`
(``balances_for_user``, ``usage_report``, ``export_history_csv``,
``iter_history_csv``, ``export_usage_report_csv``, ``iter_usage_report_csv``),
done by :class:`aibill.service.reads.Reads`, which calls the functions below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol, TextIO, TypeVar, Unpack

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.csvcell import neutralize
from aibill.domain.model import (
    BillingModel,
    Entry,
    HistoryFilters,
    Page,
    UsageFilters,
    check_name,
)
from aibill.domain.money import from_micros
from aibill.domain.reports import (
    GROUP_KEYS,
    PERIOD_KEYS,
    GroupBy,
    KeyValue,
    UsageRow,
    UserBalance,
    report_parts,
    write_lines,
)
from aibill.domain.text import check_searchable
from aibill.domain.times import check_optional_time
from aibill.service.context import Context
from aibill.store import reports as store_reports

T = TypeVar("T")


class LedgerReads(Protocol):
    """What a history export reads through: the ledger's ``history`` pages
    (``aibill.service.billing.Billing`` is one). A protocol, so that this
    module needs nothing from the modules that call it."""

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
_PICO_PER_UNIT = 10**12

CsvLines = Iterator[str]
TextOut = TextIO


# ------------------------------------------------------------------- balances


def balances_for_user(cx: Context, user: str) -> list[UserBalance]:
    """Every mandate ``user`` is a member of, with the balance of the account its
    billing model names for them, sorted by mandate. Read in one snapshot."""
    check_name(user, "user")

    def work(conn: Connection) -> list[UserBalance]:
        if not store_reports.user_known(conn, user):
            raise e.UnknownUser(user)
        rows = store_reports.user_accounts(conn, user)
        overdue: dict[tuple[str, str], int] = {}
        if rows:
            mandate_ids = [r.mandate_id for r in rows]
            overdue = store_reports.overdue_holds(conn, mandate_ids, user, cx.now())
        return [_user_balance(r, user, overdue) for r in rows]

    return cx.read(work)


def _user_balance(row: Any, user: str, overdue: Mapping[tuple[str, str], int]) -> UserBalance:
    """One row of ``balances_for_user``; holds past their time no longer count as pending."""
    if row.account_id is None:
        raise e.UnknownAccount(
            f"Mandate {row.mandate_id!r} has no account {row.account!r}.", account=row.account
        )
    balance = rules.balance(row.credits_posted, row.debits_posted)
    pending = row.debits_pending - overdue.get((row.mandate_id, row.account), 0)
    return UserBalance(
        mandate=row.mandate_id,
        user=user,
        billing_model=BillingModel(row.billing_model),
        account=row.account,
        currency=row.currency,
        balance=from_micros(balance),
        available=from_micros(rules.available(balance, pending, row.overdraft_limit)),
        pending=from_micros(pending),
    )


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


def _check_filters(filters: Mapping[str, str | None]) -> dict[str, str]:
    """The filters given (not None), each checked as a searchable text."""
    given = {name: value for name, value in filters.items() if value is not None}
    for name, value in given.items():
        check_searchable(value, name, max_length=MAX_FILTER_LENGTH)
    return given


def _as_utc(value: object) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
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
    cx: Context,
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
    filters = _check_filters(
        {
            "user": user,
            "provider": provider,
            "model": model,
            "feature_code": feature_code,
            "feature_instance": feature_instance,
            "workflow_id": workflow_id,
        }
    )

    def work(conn: Connection) -> tuple[str, Sequence[Any]]:
        op = cx.op(conn, mandate)
        return op.currency, _totals(conn, mandate, keys, filters, since, until)

    currency, rows = cx.read(work)
    groups = _groups(keys, rows)
    return [
        _usage_row(keys, values, g, currency)
        for values, g in sorted(groups.items(), key=lambda item: _sort_key(item[0]))
    ]


def _totals(
    conn: Connection,
    mandate: str,
    keys: tuple[str, ...],
    filters: Mapping[str, str],
    since: datetime | None,
    until: datetime | None,
) -> list[Any]:
    """The usage totals' rows (one snapshot): whole UTC days from the smallest
    daily rollup that holds the report's keys and filters, and the partial
    days at either end from the entries; from the entries alone when no
    rollup holds them. A group may come in several rows; :func:`_groups` adds
    them up."""
    table = store_reports.rollup_for(keys, filters)
    if table is None:
        return list(store_reports.usage_totals(conn, mandate, keys, filters, since, until))
    parts = report_parts(since, until)
    rows: list[Any] = []
    if parts.days is not None:
        rows += store_reports.rollup_totals(conn, table, mandate, keys, filters, parts.days)
    for start, end in parts.edges:
        rows += store_reports.usage_totals(conn, mandate, keys, filters, start, end)
    return rows


def _groups(
    keys: tuple[str, ...], rows: Sequence[Any]
) -> dict[tuple[KeyValue, ...], dict[str, Any]]:
    """The totals of each group: a group's rows (one per provider currency) added
    up, the provider cost kept per currency in pico-units."""
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
            cost = int(r.cost_hi) * store_reports.PICO_PER_MICRO + int(r.cost_lo)
            g["cost"][r.provider_currency] = g["cost"].get(r.provider_currency, 0) + cost
    return groups


def _usage_row(
    keys: tuple[str, ...], values: tuple[KeyValue, ...], g: Mapping[str, Any], currency: str
) -> UsageRow:
    return UsageRow(
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


# ------------------------------------------------------------------------ CSV


_QUOTED = re.compile('[,"\r\n]')
# Quoted too when neutralising: a spreadsheet that splits on ``;`` or tab (as
# Excel does in many locales) would otherwise start a new cell there, and that
# cell could start with a formula.
_QUOTED_SAFE = re.compile('[,"\r\n;\t]')


def _line_writer(spreadsheet_safe: bool) -> Callable[[Sequence[object]], str]:
    """Renders one row as a CSV line (RFC 4180, ``\\r\\n``). With
    ``spreadsheet_safe``, text cells go through :func:`neutralize` (numbers,
    times and flags never do: the column's type decides, not the content)."""
    needs_quotes = (_QUOTED_SAFE if spreadsheet_safe else _QUOTED).search

    def field(value: object) -> str:
        if isinstance(value, str):
            text = value if type(value) is str else str(value)
            if spreadsheet_safe:
                text = neutralize(text)
        else:
            text = _cell(value)
        if needs_quotes(text):
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
    ledger: LedgerReads,
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
    first = ledger.history(mandate, limit=page_size, **filters)
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
                page = ledger.history(mandate, limit=page_size, cursor=cursor, **filters)

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
    cx: Context,
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
    rows = usage_report(cx, mandate, group_by=group_by, **filters)
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
