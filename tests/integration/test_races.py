"""Races on one account and on one hold, from real threads and real processes.

DESIGN rule 2: a hold succeeds only if ``available >= amount`` at that instant,
however many holds race for the same account, in one process or many.
Rule 3: a hold resolves exactly once; a second capture or release returns the
first outcome (same arguments) or a conflict, never a second debit.
Rule 7: the same idempotency key with the same arguments yields one result.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

import aibill
from aibill import Billing, HoldStatus
from tests.integration.race_workers import (
    Outcome,
    hold_process,
    place_hold,
    resolve_hold,
    resolve_process,
    run_together,
)

MANDATE = "acme"
AMOUNT = Decimal("0.50")
FUNDED_HOLDS = 10
THREADS = 32
PROCESSES = 4
PROCESS_TIMEOUT_S = 60

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ledger(db_url: str) -> Iterator[Billing]:
    """A prepaid mandate whose pool is funded for exactly ``FUNDED_HOLDS`` holds."""
    billing = aibill.connect(db_url, pool_size=THREADS)
    billing.create_mandate(MANDATE, billing_model="prepay_mandate")
    billing.credit(MANDATE, AMOUNT * FUNDED_HOLDS, idempotency_key="fund")
    yield billing
    billing.close()


def _run_processes(
    target: Callable[..., None], per_process: Sequence[tuple[Any, ...]]
) -> list[Outcome]:
    """Start one spawned process per argument tuple, all meeting at one barrier,
    and gather the outcomes each reports on a queue."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(per_process))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(*args, start, results), daemon=True)
        for args in per_process
    ]
    for p in procs:
        p.start()
    try:
        batches = [results.get(timeout=PROCESS_TIMEOUT_S) for _ in procs]
    except queue.Empty:
        pytest.fail(f"a process reported nothing; exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            p.join(PROCESS_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return [outcome for batch in batches for outcome in batch]


# ------------------------------------------------------------ holds on one account


def _assert_exactly_funded_holds_won(
    billing: Billing, outcomes: list[Outcome], attempts: int
) -> None:
    assert len(outcomes) == attempts
    kinds = Counter(o.kind for o in outcomes)
    assert kinds == {"hold": FUNDED_HOLDS, "InsufficientBalance": attempts - FUNDED_HOLDS}, [
        o for o in outcomes if o.kind not in ("hold", "InsufficientBalance")
    ]
    won = [o for o in outcomes if o.kind == "hold"]
    assert not any(o.replayed for o in won)
    assert len({o.ref for o in won}) == FUNDED_HOLDS
    for o in won:
        hold = billing.get_hold(o.ref)
        assert hold.status is HoldStatus.PENDING
        assert hold.amount == AMOUNT

    assert billing.verify() == []
    balance = billing.balance(MANDATE)
    assert balance.pending == AMOUNT * FUNDED_HOLDS
    assert balance.available == 0
    assert balance.balance == AMOUNT * FUNDED_HOLDS

    # Each key's first outcome, success or refusal, is what it replays.
    for o in outcomes:
        again = place_hold(billing, MANDATE, str(AMOUNT), o.key)
        assert again.kind == o.kind
        if o.kind == "hold":
            assert (again.ref, again.replayed) == (o.ref, True)
    assert billing.balance(MANDATE) == balance
    assert billing.verify() == []


def test_threads_cannot_hold_more_than_the_balance(ledger: Billing) -> None:
    outcomes = run_together(
        [partial(place_hold, ledger, MANDATE, str(AMOUNT), f"t-{i}") for i in range(THREADS)]
    )
    _assert_exactly_funded_holds_won(ledger, outcomes, THREADS)


@pytest.mark.slow
def test_processes_cannot_hold_more_than_the_balance(ledger: Billing, db_url: str) -> None:
    per_process = 5
    outcomes = _run_processes(
        hold_process,
        [
            (db_url, MANDATE, str(AMOUNT), [f"p{p}-{i}" for i in range(per_process)])
            for p in range(PROCESSES)
        ],
    )
    _assert_exactly_funded_holds_won(ledger, outcomes, PROCESSES * per_process)


# ------------------------------------------------------------ one hold, many resolvers

HOLD_AMOUNT = Decimal("1.00")
# A capture may post less or more than was held; one release competes with them.
CAPTURE_AMOUNTS = ("0.40", "0.60", "1.25")
TOP_UP = Decimal("100")


def _actions(tag: str, count: int, releases: bool = True) -> list[tuple[str, str, str | None]]:
    """``count`` competing resolutions of one hold, each with its own key: captures
    for a few different amounts (so some share an amount) and, if ``releases``,
    releases."""
    actions: list[tuple[str, str, str | None]] = []
    for i in range(count):
        slot = i % (len(CAPTURE_AMOUNTS) + (1 if releases else 0))
        if slot == len(CAPTURE_AMOUNTS):
            actions.append(("release", f"{tag}-release-{i}", None))
        else:
            actions.append(("capture", f"{tag}-capture-{i}", CAPTURE_AMOUNTS[slot]))
    return actions


def _assert_resolved_once(billing: Billing, hold_id: str, outcomes: list[Outcome]) -> Decimal:
    """Exactly one resolution won; every other call replayed it or was refused
    with the conflict that names it. Returns the amount it debited."""
    winners = [o for o in outcomes if o.kind in ("hold", "entry") and not o.replayed]
    assert len(winners) == 1, outcomes
    win = winners[0]
    debits = billing.history(MANDATE, hold_id=hold_id).entries
    hold = billing.get_hold(hold_id)

    if win.action == "capture":
        assert win.kind == "entry"
        assert win.amount is not None
        assert hold.status is HoldStatus.CAPTURED
        assert hold.entry_id == win.ref
        assert hold.captured_amount == Decimal(win.amount)
        assert [(d.id, d.kind.value, d.amount) for d in debits] == [
            (win.ref, "debit", Decimal(win.amount))
        ]
        for o in outcomes:
            if o is win:
                continue
            if o.action == "capture" and o.amount == win.amount:
                assert (o.kind, o.ref, o.replayed) == ("entry", win.ref, True), o
            else:
                assert o.kind == "HoldAlreadyCaptured", o
        return Decimal(win.amount)

    assert win.kind == "hold"
    assert win.ref == hold_id
    assert hold.status is HoldStatus.RELEASED
    assert debits == []
    for o in outcomes:
        if o is win:
            continue
        if o.action == "release":
            assert (o.kind, o.ref, o.replayed) == ("hold", hold_id, True), o
        else:
            assert o.kind == "HoldAlreadyReleased", o
    return Decimal(0)


def _top_up(billing: Billing) -> Decimal:
    """Fund the pool well beyond every hold of the resolution races; returns the credit."""
    billing.credit(MANDATE, TOP_UP, idempotency_key="top-up")
    return AMOUNT * FUNDED_HOLDS + TOP_UP


def _assert_ledger_after_resolutions(billing: Billing, credited: Decimal, debited: Decimal) -> None:
    assert billing.verify() == []
    balance = billing.balance(MANDATE)
    assert balance.pending == 0
    assert balance.debits_posted == debited
    assert balance.balance == credited - debited


def test_threads_resolve_one_hold_exactly_once(ledger: Billing) -> None:
    credited = _top_up(ledger)
    debited = Decimal(0)
    for rnd in range(6):
        hold = ledger.hold(MANDATE, amount=HOLD_AMOUNT, idempotency_key=f"h-{rnd}")
        # Every other round races captures only, so a capture surely wins one.
        actions = _actions(f"r{rnd}", 16, releases=rnd % 2 == 0)
        outcomes = run_together([partial(resolve_hold, ledger, hold.id, *a) for a in actions])
        assert len(outcomes) == len(actions)
        debited += _assert_resolved_once(ledger, hold.id, outcomes)
        _assert_ledger_after_resolutions(ledger, credited, debited)


@pytest.mark.slow
def test_processes_resolve_one_hold_exactly_once(ledger: Billing, db_url: str) -> None:
    credited = _top_up(ledger)
    hold_ids = [
        ledger.hold(MANDATE, amount=HOLD_AMOUNT, idempotency_key=f"h-{rnd}").id for rnd in range(3)
    ]
    per_process = 4
    outcomes = _run_processes(
        resolve_process,
        [
            (
                db_url,
                [
                    (h, _actions(f"r{r}-p{p}", per_process, releases=r != 1))
                    for r, h in enumerate(hold_ids)
                ],
            )
            for p in range(PROCESSES)
        ],
    )
    assert len(outcomes) == len(hold_ids) * PROCESSES * per_process
    debited = Decimal(0)
    for r, hold_id in enumerate(hold_ids):
        mine = [o for o in outcomes if o.key.startswith(f"r{r}-")]
        assert len(mine) == PROCESSES * per_process
        debited += _assert_resolved_once(ledger, hold_id, mine)
    _assert_ledger_after_resolutions(ledger, credited, debited)


# ------------------------------------------------------------ one idempotency key


def _assert_one_hold_for_the_key(billing: Billing, outcomes: list[Outcome], calls: int) -> None:
    assert len(outcomes) == calls
    assert {o.kind for o in outcomes} == {"hold"}, outcomes
    assert len({o.ref for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    assert billing.verify() == []
    balance = billing.balance(MANDATE)
    assert balance.pending == AMOUNT
    assert balance.available == AMOUNT * (FUNDED_HOLDS - 1)


def test_threads_with_one_key_create_one_hold(ledger: Billing) -> None:
    outcomes = run_together(
        [partial(place_hold, ledger, MANDATE, str(AMOUNT), "same-key") for _ in range(THREADS)]
    )
    _assert_one_hold_for_the_key(ledger, outcomes, THREADS)


@pytest.mark.slow
def test_processes_with_one_key_create_one_hold(ledger: Billing, db_url: str) -> None:
    per_process = 4
    outcomes = _run_processes(
        hold_process,
        [(db_url, MANDATE, str(AMOUNT), ["same-key"] * per_process) for _ in range(PROCESSES)],
    )
    _assert_one_hold_for_the_key(ledger, outcomes, PROCESSES * per_process)


def test_verify_sees_one_snapshot_while_writers_commit(ledger: Billing) -> None:
    """verify() compares counters with entries and holds read in one snapshot, so
    holds and captures committing meanwhile never look like drift."""
    import threading

    ledger.credit(MANDATE, Decimal("1000"), idempotency_key="more")
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            hold = ledger.hold(MANDATE, amount=Decimal("0.01"), idempotency_key=f"w{i}")
            ledger.capture(hold.id, amount=Decimal("0.01"))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        drifts = [d for _ in range(150) for d in ledger.verify()]
    finally:
        stop.set()
        thread.join()
    assert drifts == []
    assert ledger.verify() == []
