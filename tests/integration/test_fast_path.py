"""The ledger's hot statements can be watched as the driver receives them: what
``bench/ledger.py`` records from one real cycle and replays through the bare
driver to measure the schema's own cost (its *floor*)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal as D
from typing import Any

from aibill import Billing
from aibill.store import fast


def test_observing_sees_each_statement_of_a_hold_and_capture_then_stops(billing: Billing) -> None:
    billing.create_mandate("acme", billing_model="prepay_mandate")
    billing.credit("acme", D("10"), idempotency_key="fund")
    seen: list[tuple[str, dict[str, Any]]] = []

    def observe(sql: str, params: Mapping[str, Any]) -> None:
        seen.append((sql, dict(params)))

    with fast.observing(observe):
        hold = billing.hold("acme", amount=D("0.50"), idempotency_key="h1")
        entry = billing.capture(hold.id, amount=D("0.31"), idempotency_key="c1")
    inserts = {sql.split()[2]: params for sql, params in seen if sql.startswith("INSERT")}
    # The rows the cycle wrote, with the values the driver stored.
    assert inserts["holds"]["hold_id"] == hold.id
    assert inserts["holds"]["amount_micros"] == 500_000
    assert inserts["entries"]["entry_id"] == entry.id
    assert inserts["entries"]["amount_micros"] == 310_000
    assert {p["idempotency_key"] for s, p in seen if "idempotency_keys" in s.split()[:3]} == {
        "h1",
        "c1",
    }
    assert any(sql.startswith("UPDATE accounts") for sql, _ in seen)

    count = len(seen)
    billing.hold("acme", amount=D("0.10"), idempotency_key="h2")
    assert len(seen) == count  # no longer watched
