"""A mandate's administration: top-ups, billing model, markup, spending limits,
members and roles, provider permissions, custom prices, exchange rates, API
keys and the audit log.

The page offers a form only when the service says the viewer may use it
(``Billing.may``); every form posts to an action that calls the service as
the viewer, so a forced post is refused by the service (and the page says
so, with the error's message and code). Each form carries the session's CSRF
token; the top-up form also carries an idempotency key drawn when the form
was rendered, so a double submit credits once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from aibill.api.errors import status_of
from aibill.domain import errors as e
from aibill.domain.model import BillingModel
from aibill.domain.money import to_decimal
from aibill.domain.permissions import BUILTIN_RULES, MANDATE_ROLES, Context, Permission
from aibill.domain.principal import Scope
from aibill.service.billing import CREDIT_REASONS, PERIODS, Billing
from aibill.web.pages import base, visible
from aibill.web.periods import midnight, parse_day
from aibill.web.routing import WebRoute, page, redirect
from aibill.web.security import Form, FormDep, PostedViewer, Viewer, ViewerDep

router = APIRouter(route_class=WebRoute, include_in_schema=False)
AUDIT_PAGE = 25

NOTICES = {
    "credit.applied": "Credit applied.",
    "credit.replayed": "Already applied: this top-up was submitted before, and credited once.",
    "billing_model.set": "Billing model changed.",
    "markup.set": "Markup saved.",
    "markup.cleared": "Markup removed; the next broader one applies.",
    "limit.set": "Spending limit saved.",
    "limit.removed": "Spending limit removed.",
    "member.added": "Member added.",
    "role.granted": "Role granted.",
    "role.revoked": "Role revoked.",
    "rule.added": "Permission rule added.",
    "rule.removed": "Permission rule removed.",
    "price.set": "Custom price saved.",
    "rate.set": "Exchange rate saved.",
    "key.revoked": "API key revoked; its sessions have ended.",
}


def new_idempotency_key() -> str:
    return f"web-credit-{secrets.token_hex(16)}"


def admin_context(viewer: Viewer, mandate: str) -> dict[str, Any]:
    """Everything the administration page shows, read as the viewer."""
    ledger = viewer.ledger
    m = visible(viewer, mandate)
    if not ledger.may(Scope.ADMIN, mandate):
        raise e.PermissionDenied(
            "Administration needs the admin role in this mandate (and a key with the"
            " billing:admin scope)."
        )
    members = ledger.members(mandate)
    audit_cursor = None
    return {
        "mandate": m,
        "tab": "admin",
        "can_admin": True,
        "can_platform": ledger.may(Scope.ADMIN, None),
        "accounts": ledger.accounts(mandate),
        "members": members,
        "allowed": {mb.user: ledger.allowed_providers(mandate, mb.user) for mb in members},
        "limits": ledger.spending_limits(mandate),
        "markups": ledger.pricing.markups(mandate),
        "markup_default": ledger.pricing.markup_for(mandate, None, None),
        "prices": ledger.pricing.custom_prices(mandate),
        "rates": ledger.pricing.exchange_rates(),
        "rules": ledger.access.rules(mandate),
        "builtin_rules": BUILTIN_RULES,
        "custom_roles": ledger.access.custom_roles(mandate),
        "providers": ledger.access.providers(),
        "keys": ledger.keys.list_keys(mandate),
        "now": ledger.clock(),
        "audit_cursor": audit_cursor,
        "billing_models": [b.value for b in BillingModel],
        "credit_reasons": CREDIT_REASONS,
        "limit_periods": PERIODS,
        "mandate_roles": MANDATE_ROLES,
        "contexts": [c.value for c in Context],
        "permissions": [p.value for p in Permission],
        "scopes": [s.value for s in Scope],
        "idempotency_key": new_idempotency_key(),
    }


def render_admin(
    request: Request,
    viewer: Viewer,
    mandate: str,
    *,
    status: int = 200,
    section: str | None = None,
    error: e.AibillError | None = None,
    values: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    context = admin_context(viewer, mandate)
    params = request.query_params
    audit = viewer.ledger.audit_log(mandate, limit=AUDIT_PAGE, cursor=params.get("audit") or None)
    notice = NOTICES.get(params.get("notice", ""))
    if values and section == "credit" and values.get("idempotency_key"):
        # The same key again: a retry of this very top-up must not credit twice.
        context["idempotency_key"] = values["idempotency_key"]
    return page(
        request,
        "admin.html",
        status=status,
        **base(request, viewer),
        **context,
        audit=audit,
        audit_older="?" + urlencode({"audit": audit.cursor}) + "#audit" if audit.cursor else None,
        notice=notice,
        ref=params.get("ref"),
        section=section,
        error=error,
        values=values or {},
        **extra,
    )


@router.get("/m/{mandate}/admin")
def admin_page(request: Request, mandate: str, viewer: ViewerDep) -> Response:
    return render_admin(request, viewer, mandate)


def _done(mandate: str, notice: str, section: str, ref: str | None = None) -> Response:
    query = {"notice": notice, **({"ref": ref} if ref else {})}
    return redirect(f"/m/{mandate}/admin?{urlencode(query)}#{section}")


@dataclass(frozen=True, slots=True)
class Change:
    """One submitted administrative form: who sent it, for which mandate, what."""

    request: Request
    viewer: Viewer
    mandate: str
    form: Form

    @property
    def ledger(self) -> Billing:
        return self.viewer.ledger

    def get(self, name: str) -> str:
        return self.form.get(name)

    def optional(self, name: str) -> str | None:
        return self.form.optional(name)

    def amount(self, name: str = "amount") -> Decimal:
        return to_decimal(self.form.get(name), field=name)

    def day(self, name: str) -> datetime | None:
        found = parse_day(self.form.get(name), name)
        return midnight(found) if found else None

    def done(self, notice: str, section: str, ref: str | None = None) -> Response:
        return _done(self.mandate, notice, section, ref)


Action = Callable[[Change], Response]


def action(path: str, section: str) -> Callable[[Action], Action]:
    """Register ``POST /m/{mandate}/admin/<path>``: the change runs as the viewer
    (after the CSRF check); a refusal shows the page again, at ``section``,
    with the error and what was typed."""

    def register(work: Action) -> Action:
        def endpoint(
            request: Request, mandate: str, viewer: PostedViewer, form: FormDep
        ) -> Response:
            visible(viewer, mandate)
            try:
                return work(Change(request, viewer, mandate, form))
            except e.AibillError as exc:
                if not viewer.ledger.may(Scope.ADMIN, mandate):
                    raise  # no administration page to show it on: an error page with its code
                return render_admin(
                    request,
                    viewer,
                    mandate,
                    status=status_of(exc),
                    section=section,
                    error=exc,
                    values=form.values(),
                )

        router.add_api_route(
            f"/m/{{mandate}}/admin/{path}", endpoint, methods=["POST"], name=f"admin-{path}"
        )
        return work

    return register


@action("credit", "credit")
def credit(c: Change) -> Response:
    entry = c.ledger.credit(
        c.mandate,
        c.amount(),
        user=c.optional("user"),
        reason=c.get("reason") or "payment",
        description=c.optional("description"),
        idempotency_key=c.get("idempotency_key"),
    )
    return c.done("credit.replayed" if entry.replayed else "credit.applied", "credit", entry.id)


@action("billing-model", "billing-model")
def billing_model(c: Change) -> Response:
    c.ledger.set_billing_model(c.mandate, c.get("billing_model"))
    return c.done("billing_model.set", "billing-model")


@action("markup", "markup")
def markup(c: Change) -> Response:
    provider, model = c.optional("provider"), c.optional("model")
    if c.get("clear"):
        c.ledger.pricing.clear_markup(mandate=c.mandate, provider=provider, model=model)
        return c.done("markup.cleared", "markup")
    c.ledger.pricing.set_markup(c.get("percent"), mandate=c.mandate, provider=provider, model=model)
    return c.done("markup.set", "markup")


@action("limit", "limits")
def limit(c: Change) -> Response:
    subject = c.optional("subject")
    by_user = c.get("scope") != "feature_instance"
    remove = bool(c.get("remove"))
    c.ledger.set_spending_limit(
        c.mandate,
        None if remove else c.amount(),
        user=subject if by_user else None,
        feature_instance=None if by_user else subject,
        period=c.get("period") or "month",
    )
    return c.done("limit.removed" if remove else "limit.set", "limits")


@action("member", "members")
def add_member(c: Change) -> Response:
    user = c.get("user")
    c.ledger.add_user(user)
    c.ledger.add_member(c.mandate, user, role=c.get("role") or "member")
    return c.done("member.added", "members")


@action("role", "members")
def role(c: Change) -> Response:
    user, name = c.get("user"), c.get("role")
    if c.get("revoke"):
        c.ledger.access.revoke_role(c.mandate, user, name)
        return c.done("role.revoked", "members")
    c.ledger.access.grant_role(c.mandate, user, name)
    return c.done("role.granted", "members")


@action("rule", "permissions")
def rule(c: Change) -> Response:
    if c.get("remove"):
        c.ledger.access.remove_rule(c.mandate, c.get("remove"))
        return c.done("rule.removed", "permissions")
    c.ledger.access.add_rule(
        c.mandate, c.get("role"), c.get("context"), c.get("item"), c.form.getlist("permissions")
    )
    return c.done("rule.added", "permissions")


@action("price", "prices")
def price(c: Change) -> Response:
    c.ledger.pricing.set_custom_price(
        c.get("provider"),
        c.get("model"),
        input_mtok=c.get("input_mtok"),
        output_mtok=c.get("output_mtok"),
        cache_read_mtok=c.optional("cache_read_mtok"),
        cache_write_mtok=c.optional("cache_write_mtok"),
        per_request=c.optional("per_request"),
        currency=c.get("currency") or "USD",
        valid_from=c.day("valid_from"),
        mandate=c.mandate,
    )
    return c.done("price.set", "prices")


@action("rate", "rates")
def rate(c: Change) -> Response:
    c.ledger.pricing.set_exchange_rate(
        c.get("base"),
        c.get("quote"),
        c.get("rate"),
        valid_from=c.day("valid_from"),
        source="dashboard",
    )
    return c.done("rate.set", "rates")


@action("key", "keys")
def create_key(c: Change) -> Response:
    expires = c.day("expires")
    created = c.ledger.keys.create_key(
        user=c.get("user"),
        mandate=c.mandate,
        scopes=c.form.getlist("scopes"),
        expires_at=expires + timedelta(days=1) if expires else None,
        name=c.optional("name"),
    )
    # Shown on this answer only (no redirect: the secret must not be in a URL).
    return render_admin(c.request, c.viewer, c.mandate, status=201, section="keys", new_key=created)


@action("key-revoke", "keys")
def revoke_key(c: Change) -> Response:
    c.ledger.keys.revoke_key(c.get("key_id"), mandate=c.mandate)
    return c.done("key.revoked", "keys")
