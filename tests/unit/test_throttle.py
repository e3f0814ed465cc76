"""The failure budget (``aibill.domain.throttle``) and the throttle's bounded
state (``aibill.http.throttle``), with their invariants checked by hypothesis."""

from __future__ import annotations

import contextlib
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibill.domain import errors as e
from aibill.domain.throttle import (
    NS_PER_S,
    FailureBudget,
    charge,
    is_spent,
    retry_after_s,
    wait_ns,
)
from aibill.http.throttle import AuthThrottle, address_subject, key_subject

KEY = "aibill_acme_0123456789ab_" + "f" * 64
OTHER_KEY = "aibill_acme_ba9876543210_" + "e" * 64


class FakeClock:
    def __init__(self) -> None:
        self.now_ns = 1_000 * NS_PER_S

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * NS_PER_S)


def run(budget: FailureBudget, times_ns: list[int]) -> list[int]:
    """Failures attempted at ``times_ns`` (sorted); the times of those let in."""
    tat: int | None = None
    accepted = []
    for now in times_ns:
        if wait_ns(budget, tat, now) == 0:
            accepted.append(now)
            tat = charge(budget, tat, now)
    return accepted


# ------------------------------------------------------------------ the rule


def test_a_burst_is_let_in_then_one_per_interval() -> None:
    budget = FailureBudget(burst=3, per_minute=60, max_lockout_s=60)
    t0 = 5 * NS_PER_S
    tat = None
    for _ in range(3):
        assert wait_ns(budget, tat, t0) == 0
        tat = charge(budget, tat, t0)
    assert retry_after_s(budget, tat, t0) == 1
    assert wait_ns(budget, tat, t0 + NS_PER_S - 1) > 0
    assert wait_ns(budget, tat, t0 + NS_PER_S) == 0
    assert tat is not None
    assert not is_spent(tat, t0 + 2 * NS_PER_S)
    assert is_spent(tat, t0 + 3 * NS_PER_S)


def test_no_failures_known_means_no_wait_and_off_means_never() -> None:
    assert wait_ns(FailureBudget(), None, 0) == 0
    off = FailureBudget(burst=1, enabled=False)
    assert wait_ns(off, charge(off, None, 0), 0) == 0


def test_a_flood_charged_at_once_locks_out_for_the_bound_at_most() -> None:
    budget = FailureBudget(burst=2, per_minute=60, max_lockout_s=10)
    tat = None
    for _ in range(10_000):  # concurrent requests, all let in before any failed
        tat = charge(budget, tat, 0)
    assert retry_after_s(budget, tat, 0) == 10
    assert wait_ns(budget, tat, 10 * NS_PER_S) == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"burst": 0}, "burst"),
        ({"burst": True}, "burst"),
        ({"per_minute": 0}, "per_minute"),
        ({"per_minute": 1.5}, "per_minute"),
        ({"max_lockout_s": 0}, "max_lockout_s"),
        ({"per_minute": 1, "max_lockout_s": 30}, "max_lockout_s"),  # one failure takes 60 s
    ],
)
def test_an_unusable_budget_is_refused_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(e.InvalidRequest) as raised:
        FailureBudget(**kwargs)  # type: ignore[arg-type]
    assert raised.value.details["field"] == field


budgets = st.builds(
    FailureBudget,
    burst=st.integers(1, 50),
    per_minute=st.integers(1, 6_000),
    max_lockout_s=st.integers(60, 600),
)
gaps = st.lists(st.integers(0, 3 * NS_PER_S), min_size=1, max_size=200)


def _times(gaps_ns: list[int]) -> list[int]:
    times, now = [], 0
    for gap in gaps_ns:
        now += gap
        times.append(now)
    return times


@settings(max_examples=100, deadline=None)
@given(budgets, gaps)
def test_never_more_failures_than_the_budget_in_any_window(
    budget: FailureBudget, gaps_ns: list[int]
) -> None:
    accepted = run(budget, _times(gaps_ns))
    for i, first in enumerate(accepted):
        for j in range(i, len(accepted)):
            window_ns = accepted[j] - first
            assert j - i + 1 <= budget.burst + window_ns // budget.interval_ns


@settings(max_examples=150, deadline=None)
@given(
    budgets,
    st.lists(st.tuples(st.integers(0, 5 * NS_PER_S), st.booleans()), min_size=1, max_size=300),
)
def test_the_lockout_never_exceeds_its_bound(
    budget: FailureBudget, events: list[tuple[int, bool]]
) -> None:
    """Failures charged whether or not they were let in (concurrent requests
    fail after the check), at any pace: the wait stays within the bound, and a
    subject that stops failing is let in once it has passed."""
    tat, now = None, 0
    for gap, checked in events:
        now += gap
        if checked and wait_ns(budget, tat, now) > 0:
            continue
        tat = charge(budget, tat, now)
        assert wait_ns(budget, tat, now) <= budget.max_lockout_ns
        assert 0 <= retry_after_s(budget, tat, now) <= budget.max_lockout_s
    assert wait_ns(budget, tat, now + budget.max_lockout_ns) == 0


