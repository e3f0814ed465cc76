"""The HTTP status of each domain error, the same for the API's problem
documents and the dashboard's error pages."""

from __future__ import annotations

from aibill.domain import errors as e

__all__ = ["STATUS", "status_of"]

# One status per error class; the most specific class listed wins.
STATUS: list[tuple[type[e.AibillError], int]] = [
    (e.InvalidApiKey, 401),
    (e.TooManyFailedAttempts, 429),
    (e.InsufficientBalance, 402),
    (e.LimitExceeded, 402),
    (e.ProviderNotAllowed, 403),
    (e.PermissionDenied, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.InvalidRequest, 422),
    (e.Refused, 402),
    (e.StoreUnavailable, 503),
]


def status_of(error: e.AibillError) -> int:
    """The status an error answers with; 500 for an error no class above covers."""
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500
