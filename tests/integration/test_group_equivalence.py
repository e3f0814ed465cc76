"""Group commit applies each unit as it would be applied alone (concepts.md
rule 13): hypothesis draws holds, captures, releases, usage records and
credits, with keys used twice (by the same operation or another) and amounts
over the balance; they are applied one at a time in one mandate and as one
batch in a twin mandate, and every outcome, balance and check must agree."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aibill
from aibill import Billing
from aibill.domain import errors as e
from tests.integration.test_group_commit import _one_batch

pytestmark = pytest.mark.timeout(600)
_twins = itertools.count()
cents = st.integers(1, 150)
keys = st.integers(0, 4)
ops = st.one_of(
    st.tuples(st.just("hold"), cents, keys),
    st.tuples(st.just("capture"), st.integers(0, 2), cents, st.none() | keys),
    st.tuples(st.just("release"), st.integers(0, 2), st.none() | keys),
    st.tuples(st.just("usage"), cents, st.booleans(), keys),
    st.tuples(st.just("credit"), cents, keys),
)


@pytest.fixture(params=["in memory", "savepoints"])
def grouped(db_url: str, request: pytest.FixtureRequest) -> Iterator[Billing]:
    billing = aibill.connect(db_url, group_commit=True)
    group = billing.group_commit
    assert group is not None
    group.in_memory = request.param == "in memory"
    yield billing
    billing.close()


def _twin(billing: Billing, name: str) -> list[aibill.Hold]:
    billing.create_mandate(name, currency="USD")
    billing.credit(name, D("2.00"), idempotency_key="funding")
    return [
        billing.hold(name, amount=D(amount), idempotency_key=f"made-{i}")
        for i, amount in enumerate(("0.50", "0.30", "0.20"))
    ]


def _call(billing: Billing, mandate: str, holds: list[aibill.Hold], op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "hold":
        return billing.hold(mandate, amount=D(op[1]) / 100, idempotency_key=f"k{op[2]}")
    if kind == "capture":
        key = None if op[3] is None else f"k{op[3]}"
        return billing.capture(holds[op[1]].id, amount=D(op[2]) / 100, idempotency_key=key)
    if kind == "release":
        key = None if op[2] is None else f"k{op[2]}"
        return billing.release(holds[op[1]].id, idempotency_key=key)
    if kind == "usage":
        return billing.record_usage(
            mandate, amount=D(op[1]) / 100, already_happened=op[2], idempotency_key=f"k{op[3]}"
        )
    return billing.credit(mandate, D(op[1]) / 100, idempotency_key=f"k{op[2]}")


def _seen(outcome: Any, ids: dict[str, str]) -> tuple[Any, ...]:
    """What a caller sees, with each twin's own hold ids named alike."""
    if isinstance(outcome, e.AibillError):
        details = {k: ids.get(str(v), v) for k, v in outcome.details.items() if k != "entry_id"}
        return ("error", outcome.code, str(sorted(details.items())))
    if isinstance(outcome, aibill.Hold):
        return (
            "hold",
            ids.get(outcome.id, "new"),
            outcome.amount,
            outcome.status,
            outcome.replayed,
        )
    return (
        "entry",
        outcome.kind,
        outcome.amount,
        outcome.balance_after,
        outcome.shortfall,
        ids.get(str(outcome.hold_id), outcome.hold_id),
        outcome.replayed,
    )


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except e.AibillError as exc:
        return exc


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=st.lists(ops, min_size=2, max_size=10))
def test_a_batch_applies_each_unit_as_it_would_alone(
    grouped: Billing, drawn: list[tuple[Any, ...]]
) -> None:
    n = next(_twins)
    one, batch = f"one-{n}", f"batch-{n}"
    one_holds, batch_holds = _twin(grouped, one), _twin(grouped, batch)
    one_ids = {h.id: f"made-{i}" for i, h in enumerate(one_holds)}
    batch_ids = {h.id: f"made-{i}" for i, h in enumerate(batch_holds)}
    alone = [_outcome(lambda op=op: _call(grouped, one, one_holds, op)) for op in drawn]
    together = _one_batch(
        grouped, [lambda op=op: _call(grouped, batch, batch_holds, op) for op in drawn]
    )
    assert [_seen(o, batch_ids) for o in together] == [_seen(o, one_ids) for o in alone]
    first, second = grouped.balance(one), grouped.balance(batch)
    assert (second.balance, second.pending) == (first.balance, first.pending)
    assert grouped.verify(batch) == []
