"""Administration over HTTP: exchange rates, markups, custom prices, the
provider registry, roles and rules, API keys, spending limits, the audit log
and reports. Who may do what is decided by the service (see the principals)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from aibill.api import errors
from aibill.api import schemas as s
from aibill.api.deps import Ledger
from aibill.domain.access import ProviderInfo, RoleInfo, RuleInfo
from aibill.domain.audit import AuditPage
from aibill.domain.keys import ApiKey
from aibill.domain.model import Balance, SpendingLimit
from aibill.domain.prices import CustomPrice, ExchangeRate, Markup, ModelPrice
from aibill.domain.reports import UsageRow, UserBalance

router = APIRouter(prefix="/v1")
MAX_BODY_BYTES = 64 * 1024  # as the app's BodyLimit


GroupByQuery = Annotated[list[str], Query(max_length=6)]


class RateIn(s.Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "base": "USD",
                    "quote": "CHF",
                    "rate": "0.80",
                    "valid_from": "2026-01-01T00:00:00Z",
                }
            ]
        },
    )

    base: Annotated[str, Field(examples=["USD"])]
    quote: Annotated[str, Field(examples=["CHF"])]
    rate: Annotated[str, Field(pattern=r"^[0-9]{1,12}(\.[0-9]{1,12})?$", examples=["0.80"])]
    valid_from: s.Time | None = None
    source: s.Text | None = None


class MarkupIn(s.Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"percent": "20", "mandate": "acme", "provider": "openai"}]
        },
    )

    percent: Annotated[str, Field(pattern=r"^[0-9]{1,4}(\.[0-9]{1,6})?$", examples=["50"])]
    mandate: s.Name | None = None
    provider: s.Tag | None = None
    model: s.Tag | None = None


PriceText = Annotated[str, Field(pattern=r"^[0-9]{1,7}(\.[0-9]{1,12})?$", examples=["2.50"])]


class PriceIn(s.Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "provider": "private",
                    "model": "tuned-1",
                    "input_mtok": "1.00",
                    "output_mtok": "2.00",
                    "mandate": "acme",
                }
            ]
        },
    )

    provider: s.Tag
    model: s.Tag
    input_mtok: PriceText
    output_mtok: PriceText
    cache_read_mtok: PriceText | None = None
    cache_write_mtok: PriceText | None = None
    per_request: PriceText | None = None
    currency: str = "USD"
    valid_from: s.Time | None = None
    mandate: s.Name | None = None
    output_limit: Annotated[int, Field(ge=1, le=10**9)] | None = None


class ProviderIn(s.Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"provider": "openai", "display_name": "OpenAI", "enabled": True}]
        },
    )

    provider: s.Tag
    display_name: s.Text | None = None
    enabled: bool = True


class ProviderPatch(s.Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": False}]})

    enabled: bool


class RuleIn(s.Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "role": "viewer",
                    "context": "resource",
                    "item": "resource.aicore.mistral",
                    "permissions": ["view"],
                }
            ]
        },
    )

    role: s.Name
    context: Annotated[str, Field(examples=["resource"])]
    item: Annotated[str, Field(max_length=200, examples=["resource.aicore.openai"])]
    permissions: Annotated[list[str], Field(min_length=1, max_length=4, examples=[["view"]])]


class KeyIn(s.Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"user": "gateway", "scopes": ["billing:use"], "name": "chat gateway"}]
        },
    )

    user: s.Name
    scopes: Annotated[
        list[str], Field(min_length=1, max_length=3, default_factory=lambda: ["billing:use"])
    ]
    expires_at: s.Time | None = None
    name: s.Name | None = None


class CreatedKeyOut(s.Body):
    secret: str = Field(description="The whole key. Shown this once; aibill keeps only a hash.")
    key: dict[str, Any]


class OverdraftIn(s.Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"amount": "20.00", "user": None}]}
    )

    amount: Annotated[str, Field(pattern=r"^[0-9]{1,13}(\.[0-9]{1,6})?$")]
    user: s.Name | None = None


class RoleDefIn(s.Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"role": "auditor", "description": "reads the books"}]},
    )

    role: s.Name
    description: s.Text | None = None


class UserRef(s.Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"user": "root"}]})

    user: s.Name


class LimitIn(s.Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": "50.00", "user": "alice", "period": "month"}]},
    )

    amount: s.Money | None = Field(description="null removes the limit")
    user: s.Name | None = None
    feature_instance: s.Tag | None = None
    period: Annotated[str, Field(examples=["month"])] = "month"


# ------------------------------------------------------------------- pricing


@router.post("/exchange-rates", status_code=status.HTTP_201_CREATED, tags=["pricing"])
def set_exchange_rate(body: RateIn, billing: Ledger) -> ExchangeRate:
    """Set a rate from a validity start on (system admins)."""
    return billing.pricing.set_exchange_rate(
        body.base, body.quote, body.rate, valid_from=body.valid_from, source=body.source
    )


@router.post("/exchange-rates/import", tags=["pricing"], response_model=dict[str, int])
async def import_exchange_rates(request: Request, billing: Ledger) -> Any:
    """Import rates from a CSV body (``base,quote,rate,valid_from``), all or nothing."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:  # sent without a length, so the middleware let it in
        return errors.problem(
            413,
            "request_too_large",
            "Request too large",
            f"A request body may have at most {MAX_BODY_BYTES} bytes; import the rates in parts.",
        )
    lines = body.decode("utf-8", errors="replace").splitlines()
    # The import writes to the database: off the event loop, as the other routes run.
    return {"imported": await run_in_threadpool(billing.pricing.import_exchange_rates, lines)}


