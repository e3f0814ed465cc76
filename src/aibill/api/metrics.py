"""Prometheus metrics at ``/metrics``: requests by route and status with their
latency, and what the ledger did (holds placed, captured, released; refusals
by reason; money captured per currency, in micro-units so it stays exact)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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


def _route(scope: Scope) -> str:
    """The route template the request matched (``/v1/holds/{hold_id}``), so
    ids never become label values; ``unmatched`` for a path no route has."""
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class Measure:
    """Counts each HTTP request by route, method and status, and observes its
    latency, when its response starts (so a streamed export counts the time to
    its first byte). A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware``
    would run each request in a task of its own, behind memory streams, which
    cost a request a measurable part of its time."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        metrics = self.metrics

        async def measured(message: Message) -> None:
            if message["type"] == "http.response.start":
                route, method = _route(scope), scope["method"]
                metrics.latency.labels(route, method).observe(time.perf_counter() - started)
                metrics.requests.labels(route, method, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, measured)


def install(app: FastAPI) -> Metrics:
    metrics = Metrics()
    app.state.metrics = metrics
    app.add_middleware(Measure, metrics=metrics)

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def scrape() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
