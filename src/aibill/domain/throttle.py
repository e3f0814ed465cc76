"""A failure budget: how many failed attempts one subject (a client address, an
API key id) may make before it has to wait, and for how long at most.

The rule is the generic cell rate algorithm (a token bucket kept as one
number): a subject may fail ``burst`` times at once, then once per
``interval`` (``60 / per_minute`` seconds) for as long as it keeps failing.
Its whole state is the *theoretical arrival time* ``tat_ns`` of its next
failure; it waits while ``tat_ns - now`` is more than the burst's tolerance.

Two bounds hold whatever a subject does (``tests/unit/test_throttle.py``
checks them with hypothesis):

* in any window of ``w`` nanoseconds at most ``burst + w // interval_ns``
  failures are accepted;
* a wait is never longer than ``max_lockout_s``, however many failures were
  charged (also those charged concurrently, after the check let them in), and
  a subject that stops failing is let in again no later than that.

Time is an integer count of nanoseconds from a monotonic clock, so that the
arithmetic is exact. Pure functions, no I/O: the HTTP layer keeps the state.
"""

from __future__ import annotations

from dataclasses import dataclass

from aibill.domain import errors as e

NS_PER_S = 1_000_000_000
DEFAULT_BURST = 20
DEFAULT_PER_MINUTE = 60
DEFAULT_MAX_LOCKOUT_S = 60
MAX_BURST = 100_000
MAX_PER_MINUTE = 60_000


@dataclass(frozen=True, slots=True)
class FailureBudget:
    """How many failures a subject may make: ``burst`` at once, then
    ``per_minute`` (spread evenly), never locked out for more than
    ``max_lockout_s``. ``enabled=False`` turns the budget off."""

    burst: int = DEFAULT_BURST
    per_minute: int = DEFAULT_PER_MINUTE
    max_lockout_s: int = DEFAULT_MAX_LOCKOUT_S
    enabled: bool = True

    def __post_init__(self) -> None:
        for name, value, top in (
            ("burst", self.burst, MAX_BURST),
            ("per_minute", self.per_minute, MAX_PER_MINUTE),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise e.InvalidRequest(
                    f"The failure budget's {name} must be a whole number from 1 to {top},"
                    f" not {value!r}.",
                    field=name,
                )
        lockout = self.max_lockout_s
        if isinstance(lockout, bool) or not isinstance(lockout, int) or lockout < 1:
            raise e.InvalidRequest(
                f"max_lockout_s must be a whole number of seconds, 1 or more, not {lockout!r}.",
                field="max_lockout_s",
            )
        if lockout * NS_PER_S < self.interval_ns:
            raise e.InvalidRequest(
                f"max_lockout_s ({lockout}) is shorter than the {self.interval_ns / NS_PER_S:g} s"
                f" it takes to earn one failure back at {self.per_minute} per minute.",
                field="max_lockout_s",
            )

    @property
    def interval_ns(self) -> int:
        """The time it takes to earn one failure back."""
        return -(-60 * NS_PER_S // self.per_minute)

    @property
    def tolerance_ns(self) -> int:
        """How far ahead of now a subject's ``tat_ns`` may be while it is let in."""
        return (self.burst - 1) * self.interval_ns

    @property
    def max_lockout_ns(self) -> int:
        return self.max_lockout_s * NS_PER_S


def wait_ns(budget: FailureBudget, tat_ns: int | None, now_ns: int) -> int:
    """How long a subject whose state is ``tat_ns`` (None: no failures known)
    must wait at ``now_ns`` before its next attempt; 0 when it may try now."""
    if tat_ns is None or not budget.enabled:
        return 0
    return max(0, tat_ns - budget.tolerance_ns - now_ns)


def retry_after_s(budget: FailureBudget, tat_ns: int | None, now_ns: int) -> int:
    """:func:`wait_ns` in whole seconds, rounded up (for ``Retry-After``)."""
    return -(-wait_ns(budget, tat_ns, now_ns) // NS_PER_S)


def charge(budget: FailureBudget, tat_ns: int | None, now_ns: int) -> int:
    """The subject's state after one more failure at ``now_ns``. The state
    never runs further ahead than the longest lockout allows, so failures
    charged in a flood (concurrent requests that were all let in) cannot
    lock the subject out for longer than ``max_lockout_s``."""
    start = now_ns if tat_ns is None else max(tat_ns, now_ns)
    return min(start + budget.interval_ns, now_ns + budget.tolerance_ns + budget.max_lockout_ns)


def is_spent(tat_ns: int, now_ns: int) -> bool:
    """Whether a state says nothing any more (its failures are all earned
    back): forgetting it changes no answer."""
    return tat_ns <= now_ns
