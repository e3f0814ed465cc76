"""Errors as RFC 9457 problem documents, each with aibill's stable code."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from aibill.domain import errors as e
from aibill.domain.text import printable
from aibill.http.status import STATUS, status_of

__all__ = ["PROBLEM", "RESPONSES", "STATUS", "Problem", "install", "problem", "status_of"]

PROBLEM = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem document with aibill's stable error ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(examples=["insufficient_balance"])
    details: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None


def _documented(status: int, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM: {"schema": Problem.model_json_schema()}},
    }


# Declared on every operation, so the OpenAPI schema says what a client may meet.
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented(401, "No API key, or one that was refused (`invalid_api_key`)."),
    402: _documented(402, "A business refusal: `insufficient_balance`, `limit_exceeded`."),
    403: _documented(403, "Not allowed: `permission_denied`, `provider_not_allowed`."),
    404: _documented(404, "Not found: `hold_not_found`, `unknown_model`, ..."),
    409: _documented(409, "A conflict: `idempotency_conflict`, `hold_already_captured`, ..."),
    413: _documented(413, "The request body is too large (`request_too_large`)."),
    422: _documented(422, "The request is malformed (`invalid_request`, `invalid_amount`)."),
    429: _documented(
        429,
        "Too many failed authentications from this address or for this key id"
        " (`too_many_failed_attempts`); `Retry-After` says when to try again.",
    ),
    503: _documented(503, "The database kept failing (`store_unavailable`)."),
}


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://aibill.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(_shown(body), status_code=status, media_type=PROBLEM)


def _shown(value: Any) -> Any:
    """``value`` with every text as :func:`~aibill.domain.text.printable` shows it:
    an error that quotes what was sent (a lone surrogate, a control character)
    must still be a JSON document a client can read."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_shown(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    return value


def install(app: FastAPI) -> None:
    """Map every error a request can meet to a problem document."""

    @app.exception_handler(e.AibillError)
    async def aibill_error(request: Request, exc: e.AibillError) -> JSONResponse:
        data = exc.to_dict()
        status = status_of(exc)
        if isinstance(exc, e.Refused):
            request.app.state.metrics.refusals.labels(exc.code).inc()
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        response = problem(
            status, exc.code, type(exc).__name__, exc.message, details=data["details"]
        )
        if headers:
            response.headers.update(headers)
        if isinstance(exc, e.StoreUnavailable):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, e.TooManyFailedAttempts):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in err.get("loc", ())[1:]), "message": err.get("msg")}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return problem(
            422,
            e.InvalidRequest.code,
            "InvalidRequest",
            f"{first['field'] or 'request'}: {first['message']}",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(exc.status_code, code, code.replace("_", " "), str(exc.detail))
