"""The client's errors: :class:`ServiceUnavailable` when the service cannot be
reached, and aibill's own exceptions rebuilt from the service's problem documents."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aibill.client.wire import parse_decimal
from aibill.domain import errors as e


class ServiceUnavailable(e.AibillError):
    """The aibill service could not be reached, or kept answering 502/503/504,
    after the client's bounded retries. Whether a write was applied is unknown;
    calling it again with the same ``idempotency_key`` is safe."""

    code = "service_unavailable"


def _error_classes() -> dict[str, type[e.AibillError]]:
    """aibill's error classes by their stable code (the first class wins)."""
    found: dict[str, type[e.AibillError]] = {}
    todo: list[type[e.AibillError]] = [e.AibillError]
    while todo:
        cls = todo.pop(0)
        if cls.__module__.startswith("aibill."):
            found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


def error_from_problem(status: int, problem: dict[str, Any]) -> e.AibillError:
    """The exception a problem document describes: aibill's own class for its
    code, with the message and details the service sent; ``AibillError`` with
    the code and status in its details when the code is not aibill's."""
    code = problem["code"]
    message = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    raw = problem.get("details")
    details: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    if "errors" in problem:  # a request the service's validation refused
        details.setdefault("errors", problem["errors"])
    cls = _error_classes().get(code)
    if cls is None or cls is e.AibillError:
        return e.AibillError(message, **{**details, "code": code, "status": status})
    if issubclass(cls, e.InsufficientBalance):  # money in details is Decimal, as in the library
        for name in ("available", "required"):
            if isinstance(details.get(name), str):
                details[name] = parse_decimal(details[name], name)
    error = cls.__new__(cls)
    e.AibillError.__init__(error, message, **details)
    # The attributes some errors carry in the library, restored from the details.
    if isinstance(error, e.InsufficientBalance):
        error.available = details.get("available", Decimal(0))
        error.required = details.get("required", Decimal(0))
    if isinstance(error, e.IdempotencyConflict):
        error.field = str(details.get("field", ""))
    if isinstance(error, e.TooManyFailedAttempts):
        wait = details.get("retry_after_s")
        error.retry_after_s = wait if isinstance(wait, int) and wait > 0 else 1
    return error
