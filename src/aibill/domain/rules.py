"""The ledger's rules, as pure functions: no I/O, no clock, no database.

Each function names the rule of ``docs/concepts.md`` it implements ("rule 2"),
and each rule is decided here and nowhere else in Python. The service loads
what a rule needs, calls the function, and stores the outcome. Amounts are
integers of micro-units; times are timezone-aware.

Two decisions are also taken in SQL, because there they are atomic with the
write: the conditional UPDATE that reserves a hold or posts a debit only if it
fits (:func:`fits`, with :data:`AVAILABLE_SQL`), and the statements that find
expired holds (:func:`is_expired`). Those statements and these functions say
the same thing; ``tests/integration/test_rules_sql.py`` checks that they
agree on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

AVAILABLE_SQL: Final = "credits_posted - debits_posted - debits_pending + overdraft_limit"
""":func:`available` over an ``accounts`` row, as SQL: the same formula, for
the conditional UPDATE that reserves a hold only if it fits (rule 2)."""

PERIODS: Final = ("day", "week", "month")
"""The periods a spending limit counts over (rule 1)."""


class Counters(Protocol):
    """An account's four stored counters, in micro-units (an ``accounts`` row)."""

    @property
    def credits_posted(self) -> int: ...

    @property
    def debits_posted(self) -> int: ...

    @property
    def debits_pending(self) -> int: ...

    @property
    def overdraft_limit(self) -> int: ...


# ------------------------------------------------------------------ balances


def balance(credits_posted: int, debits_posted: int) -> int:
    """``balance = credits_posted - debits_posted`` (concepts.md, "Balances")."""
    return credits_posted - debits_posted


def available(balance: int, pending: int, overdraft_limit: int) -> int:
    """``available = balance - pending + overdraft_limit`` (concepts.md,
    "Balances"): the money rules 1, 2, 3 and 5 measure a call against.

    The one place Python computes it. :data:`AVAILABLE_SQL` is the same formula
    for the conditional UPDATE of rule 2 (see :func:`fits`).
    """
    return balance - pending + overdraft_limit


def account_available(counters: Counters, *, overdue: int = 0) -> int:
    """:func:`available` of an account's stored counters. ``overdue`` is what
    holds past their time still reserve in ``debits_pending`` before a sweep
    has expired them: they no longer count as pending (rule 2)."""
    return available(
        balance(counters.credits_posted, counters.debits_posted),
        counters.debits_pending - overdue,
        counters.overdraft_limit,
    )


# --------------------------------------------------------------- check, hold


def fits(available_micros: int, amount_micros: int, *, enforced: bool = True) -> bool:
    """Rules 1 and 2: a call of ``amount_micros`` may start (a check says
    allowed, a hold reserves it) only if ``available >= amount``; a billing
    model that enforces nothing (``unlimited``) lets every amount fit.

    A hold is decided in SQL, atomically with its reservation: ``UPDATE
    accounts ... WHERE {AVAILABLE_SQL} >= :micros``. That condition is this
    function with ``enforced=True``; an UPDATE without it is ``enforced=False``.
    Rule 5's ``record_usage`` posts under the same condition.
    """
    return not enforced or available_micros >= amount_micros


def hold_expires_at(created_at: datetime, ttl_s: int) -> datetime:
    """Rule 2: a hold lives ``ttl_s`` seconds from when it was placed."""
    return created_at + timedelta(seconds=ttl_s)


def is_expired(expires_at: datetime, now: datetime) -> bool:
    """Rule 2: a hold is past its time at ``now`` once ``expires_at <= now``;
    from then on it reserves nothing, whether or not a sweep has marked it.

    The sweeps and the balance reads select overdue holds in SQL with the same
    condition (``expires_at <= :now``); a spending limit counts a pending hold
    while ``expires_at > :now``, its negation.
    """
    return expires_at <= now


# ------------------------------------------------------------------- capture


