"""The arithmetic of a charge, as pure functions (concepts.md, "Money").

A charge is the exact provider cost, times the exchange rate, times
``1 + markup / 100``, rounded **once**, half-even, to micro-units. Every step
before the rounding is exact: it runs in :data:`EXACT`, a context that raises
instead of rounding. Finding the provider cost, the rate and the markup (the
catalog, custom prices, the stored rates and markups) is the pricing
service's work; what it does with them is here, with the cost of a call at a
custom price (:func:`custom_price_cost`) and which markup applies
(:func:`markup_precedence`).
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
from aibill.domain.prices import CustomPrice
from aibill.domain.usage import CostComponent, Usage

EXACT: Final = Context(
    prec=200,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, Rounded],
)
"""Decimal arithmetic that raises rather than round: a charge is exact until
the one rounding, :func:`~aibill.domain.money.round_to_micros`."""

_HUNDRED: Final = Decimal(100)
_MTOK: Final = 1_000_000
"""Tokens per million: the unit a custom token price is per."""


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


def estimate_usage(input_tokens: int, max_output_tokens: int, output_limit: int | None) -> Usage:
    """What an estimate prices (concepts.md rule 2): every input token at the full
    input price (no cache discount is assumed) and the output asked for, capped at
    the model's output limit where it is known."""
    output = max_output_tokens if output_limit is None else min(max_output_tokens, output_limit)
    return Usage(input_tokens=input_tokens, output_tokens=output)


def markup_precedence(*, of_mandate: bool, provider: str, model: str) -> int:
    """How specific a stored markup is, 0 the most: the mandate's for the
    provider and model, for the provider, for any; then the platform's in the
    same order. ``provider`` and ``model`` are ``''`` for "any". The markup
    with the lowest precedence among those that match a call applies."""
    return (0 if of_mandate else 3) + (0 if model else 1 if provider else 2)


_Part = tuple[str, str, int, Decimal, int, str | None]
"""A priced part of a call: usage key, price key, quantity, unit price, units
the price is per, and direction."""


def _custom_price_parts(price: CustomPrice, usage: Usage) -> list[_Part]:
    """The parts of ``usage`` a custom price charges, in the order a charge
    lists them: plain input, cache reads, cache writes, output, requests."""
    plain_input = usage.input_tokens
    cached: list[_Part] = []
    for token_type, unit_price, quantity in (
        ("cache_read", price.cache_read_mtok, usage.cache_read_tokens),
        ("cache_write", price.cache_write_mtok, usage.cache_write_tokens),
    ):
        if unit_price is not None:
            plain_input -= quantity
            cached.append(
                (f"{token_type}_tokens", f"{token_type}_mtok", quantity, unit_price, _MTOK, "input")
            )
    parts: list[_Part] = [
        ("input_tokens", "input_mtok", plain_input, price.input_mtok, _MTOK, "input"),
        *cached,
        ("output_tokens", "output_mtok", usage.output_tokens, price.output_mtok, _MTOK, "output"),
    ]
    if price.per_request is not None:
        parts.append(("requests", "per_request", usage.requests, price.per_request, 1, None))
    return parts


def custom_price_cost(
    price: CustomPrice, usage: Usage
) -> tuple[Decimal, tuple[CostComponent, ...]]:
    """The exact cost of ``usage`` at a custom price (tokens * price / 1,000,000),
    and its components (each part with a non-zero quantity).

    Cache reads and writes are charged at their own price when the custom
    price has one, and otherwise stay in the plain input (``input_tokens``
    includes them). Audio tokens are charged as plain input and output.
    """
    total = Decimal(0)
    components: list[CostComponent] = []
    for usage_key, price_key, quantity, unit_price, per, direction in _custom_price_parts(
        price, usage
    ):
        if not quantity:
            continue
        cost = EXACT.divide(EXACT.multiply(unit_price, Decimal(quantity)), Decimal(per))
        total = EXACT.add(total, cost)
        token_type = usage_key.removesuffix("_tokens") if "cache" in usage_key else None
        components.append(
            CostComponent(
                usage_key,
                price_key,
                quantity,
                str(unit_price),
                per,
                None,
                cost,
                direction,
                token_type,
            )
        )
    return total, tuple(components)
