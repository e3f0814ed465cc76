"""The platform's own settings, for system admins: the provider registry,
platform-wide markups and custom prices, exchange rates (set one, or import a
CSV file), the system admins and their API keys, and the platform's audit log.

Like a mandate's administration (see :mod:`aibill.web.forms`), the page is
offered only to a principal the service lets administer the platform
(``Billing.may(Scope.ADMIN, None)``), and every form calls the service as
the viewer, so a forced post by anyone else is refused and writes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Request, Response

from aibill.domain import errors as e
from aibill.domain.prices import ExchangeRate
from aibill.domain.principal import Scope
from aibill.http.limits import UPLOAD_FILE_BYTES
from aibill.service.pricing import DEFAULT_MARKUP_PERCENT
from aibill.web.forms import SHARED, SHARED_NOTICES, Change, Desk, audit_page, csv_text, show_desk
from aibill.web.routing import WebRoute
from aibill.web.security import Viewer, ViewerDep

router = APIRouter(route_class=WebRoute, include_in_schema=False)
RATES_PER_PAIR = 6

NOTICES = {
    **SHARED_NOTICES,
    "provider.registered": "Provider saved.",
    "provider.enabled": "Provider enabled: members may use it again, as their roles allow.",
    "provider.disabled": (
        "Provider disabled: nobody may start a call on it; calls already running finish and"
        " are billed."
    ),
    "rates.imported": "Exchange rates imported: {n} new (rates stored already were skipped).",
    "sysadmin.added": "System admin added.",
    "sysadmin.removed": "System admin removed; their sessions have ended.",
}


def _by_pair(rates: list[ExchangeRate]) -> list[dict[str, Any]]:
    """Each currency pair's rates, newest first, the older ones counted."""
    pairs: dict[tuple[str, str], list[ExchangeRate]] = defaultdict(list)
    for r in rates:
        pairs[(r.base, r.quote)].append(r)
    return [
        {
            "base": base,
            "quote": quote,
            "rates": list(reversed(found))[:RATES_PER_PAIR],
            "older": max(len(found) - RATES_PER_PAIR, 0),
        }
        for (base, quote), found in sorted(pairs.items())
    ]


def platform_context(viewer: Viewer) -> dict[str, Any]:
    """Everything the platform page shows, read as the viewer."""
    ledger = viewer.ledger
    if not ledger.may(Scope.ADMIN, None):
        raise e.PermissionDenied(
            "The platform's settings are for system admins (with a key that has the"
            " billing:admin scope)."
        )
    users = ledger.users()
    return {
        "tab": "platform",
        "providers": ledger.access.providers(),
        "markups": ledger.pricing.markups(None),
        "markup_now": ledger.pricing.markup_for(None, None, None),
        "markup_default": DEFAULT_MARKUP_PERCENT,
        "prices": ledger.pricing.custom_prices(None),
        "rate_pairs": _by_pair(ledger.pricing.exchange_rates()),
        "users": users,
        "sysadmins": [u for u in users if ledger.access.is_sysadmin(u)],
        "keys": ledger.keys.list_keys(None),
        "now": ledger.clock(),
        "scopes": [s.value for s in Scope],
        "upload_kib": UPLOAD_FILE_BYTES // 1024,
    }


def render_platform(
    request: Request, viewer: Viewer, mandate: str | None = None, **options: Any
) -> Response:
    context = platform_context(viewer)
    audit = audit_page(viewer, None, request)
    return show_desk(
        request, viewer, "platform.html", context, audit=audit, notices=NOTICES, **options
    )


@router.get("/platform")
def platform_page(request: Request, viewer: ViewerDep) -> Response:
    return render_platform(request, viewer)


desk = Desk(router, "/platform", render_platform, lambda viewer, mandate: None)
action = desk.action
desk.take(*SHARED)


def _on(c: Change, name: str) -> bool:
    return c.get(name) in ("1", "on", "true")


@action("provider", "providers")
def register_provider(c: Change) -> Response:
    c.ledger.access.register_provider(
        c.get("provider"), display_name=c.optional("display_name"), enabled=_on(c, "enabled")
    )
    return c.done("provider.registered", "providers")


@action("provider-enabled", "providers")
def provider_enabled(c: Change) -> Response:
    enabled = _on(c, "enabled")
    c.ledger.access.set_provider_enabled(c.get("provider"), enabled)
    return c.done("provider.enabled" if enabled else "provider.disabled", "providers")


@action("rates-import", "rates")
def import_rates(c: Change) -> Response:
    new = c.ledger.pricing.import_exchange_rates(csv_text(c.form, "file"))
    return c.done("rates.imported", "rates", n=str(new))


@action("sysadmin", "sysadmins")
def sysadmin(c: Change) -> Response:
    user = c.get("user")
    if _on(c, "remove"):
        c.ledger.access.remove_sysadmin(user)
        return c.done("sysadmin.removed", "sysadmins")
    c.ledger.access.add_sysadmin(user)
    return c.done("sysadmin.added", "sysadmins")
