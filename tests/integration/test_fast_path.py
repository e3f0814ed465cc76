"""The ledger's hot statements can be watched as the driver receives them: what
``bench/ledger.py`` records from one real cycle and replays through the bare
driver to measure the schema's own cost (its *floor*)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

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


# hypothesis draws naive datetimes between naive bounds: UTC wall-clock times here.
FIRST = datetime(1000, 1, 1, tzinfo=UTC).replace(tzinfo=None)
LAST = datetime(9999, 12, 31, tzinfo=UTC).replace(tzinfo=None)


@given(st.datetimes(min_value=FIRST, max_value=LAST))
def test_times_are_written_as_sqlalchemy_writes_them(value: datetime) -> None:
    """The fast path and SQLAlchemy's SQLite DATETIME must store the same text, or
    rows written by one would sort and compare wrongly against the other's."""
    aware = value.replace(tzinfo=UTC)
    assert fast._sqlite_time(aware) == value.strftime("%Y-%m-%d %H:%M:%S.%f")
    write = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert write is not None
    assert fast._sqlite_time(aware) == write(value)


@pytest.mark.parametrize("value", [None, {}, {"a": 1}, [1, "x"], {"k": {"n": None}}, "text"])
def test_json_is_written_as_the_json_encoder_writes_it(value: Any) -> None:
    assert fast._json_text(value) == json.dumps(value)