@router.get("/exchange-rates", tags=["pricing"])
def exchange_rates(
    billing: Ledger, base: str | None = None, quote: str | None = None
) -> list[ExchangeRate]:
    return billing.pricing.exchange_rates(base, quote)


@router.get("/exchange-rates/{base}/{quote}", tags=["pricing"])
def exchange_rate(
    base: str, quote: str, billing: Ledger, at: s.Time | None = None
) -> dict[str, str]:
    """The rate in force at ``at`` (default: now); 404 ``missing_exchange_rate`` if none."""
    when = at or datetime.now(UTC)
    rate = billing.pricing.exchange_rate(base, quote, when)
    return {"base": base, "quote": quote, "rate": str(rate), "at": when.isoformat()}


@router.get("/markups/effective", tags=["pricing"])
def markup_for(
    billing: Ledger,
    mandate: str | None = None,
    provider: str | None = None,
    model: str | None = None,
) -> dict[str, str]:
    """The markup that applies to a call: the most specific one set, else 50 %."""
    return {"percent": str(billing.pricing.markup_for(mandate, provider, model))}


@router.post("/markups", tags=["pricing"])
def set_markup(body: MarkupIn, billing: Ledger) -> Markup:
    """Set a markup for the platform, a mandate, a provider or a model."""
    return billing.pricing.set_markup(
        body.percent, mandate=body.mandate, provider=body.provider, model=body.model
    )


@router.get("/markups", tags=["pricing"])
def markups(billing: Ledger, mandate: str | None = None) -> list[Markup]:
    return billing.pricing.markups(mandate)


@router.post("/prices", status_code=status.HTTP_201_CREATED, tags=["pricing"])
def set_custom_price(body: PriceIn, billing: Ledger) -> CustomPrice:
    """Price a model the catalog lacks, or override it, from a validity start."""
    return billing.pricing.set_custom_price(
        body.provider,
        body.model,
        input_mtok=body.input_mtok,
        output_mtok=body.output_mtok,
        cache_read_mtok=body.cache_read_mtok,
        cache_write_mtok=body.cache_write_mtok,
        per_request=body.per_request,
        currency=body.currency,
        valid_from=body.valid_from,
        mandate=body.mandate,
        output_limit=body.output_limit,
    )


