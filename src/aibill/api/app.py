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
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from aibill import __version__, web
from aibill.api import admin, errors, ledger, metrics
from aibill.api.deps import system_billing
from aibill.service.billing import Billing
from aibill.service.sessions import SessionPolicy
from aibill.store.migrate import current_revision, head_revision

MAX_BODY_BYTES = 64 * 1024
log = logging.getLogger("aibill.api")


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


class BodyLimit(BaseHTTPMiddleware):
    """Refuse request bodies above ``MAX_BODY_BYTES`` before reading them."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return errors.problem(
                413,
                "request_too_large",
                "Request too large",
                f"A request body may have at most {MAX_BODY_BYTES} bytes.",
            )
        return await call_next(request)


def create_app(
    billing: Billing,
    *,
    sweep_interval_s: float = 30.0,
    session_policy: SessionPolicy | None = None,
) -> FastAPI:
    """The HTTP API over ``billing`` (which acts as the system principal; each
    request acts for the holder of its API key).

    Every ``sweep_interval_s`` seconds (0: never) a background task expires
    overdue holds in every mandate, so their money is free even when nobody
    touches the account (they are also expired lazily when it is touched).
    ``session_policy`` says how long the dashboard's sessions live.
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
    )
    app.state.billing = billing
    app.state.session_policy = session_policy
    app.add_middleware(BodyLimit)
    metrics.install(app)
    errors.install(app)
    web.install(app)  # addresses no route has, outside /v1: the dashboard's own 404 page
    app.include_router(ledger.router)
    app.include_router(admin.router)
    app.include_router(web.router)  # the dashboard, at /; not in the OpenAPI schema
    app.mount("/static", web.static_files(), name="static")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(request: Request, response: Response) -> dict[str, Any]:
        """The database answers and its schema is current."""
        engine = system_billing(request).engine
        try:
            current = current_revision(engine)
        except Exception as exc:  # any failure to reach the database means "not ready"
            response.status_code = 503
            return {"status": "unavailable", "database": str(exc)[:200]}
        ready = current == head_revision()
        response.status_code = 200 if ready else 503
        return {"status": "ok" if ready else "migrations pending", "revision": current}

    _attach_examples(app)
    return app