@settings(max_examples=100, deadline=None)
@given(budgets, gaps)
def test_a_subject_that_keeps_trying_is_let_in_at_the_sustained_rate(
    budget: FailureBudget, gaps_ns: list[int]
) -> None:
    """Not a permanent lockout: trying every interval, a subject is let in each time."""
    start = sum(gaps_ns)
    flooded = run(budget, _times(gaps_ns))
    tat = None
    for t in flooded:
        tat = charge(budget, tat, t)
    later = [start + budget.max_lockout_ns + k * budget.interval_ns for k in range(5)]
    for t in later:
        assert wait_ns(budget, tat, t) == 0
        tat = charge(budget, tat, t)


# ----------------------------------------------------------- the throttle


def test_subjects_address_by_host_ipv6_by_network_and_key_by_its_id() -> None:
    assert address_subject("192.0.2.7") == ("addr", "192.0.2.7")
    assert address_subject("::ffff:192.0.2.7") == ("addr", "192.0.2.7")
    assert address_subject("2001:db8:1:2:aaaa::1") == address_subject("2001:db8:1:2:bbbb::9")
    assert address_subject("2001:db8:1:2::1") != address_subject("2001:db8:1:3::1")
    assert address_subject(None) == ("addr", "unknown")
    assert key_subject(KEY) == ("key", "acme", "0123456789ab")
    assert key_subject("aibill-admin_0123456789ab_" + "a" * 64) == ("key", "", "0123456789ab")
    assert key_subject("not a key") is None


def test_the_throttle_refuses_after_the_budget_and_forgives_after_the_wait() -> None:
    clock = FakeClock()
    throttle = AuthThrottle(FailureBudget(burst=3, per_minute=60), clock=clock)
    for _ in range(3):
        throttle.check("192.0.2.1", "wrong").failed()
    with pytest.raises(e.TooManyFailedAttempts) as raised:
        throttle.check("192.0.2.1", "wrong")
    assert raised.value.retry_after_s == 1
    assert raised.value.code == "too_many_failed_attempts"
    throttle.check("192.0.2.2", "wrong")  # another address is not affected
    clock.advance(1)
    throttle.check("192.0.2.1", "wrong")


def test_successes_spend_nothing() -> None:
    throttle = AuthThrottle(FailureBudget(burst=1, per_minute=60), clock=FakeClock())
    for _ in range(1_000):
        throttle.check("192.0.2.1", KEY).succeeded()
    throttle.check("192.0.2.1", KEY)
    assert throttle.sizes()[:2] == (0, 0)


def test_a_key_id_is_throttled_across_addresses_but_its_valid_secret_stays_in() -> None:
    clock = FakeClock()
    throttle = AuthThrottle(FailureBudget(burst=5, per_minute=60), clock=clock)
    throttle.check("198.51.100.1", KEY).succeeded()  # the real holder, seen once
    forged = KEY[:-64] + "0" * 64
    for n in range(5):
        throttle.check(f"203.0.113.{n}", forged).failed()
    with pytest.raises(e.TooManyFailedAttempts):
        throttle.check("203.0.113.200", forged)  # a fresh address, the same key id
    throttle.check("203.0.113.200", OTHER_KEY)  # another key id from there: fine
    throttle.check("203.0.113.201", KEY)  # the valid key: let in, from anywhere


def test_a_credential_that_fails_is_no_longer_exempt() -> None:
    throttle = AuthThrottle(FailureBudget(burst=1, per_minute=60), clock=FakeClock())
    throttle.check("192.0.2.1", KEY).succeeded()
    throttle.check("192.0.2.1", KEY).failed()  # revoked since
    with pytest.raises(e.TooManyFailedAttempts):
        throttle.check("192.0.2.1", KEY)


def test_the_state_is_bounded_however_many_subjects_fail() -> None:
    throttle = AuthThrottle(
        FailureBudget(burst=1, per_minute=60), clock=FakeClock(), max_subjects=50, max_remembered=7
    )
    for n in range(500):
        key = f"aibill_acme_{n:012x}_" + "f" * 64
        throttle.check(f"10.0.{n // 256}.{n % 256}", key).failed()
    for n in range(30):
        throttle.check("192.0.2.9", f"aibill_acme_{n:012x}_" + "a" * 64).succeeded()
    assert throttle.sizes() == (50, 50, 7)
    throttle.check("10.0.0.0", "x")  # the oldest was forgotten: let in again


def test_off_means_never_throttled() -> None:
    throttle = AuthThrottle(FailureBudget(burst=1, enabled=False), clock=FakeClock())
    for _ in range(100):
        throttle.check("192.0.2.1", "wrong").failed()
    assert throttle.sizes() == (0, 0, 0)


def test_the_log_says_once_per_episode_that_a_subject_is_throttled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    throttle = AuthThrottle(FailureBudget(burst=2, per_minute=60), clock=clock)
    caplog.set_level(logging.WARNING, logger="aibill.throttle")
    for _ in range(10):  # a steady attacker, trying faster than it is let in
        for _ in range(3):
            with contextlib.suppress(e.TooManyFailedAttempts):
                throttle.check("192.0.2.1", "wrong").failed()
        clock.advance(1)
    assert len(caplog.records) == 1
    assert "192.0.2.1" in caplog.records[0].getMessage()
    clock.advance(60)  # quiet for a while: a new episode is logged again
    for _ in range(3):
        with contextlib.suppress(e.TooManyFailedAttempts):
            throttle.check("192.0.2.1", "wrong").failed()
    assert len(caplog.records) == 2
