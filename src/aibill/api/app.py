"""The FastAPI application: ``create_app(billing)``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from aibill import __version__
from aibill.api import errors, ledger, metrics
from aibill.api.deps import system_billing
from aibill.service.billing import Billing
from aibill.store.migrate import current_revision, head_revision

MAX_BODY_BYTES = 64 * 1024


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


def create_app(billing: Billing) -> FastAPI:
    """The HTTP API over ``billing`` (which acts as the system principal; each
    request acts for the holder of its API key)."""
    app = FastAPI(
        title="aibill",
        version=__version__,
        description="Billing for AI usage: holds, exact prices, an append-only ledger.",
    )
    app.state.billing = billing
    app.add_middleware(BodyLimit)
    metrics.install(app)
    errors.install(app)
    app.include_router(ledger.router)

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

    return app
