"""The dashboard's pages: overview, a mandate's accounts, transactions and
usage. Everything shown is read through the ledger acting for the signed-in
principal (``Billing.as_principal``); this module only arranges it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from aibill.domain import errors as e
from aibill.domain.model import Balance, EntryKind, HistoryFilters, Hold, Mandate
from aibill.domain.principal import Scope
from aibill.domain.reports import UsageRow
from aibill.service.billing import Billing
from aibill.web.periods import PERIODS, Period, day_range, midnight, month_start, period
from aibill.web.routing import PageNotFound, WebRoute, page
from aibill.web.security import Viewer, ViewerDep

router = APIRouter(route_class=WebRoute, include_in_schema=False)

PAGE_SIZE = 50
TREND_DAYS = 30
TOP = 8
ZERO = Decimal("0.000000")
HISTORY_FIELDS = ("user", "provider", "model", "kind", "from", "to")


def base(request: Request, viewer: Viewer, **context: Any) -> dict[str, Any]:
    """What every signed-in page shows: who is signed in, and the sign-out form."""
    return {"viewer": viewer, **context}


def visible(viewer: Viewer, mandate: str) -> Mandate:
    """The mandate, if this viewer may see it; the same "not found" otherwise,
    whether it does not exist or is another's."""
    try:
        return viewer.ledger.get_mandate(mandate)
    except (e.PermissionDenied, e.UnknownMandate, e.InvalidRequest):
        raise PageNotFound() from None


@dataclass(frozen=True, slots=True)
class Totals:
    """A mandate's accounts added up (one account in the pooled models)."""

    balance: Decimal
    available: Decimal
    pending: Decimal
    accounts: int

    @classmethod
    def of(cls, accounts: Iterable[Balance]) -> Totals:
        rows = list(accounts)
        return cls(
            balance=sum((a.balance for a in rows), ZERO),
            available=sum((a.available for a in rows), ZERO),
            pending=sum((a.pending for a in rows), ZERO),
            accounts=len(rows),
        )


def _daily(rows: Iterable[UsageRow], days: list[Any]) -> list[Decimal]:
    by_day = {r.period: r.amount for r in rows}
    return [by_day.get(d, ZERO) for d in days]


@router.get("/")
def overview(request: Request, viewer: ViewerDep) -> HTMLResponse:
    ledger = viewer.ledger
    now = ledger.clock()
    tomorrow = midnight(now.astimezone(UTC).date()) + timedelta(days=1)
    trend_days = [tomorrow - timedelta(days=TREND_DAYS - i) for i in range(TREND_DAYS)]
    cards = []
    for mandate in ledger.mandates():
        totals = Totals.of(ledger.accounts(mandate.id))
        month = ledger.usage_report(mandate.id, group_by=["month"], since=month_start(now))
        trend = _daily(
            ledger.usage_report(mandate.id, group_by=["day"], since=trend_days[0]), trend_days
        )
        cards.append(
            {
                "mandate": mandate,
                "totals": totals,
                "spend_month": sum((r.amount for r in month), ZERO),
                "trend": trend,
                "trend_total": sum(trend, ZERO),
                "trend_peak": max(trend) if trend else ZERO,
                "holds": _holds_in_flight(ledger, mandate.id)[1],
            }
        )
    return page(
        request,
        "overview.html",
        **base(request, viewer, cards=cards, month=month_start(now), trend_from=trend_days[0]),
    )


def _mandate_context(request: Request, viewer: Viewer, mandate: str, tab: str) -> dict[str, Any]:
    m = visible(viewer, mandate)
    return base(
        request,
        viewer,
        mandate=m,
        tab=tab,
        can_admin=viewer.ledger.may(Scope.ADMIN, mandate),
    )


@router.get("/m/{mandate}")
def mandate_page(request: Request, mandate: str, viewer: ViewerDep) -> HTMLResponse:
    context = _mandate_context(request, viewer, mandate, "accounts")
    accounts = viewer.ledger.accounts(mandate)
    holds, count = _holds_in_flight(viewer.ledger, mandate)
    return page(
        request,
        "mandate.html",
        **context,
        accounts=accounts,
        totals=Totals.of(accounts),
        holds=holds,
        holds_count=count,
    )


HOLDS_SHOWN = 100


def _holds_in_flight(ledger: Billing, mandate: str) -> tuple[list[Hold], str]:
    """The newest holds in flight (at most ``HOLDS_SHOWN``) and how many there
    are as a person reads it: ``"100+"`` when more are pending than are shown."""
    holds = ledger.open_holds(mandate, limit=HOLDS_SHOWN + 1)
    if len(holds) > HOLDS_SHOWN:
        return holds[:HOLDS_SHOWN], f"{HOLDS_SHOWN}+"
    return holds, str(len(holds))


# ------------------------------------------------------------- transactions


def history_filters(params: dict[str, str]) -> HistoryFilters:
    """The service's history filters from the page's query (``from``/``to`` are
    whole UTC days, both included)."""
    since, until = day_range(params.get("from", ""), params.get("to", ""))
    kind = params.get("kind") or None
    if kind is not None and kind not in {k.value for k in EntryKind}:
        raise e.InvalidRequest("kind must be credit or debit.", field="kind")
    return HistoryFilters(
        user=params.get("user") or None,
        provider=params.get("provider") or None,
        model=params.get("model") or None,
        kind=kind,
        since=since,
        until=until,
    )


def _query(request: Request) -> dict[str, str]:
    return {k: v.strip() for k, v in request.query_params.items() if v.strip()}


