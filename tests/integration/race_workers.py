"""Work done by the racing threads and processes of ``test_races``.

Each function here runs inside a process started with the "spawn" context, so
it opens its own ledger with ``aibill.connect`` and reports plain, picklable
tuples back through a queue. Nothing here is collected as a test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from typing import Any, NamedTuple

import aibill

BARRIER_TIMEOUT_S = 30
JOIN_TIMEOUT_S = 60


class Outcome(NamedTuple):
    """What one racing call got back.

    ``kind`` is ``"hold"`` or ``"entry"`` for a result, otherwise the name of
    the error class raised; ``ref`` is the result's id, or the error message.
    """

    action: str
    key: str
    amount: str | None
    kind: str
    ref: str
    replayed: bool


def _failure(action: str, key: str, amount: str | None, exc: BaseException) -> Outcome:
    return Outcome(action, key, amount, type(exc).__name__, str(exc), False)


def place_hold(billing: aibill.Billing, mandate: str, amount: str, key: str) -> Outcome:
    """One ``hold`` call, its result or refusal recorded as an ``Outcome``."""
    try:
        hold = billing.hold(mandate, amount=Decimal(amount), idempotency_key=key)
    except Exception as exc:
        return _failure("hold", key, amount, exc)
    return Outcome("hold", key, amount, "hold", hold.id, hold.replayed)


def resolve_hold(
    billing: aibill.Billing, hold_id: str, action: str, key: str, amount: str | None
) -> Outcome:
    """One ``capture`` (with ``amount``) or ``release`` of ``hold_id``."""
    try:
        if action == "capture":
            assert amount is not None
            entry = billing.capture(hold_id, amount=Decimal(amount), idempotency_key=key)
            return Outcome(action, key, amount, "entry", entry.id, entry.replayed)
        hold = billing.release(hold_id, idempotency_key=key)
    except Exception as exc:
        return _failure(action, key, amount, exc)
    return Outcome(action, key, amount, "hold", hold.id, hold.replayed)


def run_together(calls: Sequence[Callable[[], Outcome]]) -> list[Outcome]:
    """Run each call in its own thread, all released at once by a barrier."""
    barrier = threading.Barrier(len(calls))
    results: list[Outcome | None] = [None] * len(calls)

    def worker(i: int) -> None:
        try:
            barrier.wait(BARRIER_TIMEOUT_S)
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = _failure("thread", str(i), None, exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
    stuck = [i for i, t in enumerate(threads) if t.is_alive()]
    if stuck:
        raise RuntimeError(f"threads {stuck} did not finish within {JOIN_TIMEOUT_S} s")
    return [r for r in results if r is not None]


def hold_process(
    url: str,
    mandate: str,
    amount: str,
    keys: Sequence[str],
    start: Any,
    results: Any,
) -> None:
    """Process entry point: place one hold per key, each from its own thread,
    after every process has reached ``start`` (a multiprocessing Barrier)."""
    try:
        billing = aibill.connect(url, pool_size=len(keys))
        try:
            start.wait(BARRIER_TIMEOUT_S)
            out = run_together([partial(place_hold, billing, mandate, amount, k) for k in keys])
        finally:
            billing.close()
    except BaseException as exc:
        start.abort()  # the other processes stop waiting for this one
        out = [_failure("process", "-", None, exc)]
    results.put(out)


def resolve_process(
    url: str,
    rounds: Sequence[tuple[str, Sequence[tuple[str, str, str | None]]]],
    start: Any,
    results: Any,
) -> None:
    """Process entry point: for each ``(hold_id, actions)`` round, wait for
    every process at ``start``, then run each ``(action, key, amount)`` in its
    own thread against that hold."""
    out: list[Outcome] = []
    try:
        width = max(len(actions) for _, actions in rounds)
        billing = aibill.connect(url, pool_size=width)
        try:
            for hold_id, actions in rounds:
                start.wait(BARRIER_TIMEOUT_S)
                out.extend(
                    run_together(
                        [partial(resolve_hold, billing, hold_id, a, k, m) for a, k, m in actions]
                    )
                )
        finally:
            billing.close()
    except BaseException as exc:
        start.abort()
        out.append(_failure("process", "-", None, exc))
    results.put(out)
