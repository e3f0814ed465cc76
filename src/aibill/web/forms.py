"""The administration pages' forms: a mandate's (``/m/<mandate>/admin``) and
the platform's (``/platform``).

Each page is a :class:`Desk`: where it lives, how it is drawn, and the forms
it takes. A form posts to ``<page>/<action>``; the action runs as the viewer
(after the CSRF check), so a forced post is refused by the service. A
refusal draws the page again at the form's section, with the error's message
and code and what was typed; a success redirects to the page with a notice.

The forms both pages have (markups, custom prices, exchange rates, API keys)
are one action each, run with the page's mandate (``None``: the platform's
settings).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from aibill.domain import errors as e
from aibill.domain.audit import AuditPage
from aibill.domain.money import to_decimal
from aibill.domain.principal import Scope
from aibill.http.status import status_of
from aibill.service.billing import Billing
from aibill.web.pages import base
from aibill.web.periods import midnight, parse_day
from aibill.web.routing import page, redirect
from aibill.web.security import Form, FormDep, PostedViewer, Viewer

AUDIT_PAGE = 25


class Render(Protocol):
    """Draws an administration page as ``viewer``; after a form was sent, at its
    ``section``, with the ``error`` and the ``values`` typed (see :func:`show_desk`)."""

    def __call__(
        self, request: Request, viewer: Viewer, mandate: str | None, **options: Any
    ) -> Response: ...


@dataclass(frozen=True, slots=True)
class Change:
    """One submitted administrative form: who sent it, on which page, what."""

    request: Request
    viewer: Viewer
    mandate: str | None
    form: Form
    desk: Desk

    @property
    def ledger(self) -> Billing:
        return self.viewer.ledger

    @property
    def mandate_id(self) -> str:
        """The mandate, on a mandate's page."""
        if self.mandate is None:
            raise e.InvalidRequest("This form belongs to a mandate's page.")
        return self.mandate

    def get(self, name: str) -> str:
        return self.form.get(name)

    def optional(self, name: str) -> str | None:
        return self.form.optional(name)

    def amount(self, name: str = "amount") -> Decimal:
        return to_decimal(self.form.get(name), field=name)

    def day(self, name: str) -> datetime | None:
        found = parse_day(self.form.get(name), name)
        return midnight(found) if found else None

    def done(self, notice: str, section: str, **query: str) -> Response:
        """See the page again (a GET: a reload does not post again), with a notice."""
        return redirect(
            f"{self.desk.home(self.mandate)}?{urlencode({'notice': notice, **query})}#{section}"
        )

    def show(self, status: int, section: str, **extra: Any) -> Response:
        """The page itself as this answer (for what must not go into a URL)."""
        return self.desk.render(
            self.request, self.viewer, self.mandate, status=status, section=section, **extra
        )


Action = Callable[[Change], Response]


@dataclass(frozen=True, slots=True)
class Desk:
    """An administration page: its path (``/m/{mandate}/admin``, ``/platform``),
    how it is drawn, and what must hold before a form is even read (the
    mandate is visible to the viewer)."""

    router: APIRouter
    path: str
    render: Render
    enter: Callable[[Viewer, str | None], object]

    def home(self, mandate: str | None) -> str:
        return self.path.replace("{mandate}", mandate or "")

    def action(self, path: str, section: str) -> Callable[[Action], Action]:
        """Register ``POST <page>/<path>``: the change runs as the viewer; a
        refusal shows the page again at ``section``, with the error and what
        was typed (or, to a viewer with no such page, an error page)."""

        def register(work: Action) -> Action:
            def endpoint(request: Request, viewer: PostedViewer, form: FormDep) -> Response:
                mandate: str | None = request.path_params.get("mandate")
                self.enter(viewer, mandate)
                change = Change(request, viewer, mandate, form, self)
                try:
                    return work(change)
                except e.AibillError as exc:
                    if not viewer.ledger.may(Scope.ADMIN, mandate):
                        raise  # no page to show it on: an error page with its code
                    return change.show(status_of(exc), section, error=exc, values=form.values())

            name = self.path.strip("/").replace("/", "-").replace("{mandate}", "m")
            self.router.add_api_route(
                f"{self.path}/{path}", endpoint, methods=["POST"], name=f"{name}-{path}"
            )
            return work

        return register

    def take(self, *actions: tuple[str, str, Action]) -> None:
        """Take these forms too: ``(path, section, action)`` each."""
        for path, section, work in actions:
            self.action(path, section)(work)