@dataclass(frozen=True, slots=True)
class CapturePosting:
    """What a capture does to its account (rule 3): ``debit`` is posted,
    ``freed`` leaves ``debits_pending``, and ``drawn`` is the part of the debit
    taken from the available balance (the overage above the reservation)."""

    debit: int
    freed: int
    drawn: int


def capture_posting(
    usage_micros: int, held_micros: int, *, pending: bool, expired: bool
) -> CapturePosting:
    """Rule 3: a capture posts the full usage, whatever the hold reserved.

    A hold still ``pending`` (overdue or not) frees its reservation. Only the
    part above the reservation is drawn from the available balance; a hold past
    its time reserves nothing (rule 2), so then the whole usage is drawn, from
    the balance as it is at the capture.
    """
    freed = held_micros if pending else 0
    drawn = usage_micros if expired else max(0, usage_micros - freed)
    return CapturePosting(debit=usage_micros, freed=freed, drawn=drawn)


def shortfall(drawn_micros: int, available_after: int, *, enforced: bool = True) -> int:
    """Rules 3 and 5: the part of ``drawn_micros``, just posted, that the
    available balance could not cover: how far below zero it took ``available``
    (``available_after``), at most what was drawn. A billing model that enforces
    nothing has no shortfall."""
    if not enforced:
        return 0
    return min(drawn_micros, max(0, -available_after))


# ----------------------------------------------------------------- idempotency


@dataclass(frozen=True, slots=True)
class Difference:
    """The first field in which a new request differs from the first one."""

    field: str
    first: Any
    now: Any


def request_difference(
    first_operation: str,
    first: dict[str, Any],
    operation: str,
    request: dict[str, Any],
) -> Difference | None:
    """Rule 7: the field in which a request differs from the first request
    under its idempotency key, or None when they are the same.

    The order is stable: ``operation`` first, then the fields by name; a field
    only one of them has differs from None.
    """
    if first_operation != operation:
        return Difference("operation", first_operation, operation)
    for name in sorted(set(first) | set(request)):
        if first.get(name) != request.get(name):
            return Difference(name, first.get(name), request.get(name))
    return None


Tokens = tuple[int | None, int | None, int | None, int | None]
"""Input, output, cache-read and cache-write tokens, as an entry records them."""


def same_capture(
    first_micros: int, first_tokens: Tokens | None, micros: int | None, tokens: Tokens | None
) -> bool:
    """Rule 3: does a second capture of a hold ask for what the first posted?

    A capture by usage matches a first capture of the same token counts; one by
    amount matches a first capture by the same amount (not one by usage).
    """
    if tokens is not None:
        return first_tokens is not None and first_tokens == tokens
    return micros is not None and first_tokens is None and first_micros == micros


# -------------------------------------------------------------- spending limits


def period_start(now: datetime, period: str) -> datetime:
    """Rule 1: the start (UTC) of the ``day``, ISO ``week`` (Monday) or
    calendar ``month`` of ``now`` that a spending limit counts over; a new
    period starts from nothing, without a reset."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(start: datetime, period: str) -> datetime:
    """The start of the period after the one that starts at ``start``."""
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def counted_spend(spent_since: datetime, spent_micros: int, start: datetime) -> int | None:
    """Rule 1 over a limit's running total: what the period starting at
    ``start`` has posted, from the total counted since ``spent_since`` (a
    period's start). A total of an earlier period means nothing yet in this
    one; a total of a later period (a clock behind the ledger's) says nothing
    about this one: None, count the entries."""
    if spent_since == start:
        return spent_micros
    if spent_since < start:
        return 0
    return None


def limit_passed(limit_micros: int, spent_micros: int, asked_micros: int) -> bool:
    """Rules 1 and 5: ``asked_micros`` more would pass a spending limit when
    what the period already spent plus it is above the limit (reaching the limit
    exactly is allowed)."""
    return spent_micros + asked_micros > limit_micros


def limit_left(limit_micros: int, spent_micros: int) -> int:
    """Rule 1: what a spending limit still allows in its period (never below 0)."""
    return max(0, limit_micros - spent_micros)
