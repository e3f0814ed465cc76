"""The FastAPI application: ``create_app(billing)``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request as StarletteRequest
from starlette.types import Scope

from aibill import web
from aibill.api import admin, docs, errors, ledger, metrics
from aibill.api.deps import system_billing
from aibill.domain.errors import AibillError, StoreUnavailable
from aibill.domain.sessions import SessionPolicy
from aibill.domain.version import __version__
from aibill.http.limits import UPLOAD_FILE_BYTES, BodyLimit, BodyLimits
from aibill.http.throttle import AuthThrottle
from aibill.service.billing import Billing
from aibill.store.migrate import current_revision, head_revision
from aibill.web.routing import error_page, for_people

log = logging.getLogger("aibill.api")
MAX_BODY_BYTES = UPLOAD_FILE_BYTES
"""The largest rate-import file (what the dashboard's upload form says)."""


def _attach_examples(app: FastAPI) -> None:
    """Give every operation without a request body the response it gave in a
    recorded session (``scripts/api_examples.py`` writes ``examples.json``)."""
    recorded = json.loads(resources.files("aibill.api").joinpath("examples.json").read_text())
    for route in [*app.routes, *ledger.router.routes, *admin.router.routes]:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            found = recorded.get(f"{method} {route.path}")
            if not found or not found["content_type"]:
                continue
            status = found["status"]
            response = dict(route.responses.get(status, {}))
            response.setdefault("description", "Successful Response")
            media = dict(response.get("content", {}))
            media[found["content_type"]] = {
                **media.get(found["content_type"], {}),
                "example": found["example"],
            }
            response["content"] = media
            route.responses[status] = response


async def _sweep_forever(billing: Billing, interval_s: float, expired: Any) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            swept = await asyncio.to_thread(billing.sweep_expired)
        except Exception:  # a failed sweep is retried at the next interval
            log.exception("sweeping expired holds failed")
            continue
        if swept:
            expired.inc(swept)
            log.info("expired %d overdue holds", swept)


def too_large(scope: Scope, limit_bytes: int) -> Response:
    """The 413 for a body above ``limit_bytes``: the dashboard's page for a
    form, a problem document for the API."""
    detail = (
        f"A request body here may have at most {limit_bytes // 1024} KiB ({limit_bytes} bytes)."
    )
    if for_people(scope.get("path", "/")):
        return error_page(StarletteRequest(scope), 413, "Too large", detail, "request_too_large")
    return errors.problem(413, "request_too_large", "Request too large", detail)


def _body_limits() -> BodyLimits:
    return BodyLimits(is_form=for_people)


def create_app(
    billing: Billing,
    *,
    sweep_interval_s: float = 30.0,
    session_policy: SessionPolicy | None = None,
    auth_throttle: AuthThrottle | None = None,
) -> FastAPI:
    """The HTTP API over ``billing`` (which acts as the system principal; each
    request acts for the holder of its API key).

    Every ``sweep_interval_s`` seconds (0: never) a background task expires
    overdue holds in every mandate, so their money is free even when nobody
    touches the account (they are also expired lazily when it is touched).
    ``session_policy`` says how long the dashboard's sessions live.
    ``auth_throttle`` keeps the failure budgets of authentication (default:
    :class:`~aibill.domain.throttle.FailureBudget`'s defaults).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if sweep_interval_s > 0:
            expired = app.state.metrics.holds.labels("expired")
            task = asyncio.create_task(_sweep_forever(billing, sweep_interval_s, expired))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="aibill",
        version=__version__,
        description="Billing for AI usage: holds, exact prices, an append-only ledger.",
        lifespan=lifespan,
        responses=errors.RESPONSES,
        docs_url=None,  # served from vendored assets under the dashboard's CSP (api.docs)
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.billing = billing
    app.state.session_policy = session_policy
    app.state.auth_throttle = auth_throttle or AuthThrottle()
    metrics.install(app)
    errors.install(app)
    app.add_exception_handler(SQLAlchemyError, _store_failed)
    web.install(app)  # addresses no route has, outside /v1: the dashboard's own 404 page
    app.include_router(ledger.router)
    app.include_router(admin.router)
    app.include_router(web.router)  # the dashboard, at /; not in the OpenAPI schema
    app.mount("/static", web.static_files(), name="static")
    docs.install(app)

    _install_health(app)
    _attach_examples(app)
    # Outermost, added last: no other middleware, authentication or parsing
    # sees a body before its size is known to be within the route's limit.
    app.add_middleware(BodyLimit, limits=_body_limits(), refusal=too_large)
    return app


def _install_health(app: FastAPI) -> None:
    """``/healthz`` (the process) and ``/readyz`` (the database and its schema)."""

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up (answered on the event loop: it waits for neither
        the database nor the thread pool)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(request: Request, response: Response) -> dict[str, Any]:
        """The database answers and its schema is current."""
        engine = system_billing(request).engine
        try:
            current = current_revision(engine)
        except Exception as exc:  # any failure to reach the database means "not ready"
            # The driver's text names hosts and ports: the log has it, the answer not.
            log.warning("readiness: the database cannot be reached: %s", exc)
            response.status_code = 503
            response.headers["Retry-After"] = str(StoreUnavailable.retry_after_s)
            return {"status": "unavailable", "database": "unreachable"}
        ready = current == head_revision()
        response.status_code = 200 if ready else 503
        return {"status": "ok" if ready else "migrations pending", "revision": current}


async def _store_failed(request: Request, exc: Exception) -> Response:
    """A driver or pool error that reached a route without being translated
    (a pool that stayed full, a connection refused outside a unit of work): a
    503 like any other ``store_unavailable``; the driver's text goes to the
    log only (it names hosts and ports)."""
    log.error("database failure on %s %s: %s", request.method, request.url.path, exc)
    handler = request.app.exception_handlers[AibillError]
    answered: Response = await handler(request, StoreUnavailable(StoreUnavailable.MESSAGE))
    return answered
