"""The values of pricing: exchange rates, markups, custom and catalog prices,
and the charge a model call is billed (see ``aibill.service.pricing`` for how
they are set and applied, and ``docs/pricing.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from aibill.domain.errors import InvalidAmount
from aibill.domain.money import to_decimal
from aibill.domain.usage import Usage

__all__ = [
    "MAX_PICO",
    "PICO_PER_UNIT",
    "Charge",
    "CustomPrice",
    "ExchangeRate",
    "Markup",
    "ModelPrice",
    "PriceTier",
    "check_provider_cost",
    "parse_decimal",
]

PICO_PER_UNIT: Final = 10**12
MAX_PICO: Final = 2**63 - 1  # the entries' provider_cost_pico is a 64-bit integer


@dataclass(frozen=True, slots=True)
class ExchangeRate:
    """One unit of ``base`` is worth ``rate`` units of ``quote`` from ``valid_from`` on,
    until the next rate of the same pair starts."""

    base: str
    quote: str
    rate: Decimal
    valid_from: datetime
    source: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Markup:
    """A margin in percent. ``mandate`` None: platform-wide; ``provider``/``model``
    None: any provider / any model of the provider."""

    percent: Decimal
    mandate: str | None
    provider: str | None
    model: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CustomPrice:
    """An admin's price for one (provider, model), from ``valid_from`` on.

    Prices are per million tokens (``*_mtok``) and per request, in
    ``currency``. ``cache_read_mtok``/``cache_write_mtok`` None: cached tokens
    are charged as plain input. ``per_request`` None: no fee per request.
    ``mandate`` None: platform-wide. ``output_limit``: the model's maximum
    output tokens, if known.
    """

    price_id: str
    provider: str
    model: str
    currency: str
    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal | None
    cache_write_mtok: Decimal | None
    per_request: Decimal | None
    valid_from: datetime
    mandate: str | None
    output_limit: int | None
    created_at: datetime

    @property
    def source(self) -> str:
        """How a charge names this price: ``custom:<price_id>``."""
        return f"custom:{self.price_id}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, prices as decimal strings."""
        return {
            "price_id": self.price_id,
            "scope": "platform" if self.mandate is None else "mandate",
            "mandate": self.mandate,
            "provider": self.provider,
            "model": self.model,
            "currency": self.currency,
            "input_mtok": str(self.input_mtok),
            "output_mtok": str(self.output_mtok),
            "cache_read_mtok": _str_or_none(self.cache_read_mtok),
            "cache_write_mtok": _str_or_none(self.cache_write_mtok),
            "per_request": _str_or_none(self.per_request),
            "valid_from": self.valid_from.isoformat(),
            "output_limit": self.output_limit,
        }


@dataclass(frozen=True, slots=True)
class Charge:
    """What one model call is billed, with everything that went into it.

    ``provider_cost`` is exact in ``provider_currency`` (also as an integer of
    pico-units, ``provider_cost_pico``); ``price_source`` is the catalog
    (``genai-prices 0.2.3``), the custom price (``custom:<price_id>``), or
    ``caller`` when the caller gave the provider cost itself (then ``usage``
    is None, and ``provider``/``model`` are None unless the caller named them).
    ``amount = provider_cost * fx_rate * (1 + markup_percent / 100)``,
    rounded half-even once to micro-units of ``currency`` (the mandate's);
    ``amount_micros`` is the same in micro-units. ``at`` is the request time
    that selected the price and the rate. ``breakdown`` is a JSON-ready
    record of all of it: unit prices, component costs, the rate and the
    markup and where each came from.
    """

    mandate: str
    provider: str | None
    model: str | None
    model_matched: str | None
    usage: Usage | None
    provider_cost: Decimal
    provider_currency: str
    provider_cost_pico: int
    price_source: str
    fx_rate: Decimal
    markup_percent: Decimal
    amount: Decimal
    amount_micros: int
    currency: str
    at: datetime
    breakdown: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PriceTier:
    """A tier of a catalog price: in a call with more than ``above_input_tokens``
    input tokens, every unit of ``price_key`` costs ``price`` instead of the
    base price (the catalog's tiers are cliffs, see ``aibill.catalog``)."""

    price_key: str
    above_input_tokens: int
    price: Decimal


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """The prices in force for one model at ``at``: what a call would be priced
    at before conversion and markup (see :meth:`Pricing.model_price`).

    ``scope`` says which price applies, in the order a charge looks for one:
    ``mandate`` (the mandate's custom price), ``platform`` (the platform's
    custom price) or ``catalog``; ``source`` names it as a charge does
    (``custom:<price_id>``, or ``genai-prices 0.2.3``) and ``catalog_version``
    is the catalog's version when the catalog's price applies.

    Prices are exact, in ``currency`` (the catalog's are USD): per million
    tokens (``*_mtok``), and ``per_request`` per request. None: the price has
    no such part (cached tokens then cost plain input; a catalog model may lack
    even an input or output price). ``other_prices`` are the catalog's prices
    of the units aibill does not report, by the catalog's name
    (``web_searches_kcount``: per thousand searches). ``tiers`` are the prices
    that replace a base price above an input size, lowest first.
    ``model_matched`` is the catalog's id for the model (it may match another
    name, such as a dated snapshot); ``model_name`` its display name.
    ``context_window`` and ``output_limit`` are in tokens, when known.
    ``price_id`` and ``valid_from`` are the custom price's.
    """

    provider: str
    model: str
    model_matched: str
    model_name: str | None
    scope: str
    source: str
    catalog_version: str | None
    currency: str
    input_mtok: Decimal | None
    output_mtok: Decimal | None
    cache_read_mtok: Decimal | None
    cache_write_mtok: Decimal | None
    per_request: Decimal | None
    other_prices: dict[str, Decimal]
    tiers: tuple[PriceTier, ...]
    context_window: int | None
    output_limit: int | None
    price_id: str | None
    valid_from: datetime | None
    mandate: str | None
    at: datetime


def parse_decimal(
    value: object,
    field: str,
    *,
    max_places: int,
    max_digits: int,
    signed: bool = False,
) -> Decimal:
    """A Decimal from a Decimal, int or decimal string; never from a float."""
    number = to_decimal(value, field=field)
    if number.is_zero():
        return Decimal(0)
    if not signed and number < 0:
        raise InvalidAmount(f"{field} must not be negative, not {number}.", field=field)
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    # Trailing zeros say nothing about precision: 0.80 has one significant
    # digit and one decimal place, 100 has one significant digit.
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    significant = len(digits) - trailing
    places = max(0, -(exponent + trailing))
    if places > max_places:
        raise InvalidAmount(
            f"{field} {number} has more than {max_places} decimal places.", field=field
        )
    if significant > max_digits:
        raise InvalidAmount(
            f"{field} {number} has more than {max_digits} significant digits.", field=field
        )
    return number


def check_provider_cost(value: object) -> Decimal:
    """A provider cost the caller gives: positive, exact to pico-units (10^-12),
    without trailing zeros (``0.10`` is ``0.1``, as the ledger reads it back)."""
    cost = parse_decimal(value, "provider_cost", max_places=12, max_digits=19, signed=True)
    if cost <= 0:
        raise InvalidAmount(f"provider_cost must be positive, not {cost}.", field="provider_cost")
    if cost * PICO_PER_UNIT > MAX_PICO:
        raise InvalidAmount(
            f"provider_cost {cost} is larger than aibill accepts.", field="provider_cost"
        )
    return Decimal(format(cost.normalize(), "f"))


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