@router.get("/m/{mandate}/transactions")
def transactions(request: Request, mandate: str, viewer: ViewerDep) -> HTMLResponse:
    context = _mandate_context(request, viewer, mandate, "transactions")
    ledger = viewer.ledger
    params = _query(request)
    shown = {k: params.get(k, "") for k in HISTORY_FIELDS}
    members = [m.user for m in ledger.members(mandate)]
    providers = [p.provider for p in ledger.access.providers()]
    error = None
    entries: list[Any] = []
    cursor = None
    try:
        filters = history_filters(params)
        result = ledger.history(mandate, limit=PAGE_SIZE, cursor=params.get("cursor"), **filters)
        entries, cursor = result.entries, result.cursor
    except e.InvalidRequest as exc:
        error = exc
    filtered = {k: v for k, v in shown.items() if v}
    n = params.get("n", "")
    number = int(n) if n.isascii() and n.isdigit() and len(n) < 10 else 1
    return page(
        request,
        "transactions.html",
        status=422 if error else 200,
        **context,
        error=error,
        entries=entries,
        filters=shown,
        filtered=bool(filtered),
        members=members,
        providers=providers,
        kinds=[k.value for k in EntryKind],
        page_number=number,
        older=(
            "?" + urlencode({**filtered, "cursor": cursor, "n": number + 1}) if cursor else None
        ),
        newest="?" + urlencode(filtered) if "cursor" in params else None,
        csv_url=f"/m/{mandate}/transactions.csv" + ("?" + urlencode(filtered) if filtered else ""),
    )


@router.get("/m/{mandate}/transactions.csv")
def transactions_csv(request: Request, mandate: str, viewer: ViewerDep) -> StreamingResponse:
    visible(viewer, mandate)
    filters = history_filters(_query(request))
    lines: Iterator[str] = viewer.ledger.iter_history_csv(mandate, **filters)
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{mandate}-transactions.csv"',
            "Cache-Control": "no-store",
        },
    )


# -------------------------------------------------------------------- usage


def _ranked(rows: list[UsageRow], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Groups by billed amount, largest first, the rest folded into "others"."""
    ordered = sorted(rows, key=lambda r: r.amount, reverse=True)
    out = [
        {
            "label": " / ".join("(none)" if r.keys[k] is None else str(r.keys[k]) for k in keys),
            "amount": r.amount,
            "calls": r.calls,
            "tokens": r.input_tokens + r.output_tokens,
        }
        for r in ordered[:TOP]
    ]
    rest = ordered[TOP:]
    if rest:
        out.append(
            {
                "label": f"{len(rest)} others",
                "amount": sum((r.amount for r in rest), ZERO),
                "calls": sum(r.calls for r in rest),
                "tokens": sum(r.input_tokens + r.output_tokens for r in rest),
            }
        )
    return out


def _per_day(rows: list[UsageRow], span: Period) -> dict[str, Any]:
    """Cost per day stacked by provider: the days, and one series per provider."""
    days = span.days
    series: dict[str, dict[Any, Decimal]] = defaultdict(dict)
    for r in rows:
        name = "(none)" if r.keys["provider"] is None else str(r.keys["provider"])
        series[name][r.period] = r.amount
    totals = {name: sum(v.values(), ZERO) for name, v in series.items()}
    names = sorted(series, key=lambda n: totals[n], reverse=True)
    return {
        "days": days,
        "series": [
            {"name": n, "values": [series[n].get(d, ZERO) for d in days], "total": totals[n]}
            for n in names
        ],
        "day_totals": [sum((series[n].get(d, ZERO) for n in names), ZERO) for d in days],
    }


@router.get("/m/{mandate}/usage")
def usage(request: Request, mandate: str, viewer: ViewerDep) -> HTMLResponse:
    context = _mandate_context(request, viewer, mandate, "usage")
    ledger = viewer.ledger
    params = _query(request)
    error = None
    key = params.get("period", "month")
    try:
        span = period(key, params.get("from", ""), params.get("to", ""), ledger.clock())
    except e.InvalidRequest as exc:
        error = exc
        span = period("month", "", "", ledger.clock())

    def report(*group_by: str) -> list[UsageRow]:
        return ledger.usage_report(
            mandate, group_by=list(group_by), since=span.since, until=span.until
        )

    daily = _per_day(report("day", "provider"), span)
    models = _ranked(report("provider", "model"), ("provider", "model"))
    users = _ranked(report("user"), ("user",))
    features = _ranked(report("feature_code"), ("feature_code",))
    total = sum(daily["day_totals"], ZERO)
    currency = context["mandate"].currency
    chart = {
        "currency": currency,
        "days": [d.strftime("%Y-%m-%d") for d in daily["days"]],
        "providers": [
            {"name": s["name"], "values": [str(v) for v in s["values"]]} for s in daily["series"]
        ],
        "models": [{"label": r["label"], "amount": str(r["amount"])} for r in models],
        "users": [{"label": r["label"], "amount": str(r["amount"])} for r in users],
        "features": [{"label": r["label"], "amount": str(r["amount"])} for r in features],
    }
    return page(
        request,
        "usage.html",
        status=422 if error else 200,
        **context,
        error=error,
        periods=PERIODS,
        span=span,
        params=params,
        daily=daily,
        models=models,
        users=users,
        features=features,
        total=total,
        calls=sum(r["calls"] for r in users),
        chart=chart,
        has_usage=any(r["calls"] for r in users),
        busiest=max(
            zip(daily["days"], daily["day_totals"], strict=True),
            key=lambda pair: pair[1],
            default=None,
        )
        if total > 0
        else None,
    )


fallback = APIRouter(route_class=WebRoute, include_in_schema=False)
"""Included last: what no other dashboard route answers."""


@fallback.get("/m/{mandate}/{rest:path}")
def no_such_page(request: Request, mandate: str, rest: str, viewer: ViewerDep) -> HTMLResponse:
    """Any other path under a mandate: the dashboard's own "not found" page."""
    raise PageNotFound()
