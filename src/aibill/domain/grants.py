"""Credit grants (concepts.md rule 6), as pure functions: no I/O, no clock, no
database. Amounts are integers of micro-units; times are timezone-aware.

Every credit is a grant: ``paid`` or ``promotional``, effective from a time,
perhaps expiring, with a priority from 0 to 100. What is left of a grant is
``remaining = amount - drawn - expired - voided``, never negative.

- **Draw-down.** A debit draws from the account's active grants in one
  order: priority ascending, then the soonest expiry (no expiry last), then
  the oldest (effective first, then created first), then the grant's id, so
  that the order is total. What the grants do not cover is the debit's
  *unfunded* rest, to which the overdraft and shortfall rules apply.
- **Debt.** An account owes what earlier debits drew beyond its grants:
  ``debt = sum of active remaining - balance`` when that is positive. A
  grant that becomes active pays the debt first (:func:`settle`), so that
  ``balance = sum of active remaining - debt`` always holds.
- **Expiry.** At ``expires_at`` (exactly; a grant is expired at that instant)
  an unused remainder is gone. A read shows it gone at once; the ledger
  posts one ``expiry`` entry for it the first time a write on the account,
  or a sweep, comes after that instant (:func:`due_expiries`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from aibill.domain.errors import InvalidRequest

DEFAULT_PRIORITY: Final = 50
MIN_PRIORITY: Final = 0
MAX_PRIORITY: Final = 100


class GrantCategory(StrEnum):
    """Paid credit was bought; promotional credit was given."""

    PAID = "paid"
    PROMOTIONAL = "promotional"


class GrantState(StrEnum):
    """Where a grant stands at an instant (:func:`grant_state`)."""

    SCHEDULED = "scheduled"  # not yet effective
    ACTIVE = "active"  # effective, something left, not expired
    SPENT = "spent"  # drawn to nothing before it could expire
    EXPIRED = "expired"  # its expiry came with something left
    VOIDED = "voided"  # an admin removed what was left


@dataclass(frozen=True, slots=True)
class GrantTerms:
    """What a credit says about the grant it makes."""

    category: GrantCategory
    priority: int
    effective_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class GrantAmounts:
    """One grant as the draw-down sees it: its terms, when it was created, and
    what became of its amount."""

    grant_id: str
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    created_at: datetime
    amount_micros: int
    drawn_micros: int = 0
    expired_micros: int = 0
    voided_micros: int = 0
    voided: bool = False

    @property
    def remaining_micros(self) -> int:
        return self.amount_micros - self.drawn_micros - self.expired_micros - self.voided_micros


def check_terms(
    category: object,
    priority: object,
    effective_at: datetime,
    expires_at: datetime | None,
) -> GrantTerms:
    """The terms of a credit, or ``InvalidRequest`` naming the field at fault.
    ``effective_at`` is the credit's own time when the caller gave none."""
    known = {c.value: c for c in GrantCategory}
    if not isinstance(category, str) or category not in known:
        allowed = " or ".join(known)
        raise InvalidRequest(f"category must be {allowed}.", field="category")
    kind = known[category]
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidRequest("priority must be a whole number.", field="priority")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidRequest(
            f"priority must be from {MIN_PRIORITY} to {MAX_PRIORITY} (lower is drawn first).",
            field="priority",
        )
    if expires_at is not None and expires_at <= effective_at:
        raise InvalidRequest(
            "expires_at must be after the grant becomes effective.", field="expires_at"
        )
    return GrantTerms(kind, priority, effective_at, expires_at)


def is_expired(grant: GrantAmounts, now: datetime) -> bool:
    """Whether the grant's expiry has come (at its instant exactly)."""
    return grant.expires_at is not None and now >= grant.expires_at


def is_active(grant: GrantAmounts, now: datetime) -> bool:
    """Whether a debit at ``now`` may draw from the grant."""
    return (
        not grant.voided
        and grant.effective_at <= now
        and not is_expired(grant, now)
        and grant.remaining_micros > 0
    )


def grant_state(grant: GrantAmounts, now: datetime) -> GrantState:
    """The grant's state at ``now``. An expiry shows at its instant, whether or
    not its ``expiry`` entry has been posted yet."""
    if grant.voided:
        return GrantState.VOIDED
    if now < grant.effective_at:
        return GrantState.SCHEDULED
    if grant.expired_micros > 0 or (is_expired(grant, now) and grant.remaining_micros > 0):
        return GrantState.EXPIRED
    if grant.remaining_micros == 0:
        return GrantState.SPENT
    return GrantState.ACTIVE


def draw_order(grant: GrantAmounts) -> tuple[int, bool, datetime, datetime, datetime, str]:
    """The sort key of the draw-down: priority ascending, the soonest expiry
    (no expiry last), the oldest, then the id."""
    never = grant.expires_at is None
    expiry = grant.effective_at if grant.expires_at is None else grant.expires_at
    return (grant.priority, never, expiry, grant.effective_at, grant.created_at, grant.grant_id)


@dataclass(frozen=True, slots=True)
class Drawn:
    """How a debit is paid: ``draws`` as ``(grant_id, micros)`` in draw order
    (each more than 0), and the ``unfunded_micros`` no grant covered."""

    draws: tuple[tuple[str, int], ...]
    unfunded_micros: int


def draw(grants: Iterable[GrantAmounts], amount_micros: int, now: datetime) -> Drawn:
    """Draw ``amount_micros`` from the grants active at ``now``, in draw order."""
    if amount_micros < 0:
        raise ValueError("a draw is never negative")
    left = amount_micros
    draws: list[tuple[str, int]] = []
    for grant in sorted((g for g in grants if is_active(g, now)), key=draw_order):
        if left == 0:
            break
        take = min(left, grant.remaining_micros)
        draws.append((grant.grant_id, take))
        left -= take
    return Drawn(tuple(draws), left)


def debt(balance_micros: int, active_remaining_micros: int) -> int:
    """What the account owes beyond its grants: earlier debits' unfunded rests
    not yet paid by a later grant."""
    return max(0, active_remaining_micros - balance_micros)


def settle(debt_micros: int, amount_micros: int) -> int:
    """How much of a grant that becomes active pays the account's debt first."""
    return min(max(debt_micros, 0), amount_micros)


def due_expiries(grants: Iterable[GrantAmounts], now: datetime) -> list[tuple[str, int]]:
    """The ``(grant_id, remaining)`` whose expiry has come with something left
    and no ``expiry`` entry yet, in draw order: one entry each, exactly once."""
    due = [
        g
        for g in grants
        if not g.voided and g.expired_micros == 0 and is_expired(g, now) and g.remaining_micros > 0
    ]
    return [(g.grant_id, g.remaining_micros) for g in sorted(due, key=draw_order)]


def expired_unposted(grants: Sequence[GrantAmounts], now: datetime) -> int:
    """What a read at ``now`` takes off the stored balance for expiries whose
    entry is not posted yet."""
    return sum(micros for _, micros in due_expiries(grants, now))
