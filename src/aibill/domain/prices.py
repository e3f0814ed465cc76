"""The values of pricing: exchange rates, markups, custom and catalog prices,
and the charge a model call is billed (see ``aibill.service.pricing`` for how
they are set and applied, and ``docs/pricing.md``); and the checks every
pricing setting passes before it is stored (concepts.md rule 12)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from aibill.domain.errors import InvalidAmount, InvalidRequest
from aibill.domain.money import check_currency, to_decimal
from aibill.domain.text import check_line
from aibill.domain.usage import Usage

__all__ = [
    "DEFAULT_MARKUP_PERCENT",
    "MAX_MARKUP_PERCENT",
    "MAX_PICO",
    "MODEL_MAX_LENGTH",
    "MTOK_PRICE_PLACES",
    "PICO_PER_UNIT",
    "PRICE_MAX",
    "PROVIDER_MAX_LENGTH",
    "RATE_MAX",
    "RATE_MAX_DIGITS",
    "REQUEST_PRICE_PLACES",
    "Charge",
    "CustomPrice",
    "ExchangeRate",
    "Markup",
    "ModelPrice",
    "PriceTier",
    "check_currency_pair",
    "check_label",
    "check_markup_percent",
    "check_optional_price",
    "check_output_limit",
    "check_price",
    "check_provider_cost",
    "check_provider_currency",
    "check_rate",
    "check_rate_source",
    "parse_decimal",
]

PICO_PER_UNIT: Final = 10**12
MAX_PICO: Final = 2**63 - 1  # the entries' provider_cost_pico is a 64-bit integer

DEFAULT_MARKUP_PERCENT: Final = Decimal("50")
"""The platform's margin when no markup is set (the seed's value)."""
MAX_MARKUP_PERCENT: Final = Decimal("1000")

RATE_MAX_DIGITS: Final = 12
"""An exchange rate has at most 12 significant digits and 12 decimal places."""
RATE_MAX: Final = Decimal(10) ** 9

PRICE_MAX: Final = Decimal(10) ** 6
"""Largest custom price aibill accepts: a million per million tokens, or per request."""
MTOK_PRICE_PLACES: Final = 6
"""A price per million tokens has at most six decimals: then every token count
times the price is an exact number of pico-units (10^-12)."""
REQUEST_PRICE_PLACES: Final = 12

PROVIDER_MAX_LENGTH: Final = 64
MODEL_MAX_LENGTH: Final = 160
RATE_SOURCE_MAX_LENGTH: Final = 64


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


def check_provider_currency(value: object) -> str:
    """The currency a caller's provider cost is in, as ``check_currency`` checks
    it, the refusal naming ``provider_currency``."""
    try:
        return check_currency(value)  # type: ignore[arg-type]
    except InvalidRequest as exc:
        raise InvalidRequest(
            exc.message.replace("currency", "provider_currency", 1), field="provider_currency"
        ) from None


def check_markup_percent(value: object) -> Decimal:
    """A markup in percent: from 0 to ``MAX_MARKUP_PERCENT``, at most six decimals."""
    pct = parse_decimal(value, "percent", max_places=6, max_digits=12)
    if pct > MAX_MARKUP_PERCENT:
        raise InvalidAmount(
            f"percent must be from 0 to {MAX_MARKUP_PERCENT}, not {pct}.", field="percent"
        )
    return pct


def check_rate(value: object, field: str = "rate") -> Decimal:
    """An exchange rate: positive, at most ``RATE_MAX``, 12 significant digits
    and 12 decimals."""
    rate = parse_decimal(value, field, max_places=RATE_MAX_DIGITS, max_digits=RATE_MAX_DIGITS)
    if rate <= 0:
        raise InvalidAmount(f"{field} must be positive, not {rate}.", field=field)
    if rate > RATE_MAX:
        raise InvalidAmount(f"{field} {rate} is larger than aibill accepts.", field=field)
    return rate


def check_currency_pair(base: object, quote: object) -> tuple[str, str]:
    """The two currencies of an exchange rate, which must differ; a refusal
    names ``base`` or ``quote``."""
    try:
        base = check_currency(base)  # type: ignore[arg-type]
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message.replace("currency", "base", 1), field="base") from None
    try:
        quote = check_currency(quote)  # type: ignore[arg-type]
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message.replace("currency", "quote", 1), field="quote") from None
    if base == quote:
        raise InvalidRequest(
            f"An exchange rate needs two different currencies, not {base} to {quote}; "
            "the same currency always converts at 1.",
            field="quote",
        )
    return base, quote


def check_rate_source(source: object) -> str | None:
    """Where an exchange rate came from: a line of text, or None."""
    if source is None:
        return None
    return check_line(source, "source", max_length=RATE_SOURCE_MAX_LENGTH)


def check_label(value: object, field: str, max_length: int) -> str:
    """A provider or model name as pricing matches it: a non-empty printable
    string without surrounding spaces, at most ``max_length`` characters."""
    if (
        not isinstance(value, str)
        or not value
        or value != value.strip()
        or len(value) > max_length
        or not value.isprintable()
    ):
        raise InvalidRequest(
            f"{field} must be a non-empty string of at most {max_length} printable characters "
            f"without surrounding spaces, not {value!r}.",
            field=field,
        )
    return value


def check_price(value: object, field: str, places: int) -> Decimal:
    """A custom price: from 0 to ``PRICE_MAX``, at most ``places`` decimals."""
    price = parse_decimal(value, field, max_places=places, max_digits=places + 7)
    if price > PRICE_MAX:
        raise InvalidAmount(f"{field} {price} is larger than aibill accepts.", field=field)
    return price


def check_optional_price(value: object, field: str, places: int) -> Decimal | None:
    """A custom price, or None where the price has no such part."""
    return None if value is None else check_price(value, field, places)


def check_output_limit(value: object) -> int | None:
    """A model's maximum output tokens: a positive int, or None when unknown."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(
            f"output_limit must be a positive int or None, not {value!r}.",
            field="output_limit",
        )
    return value


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
