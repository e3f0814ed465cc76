"""The arithmetic of a charge, as pure functions (concepts.md, "Money").

A charge is the exact provider cost, times the exchange rate, times
``1 + markup / 100``, rounded **once**, half-even, to micro-units. Every step
before the rounding is exact: it runs in :data:`EXACT`, a context that raises
instead of rounding. Finding the provider cost, the rate and the markup (the
catalog, custom prices, the stored rates and markups) is the pricing
service's work; what it does with them is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from typing import Final

from aibill.domain.money import round_to_micros

EXACT: Final = Context(
    prec=200,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, Rounded],
)
"""Decimal arithmetic that raises rather than round: a charge is exact until
the one rounding, :func:`~aibill.domain.money.round_to_micros`."""

_HUNDRED: Final = Decimal(100)


@dataclass(frozen=True, slots=True)
class PricedAmount:
    """Each step of a charge: ``converted`` (cost times rate) and ``exact``
    (marked up) are exact; ``micros`` is ``exact`` rounded once."""

    converted: Decimal
    exact: Decimal
    micros: int


def converted(cost: Decimal, rate: Decimal) -> Decimal:
    """The provider cost in the billing currency: ``cost * rate``, exactly."""
    return EXACT.multiply(cost, rate)


def marked_up(value: Decimal, percent: Decimal) -> Decimal:
    """``value * (1 + percent / 100)``, exactly: the platform's margin."""
    return EXACT.divide(EXACT.multiply(value, EXACT.add(_HUNDRED, percent)), _HUNDRED)


def priced(cost: Decimal, *, rate: Decimal, markup_percent: Decimal) -> PricedAmount:
    """What a call is billed (concepts.md, "Money": "converted ..., marked up,
    and rounded once, half-even"): the exact provider ``cost``, then times the
    exchange ``rate``, then times ``1 + markup_percent / 100``, then one
    half-even rounding to micro-units (rounding at any earlier step, or twice,
    could bill a different micro-unit)."""
    in_currency = converted(cost, rate)
    exact = marked_up(in_currency, markup_percent)
    return PricedAmount(converted=in_currency, exact=exact, micros=round_to_micros(exact))
