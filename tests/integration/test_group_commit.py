"""Group commit (concepts.md rule 13): money-path writes in flight at once in
one process share one transaction and one commit, each with its own outcome.

To build one batch for certain, a first unit of work holds the lead inside its
transaction until the operations under test have queued behind it; the next
leader then takes all of them into one batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection

import aibill
from aibill import Billing, HoldStatus
from aibill.domain import errors as e
from aibill.store.group import GroupCommit

D = Decimal
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["in memory", "savepoints"])
def ledger(db_url: str, request: pytest.FixtureRequest) -> Iterator[Billing]:
    """A ledger with group commit, its batches applied either way on either database."""
    billing = aibill.connect(db_url, group_commit=True)
    _group(billing).in_memory = request.param == "in memory"
    try:
        billing.create_mandate("acme", currency="USD")
        billing.credit("acme", D("2.00"), idempotency_key="funding")
        yield billing
    finally:
        billing.close()


def _group(billing: Billing) -> GroupCommit:
    group = billing.group_commit
    assert group is not None
    return group


def _hold_the_lead(group: GroupCommit) -> tuple[threading.Thread, threading.Event]:
    """A unit of work that leads a batch of its own and stays inside its
    transaction until the returned event is set; returns once it is inside."""
    inside, release = threading.Event(), threading.Event()

    def work(conn: Connection) -> None:
        inside.set()
        release.wait(30)

    leader = threading.Thread(target=group.run, args=(work,))
    leader.start()
    assert inside.wait(30)
    return leader, release


def _one_batch(billing: Billing, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` concurrently so that they are applied in one batch; each
    call's result, or the exception it raised, in order."""
    group = _group(billing)
    leader, release = _hold_the_lead(group)
    outcomes: list[Any] = [None] * len(calls)

    def call(i: int) -> None:
        try:
            outcomes[i] = calls[i]()
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for i, thread in enumerate(threads):
        thread.start()
        while group.waiting < i + 1:  # queued in this order
            time.sleep(0.001)
    before = (group.batches, group.units)
    release.set()
    leader.join(30)
    for thread in threads:
        thread.join(30)
    # The lead's own batch, then one batch of every call.
    assert (group.batches, group.units) == (before[0] + 2, before[1] + 1 + len(calls))
    return outcomes


def test_a_batch_keeps_each_outcome_of_its_own(ledger: Billing) -> None:
    """Successes, a refusal, a conflict and a duplicate key, in one transaction:
    each caller gets its own outcome, and the refusal and the successes are kept."""
    first = ledger.hold("acme", amount=D("0.50"), idempotency_key="placed-before")
    outcomes = _one_batch(
        ledger,
        [
            lambda: ledger.hold("acme", amount=D("1.00"), idempotency_key="a"),
            lambda: ledger.hold("acme", amount=D("5.00"), idempotency_key="too-much"),
            lambda: ledger.hold("acme", amount=D("1.00"), idempotency_key="a"),  # duplicate
            lambda: ledger.hold("acme", amount=D("0.25"), idempotency_key="placed-before"),
            lambda: first.capture(D("0.40")),
            lambda: ledger.release("acme:hold_unknown"),
            lambda: ledger.credit("acme", D("1.00"), idempotency_key="top-up"),
        ],
    )
    placed, refused, duplicate, conflict, captured, unknown, credited = outcomes
    assert isinstance(placed, aibill.Hold) and placed.amount == D("1.00")
    assert isinstance(refused, e.InsufficientBalance)
    assert isinstance(duplicate, aibill.Hold) and duplicate.id == placed.id and duplicate.replayed
    assert isinstance(conflict, e.IdempotencyConflict)
    assert isinstance(captured, aibill.Entry) and captured.amount == D("0.40")
    assert isinstance(unknown, e.HoldNotFound)
    assert isinstance(credited, aibill.Entry)
    # Committed, each as if alone: the refusal is stored under its key, the rest posted.
    with pytest.raises(e.InsufficientBalance):
        ledger.hold("acme", amount=D("5.00"), idempotency_key="too-much")
    balance = ledger.balance("acme")
    assert balance.balance == D("2.60")  # 2.00 - 0.40 + 1.00
    assert balance.pending == D("1.00")
    assert ledger.verify() == []