@router.get("/prices", tags=["pricing"])
def custom_prices(billing: Ledger, mandate: str | None = None) -> list[CustomPrice]:
    return billing.pricing.custom_prices(mandate)


@router.get("/prices/{provider}/{model:path}", tags=["pricing"])
def model_price(
    provider: str,
    model: str,
    billing: Ledger,
    mandate: str | None = None,
    at: s.Time | None = None,
) -> ModelPrice:
    """The prices in force for one model at ``at`` (default: now): the mandate's
    custom price, else the platform's, else the catalog's; 404 ``unknown_model``
    when none knows it. The model may contain ``/``."""
    return billing.pricing.model_price(provider, model, mandate=mandate, at=at)


# -------------------------------------------------------------------- access


@router.post("/providers", tags=["access"])
def register_provider(body: ProviderIn, billing: Ledger) -> ProviderInfo:
    return billing.access.register_provider(
        body.provider, display_name=body.display_name, enabled=body.enabled
    )


@router.patch("/providers/{provider}", tags=["access"])
def set_provider_enabled(provider: str, body: ProviderPatch, billing: Ledger) -> ProviderInfo:
    """Enable or disable a provider; disabling stops new holds at once."""
    return billing.access.set_provider_enabled(provider, body.enabled)


@router.get("/providers", tags=["access"])
def providers(billing: Ledger) -> list[ProviderInfo]:
    return billing.access.providers()


@router.get("/mandates/{mandate}/users/{user}/providers", tags=["access"])
def allowed_providers(mandate: str, user: str, billing: Ledger) -> list[str]:
    return billing.allowed_providers(mandate, user)


@router.get("/mandates/{mandate}/users/{user}/providers/{provider}", tags=["access"])
def is_provider_allowed(mandate: str, user: str, provider: str, billing: Ledger) -> dict[str, bool]:
    """May the user use the provider in the mandate now? ``false`` on any doubt."""
    # The listing authorizes (403 for another mandate's key) and fails closed;
    # the provider is allowed exactly when it is listed.
    return {"allowed": provider in billing.allowed_providers(mandate, user)}


@router.put("/mandates/{mandate}/users/{user}/roles/{role}", tags=["access"])
def grant_role(mandate: str, user: str, role: str, billing: Ledger) -> list[str]:
    return billing.access.grant_role(mandate, user, role)


@router.delete("/mandates/{mandate}/users/{user}/roles/{role}", tags=["access"])
def revoke_role(mandate: str, user: str, role: str, billing: Ledger) -> list[str]:
    return billing.access.revoke_role(mandate, user, role)


@router.get("/mandates/{mandate}/users/{user}/roles", tags=["access"])
def roles_of(mandate: str, user: str, billing: Ledger) -> list[str]:
    return billing.access.roles_of(mandate, user)


@router.post("/mandates/{mandate}/rules", status_code=status.HTTP_201_CREATED, tags=["access"])
def add_rule(mandate: str, body: RuleIn, billing: Ledger) -> RuleInfo:
    return billing.access.add_rule(mandate, body.role, body.context, body.item, body.permissions)


@router.get("/mandates/{mandate}/rules", tags=["access"])
def rules(mandate: str, billing: Ledger) -> list[RuleInfo]:
    return billing.access.rules(mandate)


@router.delete(
    "/mandates/{mandate}/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["access"]
)
def remove_rule(mandate: str, rule_id: str, billing: Ledger) -> None:
    billing.access.remove_rule(mandate, rule_id)


@router.delete("/markups", tags=["pricing"])
def clear_markup(
    billing: Ledger,
    mandate: str | None = None,
    provider: str | None = None,
    model: str | None = None,
) -> dict[str, bool]:
    """Remove the markup of exactly this scope, so a less specific one applies."""
    return {
        "removed": billing.pricing.clear_markup(mandate=mandate, provider=provider, model=model)
    }


