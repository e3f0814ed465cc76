"""Time ranges the dashboard offers (in UTC, like the service's buckets) and
how a form's dates become the service's ``since <= t < until``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from aibill.domain import errors as e
from aibill.domain.times import check_time

PERIODS = {
    "month": "This month",
    "last-month": "Last month",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "custom": "Custom",
}
MAX_CUSTOM_DAYS = 1096
"""The longest custom period the usage page draws (three years)."""


def midnight(value: date) -> datetime:
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def month_start(now: datetime) -> datetime:
    return midnight(now.astimezone(UTC).date().replace(day=1))


def parse_day(text: str, field: str) -> date | None:
    """A form's ``YYYY-MM-DD`` (empty: none); ``InvalidRequest`` naming the field."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise e.InvalidRequest(
            f"{field} must be a date such as 2026-03-01, not {text!r}.", field=field
        ) from None
    check_time(midnight(day), field)  # within what the ledger stores
    return day


def day_range(first: str, last: str) -> tuple[datetime | None, datetime | None]:
    """Whole UTC days ``first`` to ``last``, both included."""
    start, end = parse_day(first, "from"), parse_day(last, "to")
    if start and end and end < start:
        raise e.InvalidRequest("The end date is before the start date.", field="to")
    return (
        midnight(start) if start else None,
        check_time(midnight(end + timedelta(days=1)), "to") if end else None,
    )


@dataclass(frozen=True, slots=True)
class Period:
    key: str
    since: datetime
    until: datetime

    @property
    def days(self) -> list[datetime]:
        """Each UTC day of the period, for charts that show empty days too."""
        out, at = [], self.since
        while at < self.until:
            out.append(at)
            at += timedelta(days=1)
        return out

    @property
    def last_day(self) -> datetime:
        return self.until - timedelta(days=1)


def period(key: str, first: str, last: str, now: datetime) -> Period:
    """The period a usage page asks for; this month unless said otherwise."""
    today = midnight(now.astimezone(UTC).date())
    tomorrow = today + timedelta(days=1)
    if key == "custom":
        since, until = day_range(first, last)
        span = Period(key, since or month_start(now), until or tomorrow)
        # The page draws every day of the period: a bounded number of them.
        if span.until - span.since > timedelta(days=MAX_CUSTOM_DAYS):
            raise e.InvalidRequest(
                f"A custom period covers at most {MAX_CUSTOM_DAYS} days; for longer ones,"
                " export the usage report.",
                field="from",
            )
        return span
    if key == "last-month":
        this = month_start(now)
        return Period(key, month_start(this - timedelta(days=1)), this)
    if key == "7d":
        return Period(key, tomorrow - timedelta(days=7), tomorrow)
    if key == "30d":
        return Period(key, tomorrow - timedelta(days=30), tomorrow)
    return Period("month", month_start(now), tomorrow)