def test_a_unit_that_fails_undoes_only_its_own_writes(ledger: Billing) -> None:
    """A capture that is refused after its hold row was read leaves the batch's
    other writes in place, and nothing of its own."""
    hold = ledger.hold("acme", amount=D("0.50"), idempotency_key="h")
    hold.capture(D("0.50"))
    outcomes = _one_batch(
        ledger,
        [
            lambda: ledger.capture(hold.id, amount=D("0.30")),  # already captured for 0.50
            lambda: ledger.hold("acme", amount=D("0.10"), idempotency_key="after"),
        ],
    )
    assert isinstance(outcomes[0], e.HoldAlreadyCaptured)
    assert isinstance(outcomes[1], aibill.Hold)
    assert ledger.balance("acme").balance == D("1.50")
    assert len(ledger.history("acme", kind="debit").entries) == 1
    assert ledger.verify() == []


def test_a_unit_that_fails_after_the_batch_wrote_is_applied_again_alone(ledger: Billing) -> None:
    """The batch keeps its writes in memory until its end; a unit that must
    read the database writes them first. When that unit then fails, its own
    writes cannot be taken back from memory: the batch is applied again, a
    savepoint per unit, with the same outcomes."""
    hold = ledger.hold("acme", amount=D("0.50"), idempotency_key="h")
    hold.capture(D("0.50"))
    group = _group(ledger)
    reruns = group.reruns
    outcomes = _one_batch(
        ledger,
        [
            lambda: ledger.hold("acme", amount=D("0.10"), idempotency_key="before"),
            lambda: ledger.capture(hold.id, amount=D("0.30")),  # reads the entry, then fails
            lambda: ledger.credit("acme", D("0.05"), idempotency_key="after"),
        ],
    )
    assert group.reruns == reruns + (1 if group.in_memory else 0)
    placed, refused, credited = outcomes
    assert isinstance(placed, aibill.Hold) and not placed.replayed
    assert isinstance(refused, e.HoldAlreadyCaptured)
    assert isinstance(credited, aibill.Entry) and credited.balance_after == D("1.55")
    balance = ledger.balance("acme")
    assert (balance.balance, balance.pending) == (D("1.55"), D("0.10"))
    assert len(ledger.history("acme", kind="debit").entries) == 1
    assert ledger.verify() == []


def test_holds_and_captures_of_one_batch_draw_in_order(ledger: Billing) -> None:
    """Units of one batch on one account see each other's changes in order:
    a capture frees its hold's reservation for the hold after it, a release
    too, and a credit funds the hold after it."""
    first = ledger.hold("acme", amount=D("1.50"), idempotency_key="first")
    second = ledger.hold("acme", amount=D("0.50"), idempotency_key="second")
    outcomes = _one_batch(
        ledger,
        [
            lambda: ledger.hold("acme", amount=D("0.50"), idempotency_key="no-room"),
            lambda: first.capture(D("1.00")),  # frees 1.50, posts 1.00
            lambda: ledger.hold("acme", amount=D("0.50"), idempotency_key="room"),
            lambda: ledger.hold("acme", amount=D("0.50"), idempotency_key="full-again"),
            second.release,
            lambda: ledger.hold("acme", amount=D("0.50"), idempotency_key="freed"),
            lambda: ledger.credit("acme", D("0.25"), idempotency_key="top-up"),
            lambda: ledger.hold("acme", amount=D("0.25"), idempotency_key="funded"),
            lambda: ledger.hold("acme", amount=D("0.50"), idempotency_key="room"),  # again
        ],
    )
    no_room, captured, room, full, released, freed, credited, funded, again = outcomes
    assert isinstance(no_room, e.InsufficientBalance) and no_room.available == D("0.00")
    assert isinstance(captured, aibill.Entry) and captured.balance_after == D("1.00")
    assert isinstance(room, aibill.Hold)
    assert isinstance(full, e.InsufficientBalance) and full.available == D("0.00")
    assert isinstance(released, aibill.Hold) and released.status is HoldStatus.RELEASED
    assert isinstance(freed, aibill.Hold)
    assert isinstance(credited, aibill.Entry) and credited.balance_after == D("1.25")
    assert isinstance(funded, aibill.Hold)
    assert isinstance(again, aibill.Hold) and again.id == room.id and again.replayed
    balance = ledger.balance("acme")
    assert (balance.balance, balance.pending, balance.available) == (
        D("1.25"),
        D("1.25"),
        D("0.00"),
    )
    assert {h.id for h in ledger.open_holds("acme")} == {room.id, freed.id, funded.id}
    assert ledger.verify() == []


