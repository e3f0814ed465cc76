"""A ledger writer that ``test_crash`` kills with SIGKILL at random moments.

Run as ``python crash_writer.py URL MANDATE RUN``. It prints ``{"op": "ready"}``
once connected, then loops forever over ``Step(RUN, i)`` for i = 0, 1, ...: a hold,
then a capture or a release of it, and now and then a credit or a usage record
without a hold. After each call returns it prints one JSON line naming the
operation, its step, its idempotency key, the id of its result and the hold it
acted on, and flushes: a printed line is an operation the ledger acknowledged.

Keys and arguments depend only on ``RUN`` and the step, so the test can repeat
any printed operation exactly.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal

import aibill


class Step:
    """The operations of step ``i`` of run ``run``: their keys and amounts."""

    def __init__(self, run: int, i: int) -> None:
        self.index = i
        self.hold_key = f"r{run}-s{i}-hold"
        self.hold_amount = Decimal("0.01") * (1 + i % 7)
        self.releases = i % 4 == 3
        self.resolve_key = f"r{run}-s{i}-{'release' if self.releases else 'capture'}"
        # Captures post less than, exactly, or more than the hold.
        self.capture_amount = self.hold_amount * Decimal(("0.5", "1", "1.5")[i % 3])
        self.credit_key = f"r{run}-s{i}-credit" if i % 10 == 5 else None
        self.usage_key = f"r{run}-s{i}-usage" if i % 10 == 7 else None
        self.extra_amount = Decimal("0.03")


def _ack(op: str, step: Step, key: str, result_id: str, hold: str | None = None) -> None:
    line = {"op": op, "step": step.index, "key": key, "id": result_id, "hold": hold}
    print(json.dumps(line), flush=True)


def main(url: str, mandate: str, run: int) -> None:
    billing = aibill.connect(url)
    print(json.dumps({"op": "ready"}), flush=True)
    i = 0
    while True:
        step = Step(run, i)
        hold = billing.hold(mandate, amount=step.hold_amount, idempotency_key=step.hold_key)
        _ack("hold", step, step.hold_key, hold.id, hold.id)
        if step.releases:
            released = billing.release(hold.id, idempotency_key=step.resolve_key)
            _ack("release", step, step.resolve_key, released.id, hold.id)
        else:
            entry = billing.capture(
                hold.id, amount=step.capture_amount, idempotency_key=step.resolve_key
            )
            _ack("capture", step, step.resolve_key, entry.id, hold.id)
        if step.credit_key is not None:
            entry = billing.credit(mandate, step.extra_amount, idempotency_key=step.credit_key)
            _ack("credit", step, step.credit_key, entry.id)
        if step.usage_key is not None:
            entry = billing.record_usage(
                mandate, amount=step.extra_amount, idempotency_key=step.usage_key
            )
            _ack("usage", step, step.usage_key, entry.id)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
