"""A writer killed with SIGKILL mid-stream leaves a sound ledger.

Every operation the ledger acknowledged (returned to its caller) is durable and
recorded exactly once: repeating it with the same idempotency key and
arguments replays the first result and writes nothing. An operation that was
in flight when the process died is either wholly there or wholly absent, so
``verify`` finds no drift between the counters and the rows, and retrying it
with its key, as a client would, makes it take effect exactly once. The
counters and row counts then equal what the operations add up to.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

import aibill
from aibill import Billing, Entry, Hold, HoldStatus
from aibill.store.schema import entries, holds, idempotency_keys
from tests.integration.crash_writer import Step

WRITER = Path(__file__).with_name("crash_writer.py")
MANDATE = "crashco"
FUNDS = Decimal("100000")
KILLS = 20
KILL_AFTER_S = (0.05, 0.5)
READY_TIMEOUT_S = 60
SETTLE_TIMEOUT_S = 30


def _start_writer(db_url: str, run: int, out: Path, err: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(WRITER), db_url, MANDATE, str(run)], stdout=stdout, stderr=stderr
        )


def _wait_until_ready(proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while b'"ready"' not in out.read_bytes():
        if proc.poll() is not None:
            pytest.fail(f"writer exited with {proc.returncode}: {err.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"writer not ready after {READY_TIMEOUT_S} s: {err.read_text()}")
        time.sleep(0.01)


def _acknowledged(out: Path) -> list[dict[str, Any]]:
    """The operations the writer printed; a line cut short by the kill is not one."""
    data = out.read_text()
    complete = data[: data.rfind("\n") + 1]
    lines = [json.loads(line) for line in complete.splitlines()]
    return [line for line in lines if line["op"] != "ready"]


def _settle(billing: Billing) -> None:
    """On PostgreSQL, wait until the server has ended the dead writer's session
    (committing a COMMIT it had already received, or rolling back)."""
    if billing.engine.dialect.name != "postgresql":
        return
    others = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    with billing.engine.connect() as conn:
        while conn.execute(others).scalar_one():
            conn.commit()  # pg_stat_activity is read once per transaction
            assert time.monotonic() < deadline, "the killed writer's session did not end"
            time.sleep(0.01)


def _counters(billing: Billing) -> dict[str, Any]:
    """Everything an operation can change."""
    with billing.engine.connect() as conn:
        found: dict[str, Any] = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (holds, entries, idempotency_keys)
        }
    balance = billing.balance(MANDATE)
    found.update(
        credits=balance.credits_posted, debits=balance.debits_posted, pending=balance.pending
    )
    return found


def _expected(runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """What the ledger holds after exactly the operations of ``runs`` (and the
    initial funding credit), each applied once."""
    want: dict[str, Any] = {
        "holds": 0,
        "entries": 1,
        "idempotency_keys": 1,
        "credits": FUNDS,
        "debits": Decimal(0),
        "pending": Decimal(0),
    }
    for run, ops in runs.items():
        for op in ops:
            step = Step(run, op["step"])
            want["idempotency_keys"] += 1
            if op["op"] == "hold":
                want["holds"] += 1
                want["pending"] += step.hold_amount
            elif op["op"] in ("capture", "release"):
                want["pending"] -= step.hold_amount
            if op["op"] == "capture":
                want["debits"] += step.capture_amount
            elif op["op"] == "usage":
                want["debits"] += step.extra_amount
            elif op["op"] == "credit":
                want["credits"] += step.extra_amount
            if op["op"] in ("capture", "credit", "usage"):
                want["entries"] += 1
    return want


def _keys_written(billing: Billing, run: int) -> int:
    with billing.engine.connect() as conn:
        return conn.execute(
            select(func.count())
            .select_from(idempotency_keys)
            .where(idempotency_keys.c.idempotency_key.like(f"r{run}-%"))
        ).scalar_one()


def _call(billing: Billing, run: int, op: str, index: int, hold_id: str | None) -> Hold | Entry:
    """Operation ``op`` of the writer's step ``index``, with its key and arguments."""
    step = Step(run, index)
    if op == "hold":
        return billing.hold(MANDATE, amount=step.hold_amount, idempotency_key=step.hold_key)
    if op in ("capture", "release"):
        assert hold_id is not None
        if op == "capture":
            return billing.capture(
                hold_id, amount=step.capture_amount, idempotency_key=step.resolve_key
            )
        return billing.release(hold_id, idempotency_key=step.resolve_key)
    if op == "credit":
        assert step.credit_key is not None
        return billing.credit(MANDATE, step.extra_amount, idempotency_key=step.credit_key)
    assert op == "usage"
    assert step.usage_key is not None
    return billing.record_usage(MANDATE, amount=step.extra_amount, idempotency_key=step.usage_key)