def test_racing_threads_share_commits_and_never_overspend(ledger: Billing) -> None:
    """32 threads race for an account funded for 4 holds: exactly 4 succeed,
    every other is refused for the balance, and fewer commits than operations."""
    group = _group(ledger)
    before = (group.batches, group.units)
    barrier = threading.Barrier(32)
    outcomes: list[Any] = []

    def race(i: int) -> None:
        barrier.wait()
        try:
            outcomes.append(ledger.hold("acme", amount=D("0.50"), idempotency_key=f"r{i}"))
        except e.AibillError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    held = [o for o in outcomes if isinstance(o, aibill.Hold)]
    assert len(held) == 4
    assert all(isinstance(o, e.InsufficientBalance) for o in outcomes if o not in held)
    batches, units = group.batches - before[0], group.units - before[1]
    assert units == 32 and batches < units
    assert ledger.verify() == []


def test_by_default_it_is_on_and_keeps_writes_in_memory_on_postgresql(
    db_url: str, backend: str
) -> None:
    billing = aibill.connect(db_url)
    try:
        group = _group(billing)
        assert group.in_memory == (backend == "postgres")
    finally:
        billing.close()


def test_group_commit_can_be_switched_off(db_url: str) -> None:
    billing = aibill.connect(db_url, group_commit=False)
    try:
        assert billing.group_commit is None
        billing.create_mandate("solo")
        billing.credit("solo", D("1"), idempotency_key="c")
        billing.hold("solo", amount=D("1"), idempotency_key="h").capture(D("1"))
        assert billing.balance("solo").balance == D("0")
    finally:
        billing.close()


def test_a_lone_operation_is_its_own_batch(ledger: Billing) -> None:
    group = _group(ledger)
    before = (group.batches, group.units)
    ledger.hold("acme", amount=D("0.10"), idempotency_key="alone")
    assert (group.batches - before[0], group.units - before[1]) == (1, 1)


def test_the_queue_is_bounded(db_url: str) -> None:
    """Past ``max_queue`` waiting units, one more is refused at once, unapplied;
    one that waits past ``max_wait_s`` gives up, unapplied."""
    billing = aibill.connect(db_url)
    try:
        group = GroupCommit(billing.engine, max_queue=1, max_wait_s=1.0)
        leader, release = _hold_the_lead(group)
        results: list[Any] = []

        def wait_in_queue() -> None:
            try:
                results.append(group.run(lambda conn: "applied"))
            except e.StoreUnavailable as exc:
                results.append(exc)

        waiter = threading.Thread(target=wait_in_queue)
        waiter.start()
        while group.waiting < 1:
            time.sleep(0.001)
        with pytest.raises(e.StoreUnavailable):
            group.run(lambda conn: "never")  # one waiting already: the queue is full
        waiter.join(10)
        assert len(results) == 1 and isinstance(results[0], e.StoreUnavailable)
        assert group.waiting == 0
        release.set()
        leader.join(30)
        assert group.run(lambda conn: "applied") == "applied"
    finally:
        billing.close()
