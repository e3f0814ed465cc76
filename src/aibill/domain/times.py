"""Which times aibill accepts: timezone-aware, and within what both stores hold.

A time handed in (a filter, a validity start, an expiry, a price's ``at``) is
converted to UTC and must fall from ``EARLIEST`` (1900-01-01T00:00:00Z) up to,
not including, ``LATEST`` (9999-01-01T00:00:00Z). PostgreSQL could hold far
more; SQLite keeps times as ISO text that Python reads back for years 1-9999
only, and a time near either end could not be moved by a day or a period
(reports, the dashboard's date ranges) without leaving that range. The year
of room on each side keeps every such step inside it.

Times with extreme offsets (``0001-01-01T00:00:00+14:00``) cannot even be
converted to UTC; they are refused here like any other time out of range.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aibill.domain.errors import InvalidRequest

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
"""The earliest time accepted (included)."""
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""The first time no longer accepted."""
RANGE_TEXT = "from 1900-01-01T00:00:00Z up to 9999-01-01T00:00:00Z (not included)"


def check_time(value: object, field: str) -> datetime:
    """``value`` as a UTC datetime, or ``InvalidRequest`` naming ``field``: a
    naive datetime (or anything not a datetime), and a time outside the range
    once converted to UTC, are refused."""
    if not isinstance(value, datetime):
        raise InvalidRequest(
            f"{field} must be a timezone-aware datetime, not {type(value).__name__}.",
            field=field,
        )
    try:
        offset = value.utcoffset()
    except (ValueError, TypeError, OverflowError):
        offset = None
    if offset is None:
        raise InvalidRequest(
            f"{field} must be a timezone-aware datetime (with an offset such as +00:00 or Z).",
            field=field,
        )
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise InvalidRequest(
            f"{field} {value.isoformat()} is out of range: aibill takes times {RANGE_TEXT}.",
            field=field,
        )
    return utc


def check_optional_time(value: object, field: str) -> datetime | None:
    """:func:`check_time`, letting ``None`` through."""
    return None if value is None else check_time(value, field)


__all__ = ["EARLIEST", "LATEST", "RANGE_TEXT", "check_optional_time", "check_time"]