@router.post("/mandates/{mandate}/roles", status_code=status.HTTP_201_CREATED, tags=["access"])
def define_role(mandate: str, body: RoleDefIn, billing: Ledger) -> RoleInfo:
    """Define a custom role in the mandate; give it rules with ``/rules``."""
    return billing.access.define_role(mandate, body.role, body.description)


@router.get("/mandates/{mandate}/roles", tags=["access"])
def custom_roles(mandate: str, billing: Ledger) -> list[RoleInfo]:
    return billing.access.custom_roles(mandate)


@router.post("/sysadmins", status_code=status.HTTP_201_CREATED, tags=["access"])
def add_sysadmin(body: UserRef, billing: Ledger) -> dict[str, str]:
    billing.access.add_sysadmin(body.user)
    return {"user": body.user}


@router.get("/sysadmins/{user}", tags=["access"])
def is_sysadmin(user: str, billing: Ledger) -> dict[str, bool]:
    return {"sysadmin": billing.access.is_sysadmin(user)}


@router.delete("/sysadmins/{user}", status_code=status.HTTP_204_NO_CONTENT, tags=["access"])
def remove_sysadmin(user: str, billing: Ledger) -> None:
    billing.access.remove_sysadmin(user)


@router.put("/mandates/{mandate}/overdraft-limit", tags=["money"])
def set_overdraft_limit(mandate: str, body: OverdraftIn, billing: Ledger) -> Balance:
    """How far the account may go below zero for holds and usage (0 by default)."""
    return billing.set_overdraft_limit(
        mandate,
        body.amount,  # type: ignore[arg-type]  # a decimal string, taken exactly
        user=body.user,
    )


# ---------------------------------------------------------------------- keys


@router.post("/mandates/{mandate}/keys", status_code=status.HTTP_201_CREATED, tags=["keys"])
def create_key(mandate: str, body: KeyIn, billing: Ledger) -> CreatedKeyOut:
    """Create an API key for a member; the secret is in this response only."""
    created = billing.keys.create_key(
        user=body.user,
        mandate=mandate,
        scopes=body.scopes,
        expires_at=body.expires_at,
        name=body.name,
    )
    return CreatedKeyOut(secret=created.secret, key=_key_json(created.info))


@router.get("/mandates/{mandate}/keys", tags=["keys"])
def list_keys(mandate: str, billing: Ledger) -> list[dict[str, Any]]:
    return [_key_json(k) for k in billing.keys.list_keys(mandate)]


@router.get("/mandates/{mandate}/keys/{key_id}", tags=["keys"])
def get_key(mandate: str, key_id: str, billing: Ledger) -> dict[str, Any]:
    return _key_json(billing.keys.get_key(key_id, mandate=mandate))


@router.post("/mandates/{mandate}/keys/{key_id}/revoke", tags=["keys"])
def revoke_key(mandate: str, key_id: str, billing: Ledger) -> dict[str, Any]:
    return _key_json(billing.keys.revoke_key(key_id, mandate=mandate))


@router.post("/keys", status_code=status.HTTP_201_CREATED, tags=["keys"])
def create_platform_key(body: KeyIn, billing: Ledger) -> CreatedKeyOut:
    """Create a system admin's key (system admins); the secret is in this response only."""
    created = billing.keys.create_key(
        user=body.user, mandate=None, scopes=body.scopes, expires_at=body.expires_at, name=body.name
    )
    return CreatedKeyOut(secret=created.secret, key=_key_json(created.info))


@router.get("/keys", tags=["keys"])
def list_platform_keys(billing: Ledger) -> list[dict[str, Any]]:
    return [_key_json(k) for k in billing.keys.list_keys(None)]


@router.get("/keys/{key_id}", tags=["keys"])
def get_platform_key(key_id: str, billing: Ledger) -> dict[str, Any]:
    return _key_json(billing.keys.get_key(key_id, mandate=None))


