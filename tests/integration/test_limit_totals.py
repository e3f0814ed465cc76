"""A spending limit keeps what its period has spent as a running total, counted
as each debit is written (concepts.md rule 7): a limit check reads that one
row, never the subject's history; the total is exact across periods (days,
ISO weeks, calendar months, in UTC), under concurrent writes, and ``verify``
recomputes it."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text

import aibill
from aibill import Billing, ManualClock
from aibill.domain import errors as e
from aibill.store import fast

START = datetime(2026, 2, 26, 22, 0, tzinfo=UTC)  # a Thursday, near a month's end


@pytest.fixture
def limited(billing: Billing) -> Iterator[Billing]:
    billing.create_mandate("acme", currency="USD")
    billing.credit("acme", D("1000"), idempotency_key="funding")
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    yield billing


def _spent(billing: Billing, user: str, period: str) -> D:
    """What ``user``'s ``period`` limit counts as spent now, as a refusal tells it."""
    with pytest.raises(e.LimitExceeded) as refused:
        billing.hold("acme", amount=D("0.000001"), user=user, idempotency_key=f"p-{user}-{period}")
    assert refused.value.details["period"] == period
    return D(refused.value.details["spent"])


_users = itertools.count()


def test_a_limit_check_reads_no_history(limited: Billing) -> None:
    limited.set_spending_limit("acme", D("100"), user="alice", period="month")
    for i in range(20):
        limited.record_usage("acme", amount=D("0.10"), user="alice", idempotency_key=f"u{i}")
    sent: list[str] = []

    def capture(conn: object, cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    event.listen(limited.engine, "before_cursor_execute", capture)
    try:
        with fast.observing(lambda sql, _params: sent.append(sql)):
            limited.hold("acme", amount=D("1"), user="alice", idempotency_key="h")
    finally:
        event.remove(limited.engine, "before_cursor_execute", capture)
    reads_entries = [s for s in sent if "FROM entries" in s]
    assert sent and reads_entries == []


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 60 * 60 * 40), st.integers(1, 50_000)), min_size=1, max_size=12
    )
)
def test_each_period_counts_its_own_debits(
    limited: Billing, clock: ManualClock, steps: list[tuple[int, int]]
) -> None:
    """Debits at times drawn across midnights, a Monday and a month's end: each
    limit's count is the sum of its period's debits, as the entries say."""
    user = f"user-{next(_users)}"
    limited.add_user(user)
    limited.add_member("acme", user)
    clock.set(START)
    for period in ("day", "week", "month"):
        limited.set_spending_limit("acme", D("900"), user=user, period=period)
    posted: list[tuple[datetime, int]] = []
    for seconds, micros in steps:
        clock.advance(seconds)
        key = f"{user}-{len(posted)}"
        limited.record_usage("acme", amount=D(micros) / 10**6, user=user, idempotency_key=key)
        posted.append((clock(), micros))
    assert limited.verify() == []
    now = clock()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = {
        "day": day,
        "week": day - timedelta(days=now.weekday()),
        "month": day.replace(day=1),
    }
    for period, start in starts.items():
        limited.set_spending_limit("acme", D("0"), user=user, period=period)
        expected = sum(m for at, m in posted if at >= start)
        assert _spent(limited, user, period) == D(expected) / 10**6
        limited.set_spending_limit("acme", D("900"), user=user, period=period)


def test_the_total_stays_exact_under_concurrent_writes(db_url: str) -> None:
    """Eight threads post usage for one user while the limit is changed: the
    running total always equals the period's entries."""
    billing = aibill.connect(db_url)
    try:
        billing.create_mandate("acme", currency="USD")
        billing.credit("acme", D("1000"), idempotency_key="funding")
        billing.add_user("alice")
        billing.add_member("acme", "alice")
        billing.set_spending_limit("acme", D("500"), user="alice", period="day")
        barrier = threading.Barrier(9)

        def post(n: int) -> None:
            barrier.wait()
            for i in range(15):
                billing.record_usage(
                    "acme", amount=D("0.01"), user="alice", idempotency_key=f"t{n}-{i}"
                )

        def change() -> None:
            barrier.wait()
            for amount in ("400", "450", "480", "499", "500"):
                billing.set_spending_limit("acme", D(amount), user="alice", period="day")

        threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
        threads.append(threading.Thread(target=change))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert billing.verify() == []
        with billing.engine.connect() as conn:
            spent = conn.execute(text("SELECT spent_micros FROM spending_limits")).scalar()
        assert spent == 8 * 15 * 10_000
    finally:
        billing.close()


def test_verify_finds_a_total_that_disagrees_with_the_entries(limited: Billing) -> None:
    limited.set_spending_limit("acme", D("100"), user="alice", period="week")
    limited.record_usage("acme", amount=D("0.25"), user="alice", idempotency_key="u")
    assert limited.verify() == []
    with limited.engine.begin() as conn:
        conn.execute(text("UPDATE spending_limits SET spent_micros = spent_micros + 1"))
    [drift] = limited.verify()
    assert (drift.account, drift.counter) == ("user:alice/week", "spent_micros")
    assert (drift.stored_micros, drift.computed_micros) == (250_001, 250_000)
