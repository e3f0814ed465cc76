"""Money crosses into micro-units at one place, exactly or not at all."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aibill
from aibill.domain.money import check_currency, from_micros, round_to_micros, to_micros


@pytest.mark.parametrize(
    ("value", "micros"),
    [(D("1"), 1_000_000), (D("0.000001"), 1), ("12.5", 12_500_000), (3, 3_000_000), (D("1E-6"), 1)],
)
def test_exact_amounts(value: object, micros: int) -> None:
    assert to_micros(value) == micros


@given(st.integers(min_value=1, max_value=10**15))
def test_round_trip_is_exact(micros: int) -> None:
    assert to_micros(from_micros(micros)) == micros
    assert from_micros(micros).as_tuple().exponent == -6


@pytest.mark.parametrize("value", [0.1, 1.0, float("nan"), True, None, [1], D("Infinity")])
def test_non_decimals_are_refused(value: object) -> None:
    with pytest.raises(aibill.InvalidAmount) as info:
        to_micros(value)
    assert info.value.details["field"] == "amount"


def test_zero_only_when_allowed() -> None:
    with pytest.raises(aibill.InvalidAmount):
        to_micros(D("0"))
    assert to_micros(D("0"), allow_zero=True) == 0


def test_half_even_rounding_once() -> None:
    assert round_to_micros(D("0.0000005")) == 0
    assert round_to_micros(D("0.0000015")) == 2
    assert round_to_micros(D("0.0000025")) == 2
    assert round_to_micros(D("1.23456789")) == 1_234_568


@pytest.mark.parametrize("code", ["chf", "CH", "CHFF", "", "12A"])
def test_currency_codes(code: str) -> None:
    with pytest.raises(aibill.InvalidRequest):
        check_currency(code)
    assert check_currency("USD") == "USD"