def show_desk(
    request: Request,
    viewer: Viewer,
    template: str,
    context: dict[str, Any],
    *,
    audit: AuditPage,
    notices: Mapping[str, str],
    status: int = 200,
    section: str | None = None,
    error: e.AibillError | None = None,
    values: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An administration page: its context, the audit log's page, the notice a
    redirect asked for, and the form that was refused (``section``, ``error``
    and the ``values`` typed)."""
    params = request.query_params
    count = params.get("n", "")
    notice = notices.get(params.get("notice", ""))
    return page(
        request,
        template,
        status=status,
        **base(request, viewer),
        **context,
        audit=audit,
        audit_older="?" + urlencode({"audit": audit.cursor}) + "#audit" if audit.cursor else None,
        notice=notice.format(n=count if count.isascii() and count.isdigit() else "0")
        if notice
        else None,
        ref=params.get("ref"),
        section=section,
        error=error,
        values=values or {},
        **extra,
    )


def audit_page(viewer: Viewer, mandate: str | None, request: Request) -> AuditPage:
    """The page of ``mandate``'s audit log (None: the platform's) the query asks for."""
    cursor = request.query_params.get("audit") or None
    return viewer.ledger.audit_log(mandate, limit=AUDIT_PAGE, cursor=cursor)


# ----------------------------------------------------- the forms both pages have


def markup(c: Change) -> Response:
    provider, model = c.optional("provider"), c.optional("model")
    if c.get("clear"):
        c.ledger.pricing.clear_markup(mandate=c.mandate, provider=provider, model=model)
        return c.done("markup.cleared", "markup")
    c.ledger.pricing.set_markup(c.get("percent"), mandate=c.mandate, provider=provider, model=model)
    return c.done("markup.set", "markup")


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


def rate(c: Change) -> Response:
    c.ledger.pricing.set_exchange_rate(
        c.get("base"),
        c.get("quote"),
        c.get("rate"),
        valid_from=c.day("valid_from"),
        source=c.optional("source") or "dashboard",
    )
    return c.done("rate.set", "rates")


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
    return c.show(201, "keys", new_key=created)


def revoke_key(c: Change) -> Response:
    c.ledger.keys.revoke_key(c.get("key_id"), mandate=c.mandate)
    return c.done("key.revoked", "keys")


SHARED: tuple[tuple[str, str, Action], ...] = (
    ("markup", "markup", markup),
    ("price", "prices", price),
    ("rate", "rates", rate),
    ("key", "keys", create_key),
    ("key-revoke", "keys", revoke_key),
)
"""The forms a mandate's page and the platform's page both take."""

SHARED_NOTICES = {
    "markup.set": "Markup saved.",
    "markup.cleared": "Markup removed; the next broader one applies.",
    "price.set": "Custom price saved.",
    "rate.set": "Exchange rate saved.",
    "key.revoked": "API key revoked; its sessions have ended.",
}


def csv_text(form: Form, name: str) -> io.StringIO:
    """An uploaded text file's content, for the service's CSV readers."""
    raw = form.file(name)
    if raw is None:
        raise e.InvalidRequest("Choose a CSV file to import.", field=name)
    try:
        return io.StringIO(raw.decode("utf-8-sig"), newline="")
    except UnicodeDecodeError:
        raise e.InvalidRequest("The file is not UTF-8 text.", field=name) from None
