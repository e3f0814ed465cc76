"""The ledger over HTTP: mandates, users, members, credits, checks, estimates,
holds, captures, releases, usage records, accounts, balances, history and verify."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from aibill.api import schemas as s
from aibill.api.deps import Key, Ledger, OptionalKey
from aibill.domain.batch import UsageRecord
from aibill.domain.model import (
    Balance,
    CheckResult,
    Drift,
    Entry,
    Hold,
    Mandate,
    Member,
    Page,
)
from aibill.domain.money import to_micros
from aibill.domain.prices import Charge
from aibill.domain.usage import Usage

router = APIRouter(prefix="/v1")
REPLAYED = "Idempotent-Replayed"


def _replayed(response: Response, result: Hold | Entry) -> None:
    response.headers[REPLAYED] = "true" if result.replayed else "false"


def _count(request: Request, event: str, result: Hold | Entry) -> None:
    """Count what the ledger did (a replay did nothing, so it is not counted)."""
    if result.replayed:
        return
    m = request.app.state.metrics
    if event != "usage":
        m.holds.labels(event).inc()
    if isinstance(result, Entry):
        m.captured.labels(result.currency).inc(to_micros(result.amount, allow_zero=True))


def _usage(body: s.UsageIn | None) -> Usage | None:
    return None if body is None else Usage(**body.model_dump())


@router.post("/mandates", status_code=status.HTTP_201_CREATED, tags=["mandates"])
def create_mandate(body: s.MandateIn, billing: Ledger) -> Mandate:
    """Create a mandate (system admins). The same call again returns it."""
    return billing.create_mandate(body.id, billing_model=body.billing_model, currency=body.currency)


@router.get("/mandates", tags=["mandates"])
def mandates(billing: Ledger) -> list[Mandate]:
    """The mandates this key may see, by name: every one for a system admin, its
    own for a mandate's key."""
    return billing.mandates()


@router.get("/mandates/{mandate}", tags=["mandates"])
def get_mandate(mandate: str, billing: Ledger) -> Mandate:
    return billing.get_mandate(mandate)


@router.put("/mandates/{mandate}/billing-model", tags=["mandates"])
def set_billing_model(mandate: str, body: s.BillingModelIn, billing: Ledger) -> Mandate:
    """Change how the mandate is billed (admins); the same model again changes
    nothing. 409 ``holds_in_flight`` while any hold is pending."""
    return billing.set_billing_model(mandate, body.billing_model)


@router.post("/users", status_code=status.HTTP_201_CREATED, tags=["users"])
def add_user(body: s.UserIn, billing: Ledger) -> dict[str, str]:
    """Register a user identity (idempotent)."""
    return {"id": billing.add_user(body.id)}


@router.get("/users", tags=["users"])
def users(billing: Ledger) -> list[str]:
    """Every registered user identity, by name (system admins)."""
    return billing.users()


@router.get("/mandates/{mandate}/members", tags=["users"])
def members(mandate: str, billing: Ledger) -> list[Member]:
    """The members of the mandate with their roles, by user name."""
    return billing.members(mandate)


@router.post("/mandates/{mandate}/members", status_code=status.HTTP_201_CREATED, tags=["users"])
def add_member(mandate: str, body: s.MemberIn, billing: Ledger) -> dict[str, Any]:
    """Make a user a member of the mandate, with a role (``member`` by default).
    Someone already a member is given the role if they lack it; ``roles`` is
    what they hold afterwards."""
    roles = billing.add_member(mandate, body.user, role=body.role)
    return {"mandate": mandate, "user": body.user, "role": body.role, "roles": roles}


@router.post("/mandates/{mandate}/credits", status_code=status.HTTP_201_CREATED, tags=["money"])
def credit(mandate: str, body: s.CreditIn, billing: Ledger, key: Key, response: Response) -> Entry:
    """Add money to the account the billing model names (admins)."""
    entry = billing.credit(
        mandate,
        body.amount,  # type: ignore[arg-type]  # a decimal string, taken exactly
        user=body.user,
        reason=body.reason,
        description=body.description,
        corrects=body.corrects,
        idempotency_key=key,
    )
    _replayed(response, entry)
    return entry


@router.post("/mandates/{mandate}/check", tags=["calls"])
def check(mandate: str, body: s.CheckIn, billing: Ledger) -> CheckResult:
    """May a call costing up to ``estimate`` start now? Changes nothing.

    Instead of ``estimate``, give ``provider``, ``model``, ``input_tokens`` and
    ``max_output_tokens``: the call is priced as a hold would price it, and the
    answer's ``estimate`` is that price. A refusal is an answer here
    (``allowed: false`` with its ``reason``); placing the hold refuses with an
    error."""
    return billing.check(
        mandate,
        estimate=body.estimate,  # type: ignore[arg-type]  # a decimal string, taken exactly
        user=body.user,
        provider=body.provider,
        model=body.model,
        input_tokens=body.input_tokens,
        max_output_tokens=body.max_output_tokens,
        feature_instance=body.feature_instance,
    )


@router.post("/mandates/{mandate}/estimate", tags=["calls"])
def estimate(mandate: str, body: s.EstimateIn, billing: Ledger) -> Charge:
    """The upper bound of a call's cost, priced, converted and marked up."""
    return billing.estimate(
        mandate,
        provider=body.provider,
        model=body.model,
        input_tokens=body.input_tokens,
        max_output_tokens=body.max_output_tokens,
        at=body.at,
    )