def _repeat(billing: Billing, run: int, op: dict[str, Any]) -> None:
    """Repeat one acknowledged operation; it must replay its first result."""
    result = _call(billing, run, op["op"], op["step"], op["hold"])
    assert (result.id, result.replayed) == (op["id"], True), op
    if op["op"] in ("capture", "release"):
        posted = billing.history(MANDATE, hold_id=op["hold"]).entries
        assert [e.id for e in posted] == ([op["id"]] if op["op"] == "capture" else []), op
        status = HoldStatus.CAPTURED if op["op"] == "capture" else HoldStatus.RELEASED
        assert billing.get_hold(op["hold"]).status is status, op


def _in_flight(run: int, acked: list[dict[str, Any]]) -> tuple[str, int, str | None]:
    """The operation the writer was running when it was killed: the one after
    the last it acknowledged, as ``(op, step, hold id)``."""
    if not acked:
        return ("hold", 0, None)
    last = acked[-1]
    step = Step(run, last["step"])
    order = ["hold", "release" if step.releases else "capture"]
    order += ["credit"] * (step.credit_key is not None) + ["usage"] * (step.usage_key is not None)
    after = order.index(last["op"]) + 1
    if after == len(order):
        return ("hold", step.index + 1, None)
    nxt = order[after]
    return (nxt, step.index, last["hold"] if nxt in ("capture", "release") else None)


def _check(db_url: str, runs: dict[int, list[dict[str, Any]]], run: int, why: str) -> None:
    """After the writer of ``run`` was killed: no drift; each operation it
    acknowledged is in the ledger once (repeating it replays it and changes
    nothing); the operation it had in flight, retried with its key as a client
    would, then takes effect at most once; and the ledger holds exactly what
    the operations of all runs so far add up to."""
    acked = runs[run]
    billing = aibill.connect(db_url)
    try:
        _settle(billing)
        assert billing.verify() == [], why
        # The writer runs one operation at a time, so at most the one in
        # flight at the kill may have committed without being acknowledged.
        assert len(acked) <= _keys_written(billing, run) <= len(acked) + 1, why
        before = _counters(billing)
        for op in acked:
            _repeat(billing, run, op)
        assert _counters(billing) == before, why

        op, index, hold_id = _in_flight(run, acked)
        result = _call(billing, run, op, index, hold_id)
        hold_id = result.id if op == "hold" else hold_id
        acked.append({"op": op, "step": index, "id": result.id, "hold": hold_id})
        assert _counters(billing) == _expected(runs), why
        assert billing.verify() == [], why
    finally:
        billing.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_acknowledged_operations_survive_sigkill(db_url: str, tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    with aibill.connect(db_url) as billing:
        billing.create_mandate(MANDATE, billing_model="prepay_mandate")
        billing.credit(MANDATE, FUNDS, idempotency_key="fund")

    acknowledged: dict[int, list[dict[str, Any]]] = {}
    for run in range(KILLS):
        out, err = tmp_path / f"writer-{run}.out", tmp_path / f"writer-{run}.err"
        proc = _start_writer(db_url, run, out, err)
        try:
            _wait_until_ready(proc, out, err)
            delay = rng.uniform(*KILL_AFTER_S)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        why = f"run {run}, killed after {delay:.3f} s (seed {seed})"
        assert proc.returncode == -signal.SIGKILL, f"{why}: writer failed: {err.read_text()}"
        acknowledged[run] = _acknowledged(out)
        _check(db_url, acknowledged, run, why)

    # Later writers did not disturb what earlier ones were told was done.
    assert sum(len(ops) for ops in acknowledged.values()) > 2 * KILLS
    with aibill.connect(db_url) as billing:
        for run, ops in acknowledged.items():
            for op in ops:
                _repeat(billing, run, op)
        assert _counters(billing) == _expected(acknowledged)
        assert billing.verify() == []
