"""Prometheus metrics at ``/metrics``: requests by route and status with their
latency, and what the ledger did (holds placed, captured, released; refusals
by reason; money captured per currency, in micro-units so it stays exact)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint


class Metrics:
    """One registry per app, so several apps in one process never mix counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aibill_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aibill_http_request_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            registry=self.registry,
        )
        self.holds = Counter(
            "aibill_holds_total",
            "Holds by what happened to them: placed, captured, released.",
            ["event"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "aibill_refusals_total",
            "Refused operations by reason (the error code).",
            ["code"],
            registry=self.registry,
        )
        self.captured = Counter(
            "aibill_captured_micros_total",
            "Money posted by captures and usage records, in micro-units, per currency.",
            ["currency"],
            registry=self.registry,
        )


def _route(request: Request) -> str:
    """The route template the request matched (``/v1/holds/{hold_id}``), so
    ids never become label values; ``unmatched`` for a path no route has."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def install(app: FastAPI) -> Metrics:
    metrics = Metrics()
    app.state.metrics = metrics

    class Measure(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            started = time.perf_counter()
            response = await call_next(request)
            route = _route(request)
            metrics.latency.labels(route, request.method).observe(time.perf_counter() - started)
            metrics.requests.labels(route, request.method, str(response.status_code)).inc()
            return response

    app.add_middleware(Measure)

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def scrape() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