@router.post("/mandates/{mandate}/holds", status_code=status.HTTP_201_CREATED, tags=["calls"])
def hold(
    mandate: str,
    body: s.HoldIn,
    billing: Ledger,
    key: Key,
    request: Request,
    response: Response,
) -> Hold:
    """Reserve an amount, or the estimate of a call, before it starts."""
    result = billing.hold(
        mandate,
        amount=body.amount,  # type: ignore[arg-type]
        user=body.user,
        provider=body.provider,
        model=body.model,
        input_tokens=body.input_tokens,
        max_output_tokens=body.max_output_tokens,
        feature_code=body.feature_code,
        feature_instance=body.feature_instance,
        workflow_id=body.workflow_id,
        ttl_s=body.ttl_s,
        metadata=body.metadata,
        idempotency_key=key,
    )
    _replayed(response, result)
    _count(request, "placed", result)
    return result


@router.get("/mandates/{mandate}/holds", tags=["calls"])
def open_holds(
    mandate: str, billing: Ledger, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[Hold]:
    """The holds still in flight (pending), newest first, at most ``limit``."""
    return billing.open_holds(mandate, limit=limit)


@router.get("/holds/{hold_id}", tags=["calls"])
def get_hold(hold_id: str, billing: Ledger) -> Hold:
    return billing.get_hold(hold_id)


@router.post("/holds/{hold_id}/capture", tags=["calls"])
def capture(
    hold_id: str,
    body: s.CaptureIn,
    billing: Ledger,
    key: OptionalKey,
    request: Request,
    response: Response,
) -> Entry:
    """Post the call's real cost (an amount, or its usage priced now) and free the hold."""
    entry = billing.capture(
        hold_id,
        amount=body.amount,  # type: ignore[arg-type]
        usage=_usage(body.usage),
        description=body.description,
        idempotency_key=key,
    )
    _replayed(response, entry)
    _count(request, "captured", entry)
    return entry


@router.post("/holds/{hold_id}/release", tags=["calls"])
def release(
    hold_id: str, billing: Ledger, key: OptionalKey, request: Request, response: Response
) -> Hold:
    """Free a hold without a debit (the call failed or never started)."""
    result = billing.release(hold_id, idempotency_key=key)
    _replayed(response, result)
    _count(request, "released", result)
    return result


@router.post("/mandates/{mandate}/usage", status_code=status.HTTP_201_CREATED, tags=["calls"])
def record_usage(
    mandate: str,
    body: s.UsageRecordIn,
    billing: Ledger,
    key: Key,
    request: Request,
    response: Response,
) -> Entry:
    """Post a debit without a hold: an amount, usage priced now, or a provider
    cost converted and marked up."""
    entry = billing.record_usage(mandate, idempotency_key=key, **_usage_fields(body))
    _replayed(response, entry)
    _count(request, "usage", entry)
    return entry


@router.post("/usage/batch", tags=["calls"])
def record_usage_batch(body: s.UsageBatchIn, billing: Ledger, request: Request) -> s.UsageBatchOut:
    """Post up to 1,000 usage records, each with its own mandate and idempotency
    key, in one transaction. The answer has one result per record, in order:
    ``{"entry": ...}`` (``entry.replayed`` for a key already used), or
    ``{"error": {"code", "message", "details"}}``, the problem a single record
    would have met. A refused record never fails another; sending the whole
    batch again posts nothing twice."""
    outcomes = billing.record_usage_batch([_record(r) for r in body.records])
    for outcome in outcomes:
        if outcome.entry is not None:
            _count(request, "usage", outcome.entry)
    return s.UsageBatchOut(
        results=[
            s.RecordResult(entry=o.entry)
            if o.error is None
            else s.RecordResult(error=o.error.to_dict())
            for o in outcomes
        ]
    )


def _record(body: s.UsageBatchRecordIn) -> UsageRecord:
    return UsageRecord(body.mandate, body.idempotency_key, **_usage_fields(body))


def _usage_fields(body: s.UsageRecordIn) -> dict[str, Any]:
    """A usage record's fields as ``record_usage`` and ``UsageRecord`` take them."""
    fields = body.model_dump(exclude={"usage", "mandate", "idempotency_key"})
    return {**fields, "usage": _usage(body.usage)}


@router.get("/mandates/{mandate}/balance", tags=["money"])
def balance(mandate: str, billing: Ledger, user: str | None = None) -> Balance:
    return billing.balance(mandate, user=user)


@router.get("/mandates/{mandate}/accounts", tags=["money"])
def accounts(mandate: str, billing: Ledger) -> list[Balance]:
    """Every account of the mandate (the pool and the users' wallets), by name."""
    return billing.accounts(mandate)


@router.get("/mandates/{mandate}/entries", tags=["money"])
def history(
    mandate: str,
    billing: Ledger,
    filters: Annotated[s.HistoryQuery, Query()],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> Page:
    """The ledger's entries, newest first; pass ``cursor`` back for the next page."""
    return billing.history(mandate, limit=limit, cursor=cursor, **filters.filters())


@router.get("/verify", tags=["money"])
def verify_all(billing: Ledger) -> list[Drift]:
    """Recompute every account of every mandate (system admins)."""
    return billing.verify()


@router.get("/mandates/{mandate}/verify", tags=["money"])
def verify(mandate: str, billing: Ledger) -> list[Drift]:
    """Recompute the mandate's accounts from their entries: an empty list when sound."""
    return billing.verify(mandate)
