"""A mandate's administration: top-ups, billing model, markup, spending limits,
members and roles, provider permissions, custom prices, exchange rates, API
keys and the audit log.

The page offers a form only when the service says the viewer may use it
(``Billing.may``); every form posts to an action that calls the service as
the viewer, so a forced post is refused by the service (and the page says
so, with the error's message and code). Each form carries the session's CSRF
token; the top-up form also carries an idempotency key drawn when the form
was rendered, so a double submit credits once. See :mod:`aibill.web.forms`.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request, Response

from aibill.domain import errors as e
from aibill.domain.model import BillingModel
from aibill.domain.permissions import BUILTIN_RULES, MANDATE_ROLES, Context, Permission
from aibill.domain.principal import Scope
from aibill.service.billing import CREDIT_REASONS, PERIODS
from aibill.web.forms import SHARED, SHARED_NOTICES, Change, Desk, audit_page, show_desk
from aibill.web.pages import visible
from aibill.web.routing import WebRoute
from aibill.web.security import Viewer, ViewerDep

router = APIRouter(route_class=WebRoute, include_in_schema=False)

NOTICES = {
    **SHARED_NOTICES,
    "credit.applied": "Credit applied.",
    "credit.replayed": "Already applied: this top-up was submitted before, and credited once.",
    "billing_model.set": "Billing model changed.",
    "limit.set": "Spending limit saved.",
    "limit.removed": "Spending limit removed.",
    "member.added": "Member added.",
    "role.granted": "Role granted.",
    "role.revoked": "Role revoked.",
    "rule.added": "Permission rule added.",
    "rule.removed": "Permission rule removed.",
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
        "billing_models": [b.value for b in BillingModel],
        "credit_reasons": CREDIT_REASONS,
        "limit_periods": PERIODS,
        "mandate_roles": MANDATE_ROLES,
        "contexts": [c.value for c in Context],
        "permissions": [p.value for p in Permission],
        "scopes": [s.value for s in Scope],
        "idempotency_key": new_idempotency_key(),
    }


def render_admin(request: Request, viewer: Viewer, mandate: str | None, **options: Any) -> Response:
    name = mandate or ""
    context = admin_context(viewer, name)
    typed = options.get("values") or {}
    if options.get("section") == "credit" and typed.get("idempotency_key"):
        # The same key again: a retry of this very top-up must not credit twice.
        context["idempotency_key"] = typed["idempotency_key"]
    audit = audit_page(viewer, name, request)
    return show_desk(
        request, viewer, "admin.html", context, audit=audit, notices=NOTICES, **options
    )


@router.get("/m/{mandate}/admin")
def admin_page(request: Request, mandate: str, viewer: ViewerDep) -> Response:
    return render_admin(request, viewer, mandate)


desk = Desk(router, "/m/{mandate}/admin", render_admin, lambda v, m: visible(v, m or ""))
action = desk.action
desk.take(*SHARED)


@action("credit", "credit")
def credit(c: Change) -> Response:
    entry = c.ledger.credit(
        c.mandate_id,
        c.amount(),
        user=c.optional("user"),
        reason=c.get("reason") or "payment",
        description=c.optional("description"),
        idempotency_key=c.get("idempotency_key"),
    )
    notice = "credit.replayed" if entry.replayed else "credit.applied"
    return c.done(notice, "credit", ref=entry.id)


@action("billing-model", "billing-model")
def billing_model(c: Change) -> Response:
    c.ledger.set_billing_model(c.mandate_id, c.get("billing_model"))
    return c.done("billing_model.set", "billing-model")


@action("limit", "limits")
def limit(c: Change) -> Response:
    subject = c.optional("subject")
    by_user = c.get("scope") != "feature_instance"
    remove = bool(c.get("remove"))
    c.ledger.set_spending_limit(
        c.mandate_id,
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
    c.ledger.add_member(c.mandate_id, user, role=c.get("role") or "member")
    return c.done("member.added", "members")


@action("role", "members")
def role(c: Change) -> Response:
    user, name = c.get("user"), c.get("role")
    if c.get("revoke"):
        c.ledger.access.revoke_role(c.mandate_id, user, name)
        return c.done("role.revoked", "members")
    c.ledger.access.grant_role(c.mandate_id, user, name)
    return c.done("role.granted", "members")


@action("rule", "permissions")
def rule(c: Change) -> Response:
    if c.get("remove"):
        c.ledger.access.remove_rule(c.mandate_id, c.get("remove"))
        return c.done("rule.removed", "permissions")
    c.ledger.access.add_rule(
        c.mandate_id, c.get("role"), c.get("context"), c.get("item"), c.form.getlist("permissions")
    )
    return c.done("rule.added", "permissions")
