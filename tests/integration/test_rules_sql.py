"""Where a rule is decided in SQL (atomically with its write), the database and
the pure function in ``aibill.domain.rules`` agree, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from aibill import Billing, ManualClock
from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.model import POOL_ACCOUNT
from aibill.domain.money import from_micros
from aibill.store.schema import accounts

MAX = 10**15
counter = st.integers(min_value=0, max_value=MAX)
_keys = itertools.count()


def _set_counters(billing: Billing, row: dict[str, int]) -> None:
    """Stage an account's counters directly: the database, not the ledger's
    history, is what decides here."""
    with billing.engine.begin() as conn:
        conn.execute(
            update(accounts)
            .where(accounts.c.mandate_id == "acme", accounts.c.account_id == POOL_ACCOUNT)
            .values(**row)
        )


@st.composite
def counters_and_amount(draw: st.DrawFn) -> tuple[dict[str, int], int]:
    row = {
        "credits_posted": draw(counter),
        "debits_posted": draw(counter),
        "debits_pending": draw(counter),
        "overdraft_limit": draw(counter),
    }
    available = (row["credits_posted"] - row["debits_posted"] - row["debits_pending"]) + row[
        "overdraft_limit"
    ]
    near = st.integers(min_value=max(1, available - 2), max_value=max(1, available + 2))
    amount = draw(st.one_of(near, st.integers(min_value=1, max_value=MAX)))
    return row, amount


@pytest.mark.parametrize("operation", ["hold", "record_usage"])
def test_the_conditional_update_decides_as_rules_fits_does(
    billing: Billing, operation: str
) -> None:
    """For random counters, a hold (or a usage record) succeeds exactly when
    ``rules.fits(available, amount)``; ``check`` (which asks the pure function)
    answers the same."""
    billing.create_mandate("acme", billing_model="prepay_mandate")

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(counters_and_amount())
    def agree(case: tuple[dict[str, int], int]) -> None:
        row, amount_micros = case
        _set_counters(billing, row)
        amount = from_micros(amount_micros)
        fits = rules.fits(
            rules.available(
                rules.balance(row["credits_posted"], row["debits_posted"]),
                row["debits_pending"],
                row["overdraft_limit"],
            ),
            amount_micros,
        )
        assert billing.check("acme", estimate=amount).allowed is fits
        key = f"k{next(_keys)}"
        try:
            if operation == "hold":
                billing.hold("acme", amount=amount, idempotency_key=key)
            else:
                billing.record_usage("acme", amount=amount, idempotency_key=key)
        except e.InsufficientBalance:
            taken = False
        else:
            taken = True
        assert taken is fits

    agree()


@pytest.mark.parametrize("offset_us", [-1, 0, 1])
def test_the_sql_that_finds_expired_holds_agrees_with_rules_is_expired(
    billing: Billing, clock: ManualClock, offset_us: int
) -> None:
    """A balance read stops counting a hold as pending exactly when
    ``rules.is_expired`` says it has expired, to the microsecond."""
    billing.create_mandate("acme", billing_model="prepay_mandate")
    billing.credit("acme", Decimal("10"), idempotency_key="fund")
    hold = billing.hold("acme", amount=Decimal("1"), ttl_s=60, idempotency_key="h")
    clock.set(hold.expires_at + timedelta(microseconds=offset_us))
    expired = rules.is_expired(hold.expires_at, clock())
    assert expired is (offset_us >= 0)
    pending = billing.balance("acme").pending
    assert pending == (Decimal("0") if expired else Decimal("1"))
    assert billing.get_hold(hold.id).status.value == ("expired" if expired else "pending")
