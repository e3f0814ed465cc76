"""The values of reports: a user's balance in one mandate, one group of a usage
report, and the names a usage report groups by (computed by
``aibill.service.reports``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TextIO

from aibill.domain.model import BillingModel

__all__ = [
    "GROUP_KEYS",
    "PERIOD_KEYS",
    "GroupBy",
    "KeyValue",
    "ReportParts",
    "UsageRow",
    "UserBalance",
    "report_parts",
    "write_lines",
]

PERIOD_KEYS = ("day", "week", "month")
"""Time buckets, in UTC: a calendar day, an ISO week (from Monday), a calendar month."""
GROUP_KEYS = (
    "day",
    "week",
    "month",
    "provider",
    "model",
    "feature_code",
    "feature_instance",
    "user",
    "workflow_id",
)
"""What a usage report can be grouped by."""

KeyValue = str | datetime | None
GroupBy = Sequence[str]


@dataclass(frozen=True, slots=True)
class UserBalance:
    """One mandate a user belongs to, and the account its billing model names for
    them: the mandate's pool, or the user's own wallet (``prepay_user``).

    ``pending`` counts only holds still running: a hold past its time no longer
    reserves money (it is expired the next time the account is written).
    ``available = balance - pending + overdraft_limit``.
    """

    mandate: str
    user: str
    billing_model: BillingModel
    account: str
    currency: str
    balance: Decimal
    available: Decimal
    pending: Decimal


@dataclass(frozen=True, slots=True)
class UsageRow:
    """The usage of one group: how many calls, how many tokens, what the providers
    charged and what the mandate was billed.

    ``keys`` maps each ``group_by`` name, in the order asked, to the group's
    value: the start of the period (UTC midnight, a datetime) for ``day``,
    ``week`` and ``month``; the tag as recorded for the others, ``None`` when the
    usage carried no such tag. ``provider_cost`` is exact, one total per provider
    currency (normally just ``{"USD": ...}``; empty when the group's usage was
    recorded as plain amounts, without tokens to price). ``amount`` is what was
    debited, in the mandate's ``currency``.
    """

    keys: dict[str, KeyValue]
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    provider_cost: dict[str, Decimal] = field(default_factory=dict)
    amount: Decimal = Decimal("0.000000")
    currency: str = ""

    @property
    def period(self) -> datetime | None:
        """The start of the group's day, week or month, if the report is grouped by one."""
        for name in PERIOD_KEYS:
            value = self.keys.get(name)
            if isinstance(value, datetime):
                return value
        return None


def write_lines(lines: Iterator[str], out: TextIO) -> int:
    """Write CSV lines to ``out``; returns how many data rows (not the header) were written."""
    count = -1
    for line in lines:
        out.write(line)
        count += 1
    return max(count, 0)


@dataclass(frozen=True, slots=True)
class ReportParts:
    """How a usage report over ``since <= posted_at < until`` is read: the whole
    UTC days in it from the daily rollups (``days``: the first day's start and
    the end's, either None when the range is open on that side; None when the
    range holds no whole day), and what is left at either end (``edges``: at
    most two ranges shorter than a day) from the entries."""

    days: tuple[datetime | None, datetime | None] | None
    edges: tuple[tuple[datetime | None, datetime | None], ...]


def _midnight(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def report_parts(since: datetime | None, until: datetime | None) -> ReportParts:
    """Split ``[since, until)`` into whole UTC days and the partial days at its ends."""
    first = None
    if since is not None:
        first = _midnight(since)
        if first < since:
            first += timedelta(days=1)
    end = None if until is None else _midnight(until)
    if first is not None and end is not None and first >= end:
        return ReportParts(days=None, edges=((since, until),))
    edges: list[tuple[datetime | None, datetime | None]] = []
    if since is not None and first is not None and since < first:
        edges.append((since, first))
    if until is not None and end is not None and end < until:
        edges.append((end, until))
    return ReportParts(days=(first, end), edges=tuple(edges))