@router.post("/keys/{key_id}/revoke", tags=["keys"])
def revoke_platform_key(key_id: str, billing: Ledger) -> dict[str, Any]:
    return _key_json(billing.keys.revoke_key(key_id, mandate=None))


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "prefix": key.prefix,
        "mandate": key.mandate,
        "user": key.user,
        "name": key.name,
        "scopes": sorted(str(x) for x in key.scopes),
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
    }


# ---------------------------------------------------------- limits and audit


@router.put("/mandates/{mandate}/limits", tags=["limits"])
def set_limit(mandate: str, body: LimitIn, billing: Ledger) -> SpendingLimit | None:
    return billing.set_spending_limit(
        mandate,
        body.amount,  # type: ignore[arg-type]  # a decimal string, taken exactly
        user=body.user,
        feature_instance=body.feature_instance,
        period=body.period,
    )


@router.get("/mandates/{mandate}/limits", tags=["limits"])
def limits(mandate: str, billing: Ledger) -> list[SpendingLimit]:
    return billing.spending_limits(mandate)


@router.get("/mandates/{mandate}/audit", tags=["audit"])
def audit_log(
    mandate: str,
    billing: Ledger,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> AuditPage:
    return billing.audit_log(mandate, limit=limit, cursor=cursor)


@router.get("/audit", tags=["audit"])
def platform_audit_log(
    billing: Ledger,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> AuditPage:
    return billing.audit_log(None, limit=limit, cursor=cursor)


# ------------------------------------------------------------------- reports


@router.get("/users/{user}/balances", tags=["reports"])
def balances_for_user(user: str, billing: Ledger) -> list[UserBalance]:
    return billing.balances_for_user(user)


@router.get("/mandates/{mandate}/usage-report", tags=["reports"])
def usage_report(
    mandate: str,
    billing: Ledger,
    filters: Annotated[s.UsageQuery, Query()],
    group_by: GroupByQuery = ["day"],  # noqa: B006
) -> list[UsageRow]:
    return billing.usage_report(mandate, group_by=group_by, **filters.filters())


CSV: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "CSV, header first",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/mandates/{mandate}/entries.csv", tags=["reports"], response_class=Response, responses=CSV
)
def export_history(
    mandate: str,
    billing: Ledger,
    filters: Annotated[s.HistoryQuery, Query()],
    page_size: Annotated[int, Query(ge=1, le=1000)] = 1000,
    spreadsheet_safe: bool = True,
) -> StreamingResponse:
    """The mandate's entries as CSV, streamed page by page, with the history's filters.
    Text cells a spreadsheet would run as a formula (starting with ``=``, ``+``,
    ``-``, ``@``, tab or CR) get a leading ``'``; numbers never do.
    ``spreadsheet_safe=false`` writes the text as stored (for programs)."""
    lines: Iterator[str] = billing.iter_history_csv(
        mandate, page_size=page_size, spreadsheet_safe=spreadsheet_safe, **filters.filters()
    )
    return StreamingResponse(
        lines,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{mandate}-entries.csv"'},
    )


@router.get(
    "/mandates/{mandate}/usage-report.csv",
    tags=["reports"],
    response_class=Response,
    responses=CSV,
)
def export_usage_report(
    mandate: str,
    billing: Ledger,
    filters: Annotated[s.UsageQuery, Query()],
    group_by: GroupByQuery = ["day"],  # noqa: B006
    spreadsheet_safe: bool = True,
) -> StreamingResponse:
    """A usage report as CSV; text cells neutralised as in ``entries.csv``
    unless ``spreadsheet_safe=false``."""
    lines: Iterator[str] = billing.iter_usage_report_csv(
        mandate, group_by=group_by, spreadsheet_safe=spreadsheet_safe, **filters.filters()
    )
    return StreamingResponse(lines, media_type="text/csv")
