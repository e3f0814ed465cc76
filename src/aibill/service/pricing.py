"""What a model call is billed: provider price, exchange rate, markup, rounded once.

A charge is computed in four steps, in this order, and nothing is rounded
until the last one:

1. **Provider cost**, exact, in the price's currency: a custom price in force
   for the (provider, model) if an admin set one, else the bundled
   ``genai-prices`` catalog. An unknown model without a custom price is
   ``UnknownModel``, never a price of 0.
2. **Exchange rate** from that currency into the mandate's billing currency,
   the rate in force at the request time (the latest ``valid_from`` not after
   it). The same currency needs no rate. A missing rate is
   ``MissingExchangeRate``: aibill never assumes 1:1 and never inverts the
   opposite pair's rate (an inverse rate is a different number, rounded by
   whoever published the original; an admin who wants it sets it).
3. **Markup**: times ``1 + percent / 100``, the most specific markup set for
   the mandate, provider and model, 50 % when none is.
4. **Rounding** half-even, once, to micro-units of the billing currency.

Prices, rates and markups are data in the store (see ``docs/pricing.md``);
every setting is validated here first: ``Decimal``, ``int`` or decimal
strings only, floats refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, TypeVar

from sqlalchemy import Connection

from aibill.catalog import CATALOG_CURRENCY
from aibill.domain import pricing_rules
from aibill.domain.errors import InvalidAmount, InvalidRequest, UnknownMandate, UnknownModel
from aibill.domain.model import check_name
from aibill.domain.money import MAX_AMOUNT_MICROS, check_currency, from_micros
from aibill.domain.prices import (
    DEFAULT_MARKUP_PERCENT,
    MAX_MARKUP_PERCENT,
    MAX_PICO,
    MODEL_MAX_LENGTH,
    MTOK_PRICE_PLACES,
    PICO_PER_UNIT,
    PRICE_MAX,
    PROVIDER_MAX_LENGTH,
    RATE_MAX,
    RATE_MAX_DIGITS,
    REQUEST_PRICE_PLACES,
    Charge,
    CustomPrice,
    ExchangeRate,
    Markup,
    ModelPrice,
    PriceTier,
    check_label,
    check_markup_percent,
    check_provider_cost,
    check_provider_currency,
    parse_decimal,
)
from aibill.domain.principal import Scope
from aibill.domain.text import check_line
from aibill.domain.times import check_time
from aibill.domain.usage import COUNT_FIELDS, CostComponent, ProviderCost, Usage
from aibill.service.custom_prices import CustomPrices, custom_price_in_force
from aibill.service.markups import Markups, markup_in_force
from aibill.service.pricing_base import require_mandate
from aibill.service.rates import CSV_COLUMNS, CSV_OPTIONAL, ExchangeRates, rate_in_force
from aibill.store import ledger

T = TypeVar("T")
Memo = dict[tuple[Any, ...], Any]
"""Settings a run of quotes in one transaction has read, by what was asked."""

__all__ = [
    "CSV_COLUMNS",
    "CSV_OPTIONAL",
    "DEFAULT_MARKUP_PERCENT",
    "MAX_MARKUP_PERCENT",
    "MTOK_PRICE_PLACES",
    "PRICE_MAX",
    "RATE_MAX",
    "RATE_MAX_DIGITS",
    "REQUEST_PRICE_PLACES",
    "Charge",
    "CustomPrice",
    "ExchangeRate",
    "Markup",
    "ModelPrice",
    "PriceTier",
    "Pricing",
    "calculate_price_with_markup",
    "check_provider_cost",
    "check_provider_currency",
]

# Every product below runs in a context that raises instead of rounding: a
# charge is exact until its one rounding (aibill.domain.pricing_rules).
_EXACT: Final = pricing_rules.EXACT

PROVIDER_COST_SOURCE: Final = "caller"
"""A charge's ``price_source`` when the caller gave the provider cost."""


class _Cost:
    """A provider cost before conversion and markup, and where it came from;
    ``price`` is the breakdown's description of the price."""

    __slots__ = (
        "components",
        "currency",
        "model",
        "model_matched",
        "price",
        "provider",
        "source",
        "total",
        "usage",
    )

    def __init__(
        self,
        total: Decimal,
        currency: str,
        source: str,
        provider: str | None,
        model: str | None,
        model_matched: str | None,
        usage: Usage | None,
        components: tuple[CostComponent, ...],
    ) -> None:
        self.total, self.currency, self.source = total, currency, source
        self.provider, self.model, self.model_matched = provider, model, model_matched
        self.usage, self.components = usage, components
        self.price: dict[str, Any] = {"source": source}


# ------------------------------------------------------- the seed's markup


def calculate_price_with_markup(
    base_price: Decimal | int | str, percent: Decimal | int | str = DEFAULT_MARKUP_PERCENT
) -> Decimal:
    """The seed's ``calculatePriceWithMarkup``, exact.

    A price of zero or less gives 0 (the seed's rule: nothing to bill).
    Otherwise ``base_price * (1 + percent / 100)``, rounded half-even once to
    micro-units (:func:`aibill.domain.pricing_rules.priced` at a rate of 1);
    the result always has six decimal places. Floats are
    refused (``InvalidAmount``); ``percent`` must be from 0 to 1000.
    """
    base = parse_decimal(base_price, "base_price", max_places=18, max_digits=40, signed=True)
    pct = check_markup_percent(percent)
    if base <= 0:
        return from_micros(0)
    micros = pricing_rules.priced(base, rate=Decimal(1), markup_percent=pct).micros
    if micros > MAX_AMOUNT_MICROS:
        raise InvalidAmount(
            f"base_price {base} marked up is larger than aibill accepts.", field="base_price"
        )
    return from_micros(micros)


# ------------------------------------------------------------------ service


class Pricing(ExchangeRates, Markups, CustomPrices):
    """Exchange rates, markups and custom prices, and the charge of a model call.

    Settings are written to the store (each call one transaction); quoting
    reads them inside the caller's transaction (:meth:`quote`) or its own
    (:meth:`price`), with at most three queries and no in-process cache, so
    every process sees a setting as soon as it is committed.
    """

    def model_price(
        self,
        provider: str,
        model: str,
        *,
        mandate: str | None = None,
        at: datetime | None = None,
    ) -> ModelPrice:
        """The prices in force for ``model`` of ``provider`` at ``at`` (default:
        now), chosen as a call's charge chooses them: ``mandate``'s custom price,
        else the platform's, else the catalog's. Without ``mandate``, the
        platform's custom price or the catalog's.

        Raises ``UnknownModel`` when neither a custom price nor the catalog
        knows the model. Reading a mandate's price needs ``billing:use`` or
        ``billing:read`` there.
        """
        prov = check_label(provider, "provider", PROVIDER_MAX_LENGTH)
        mod = check_label(model, "model", MODEL_MAX_LENGTH)
        if mandate is not None:
            check_name(mandate, "mandate")
        when = self._now() if at is None else check_time(at, "at")

        def work(conn: Connection) -> ModelPrice:
            if mandate is not None:
                self._guard_call_cost(conn, mandate)
                require_mandate(conn, mandate)
            custom = custom_price_in_force(conn, mandate, prov, mod, when)
            if custom is None:
                found = self._catalog.model_price(prov, mod, when)
                return dataclasses.replace(found, mandate=mandate)
            try:
                window = self._catalog.context_window(prov, mod)
                limit = custom.output_limit or self._catalog.output_limit(prov, mod)
            except UnknownModel:
                window, limit = None, custom.output_limit
            return _custom_model_price(custom, prov, mod, mandate, when, window, limit)

        return self._read(work)

    # ---------------------------------------------------------------- quoting

    def quote(
        self,
        conn: Connection,
        *,
        mandate: str,
        currency: str,
        provider: str,
        model: str,
        usage: Usage,
        at: datetime,
        memo: Memo | None = None,
    ) -> Charge:
        """The charge for ``usage`` of ``model`` by ``mandate`` (billed in
        ``currency``) at request time ``at``, read inside the caller's
        transaction ``conn``. With ``memo``, a setting read once is not read
        again: many calls priced in one transaction at one time (a batch)
        read each price, rate and markup once.

        Provider cost (custom price or catalog), exact -> times the exchange
        rate in force at ``at`` -> times ``1 + markup / 100`` -> rounded once,
        half-even, to micro-units (see :func:`_charge`). Raises ``UnknownModel``
        (no custom price and not in the catalog, or a catalog price that cannot
        be kept exactly), ``MissingExchangeRate``, or ``InvalidRequest`` for a
        malformed call.
        """
        check_name(mandate, "mandate")
        cur = check_currency(currency)
        prov = check_label(provider, "provider", PROVIDER_MAX_LENGTH)
        mod = check_label(model, "model", MODEL_MAX_LENGTH)
        if not isinstance(usage, Usage):
            raise InvalidRequest(
                f"usage must be an aibill Usage, not {type(usage).__name__}.", field="usage"
            )
        when = check_time(at, "at")
        cost = self._usage_cost(conn, mandate, prov, mod, usage, when, memo)
        pico = _EXACT.multiply(cost.total, Decimal(PICO_PER_UNIT))
        if pico != pico.to_integral_value():
            raise UnknownModel(
                prov,
                mod,
                f"The price of model {mod!r} of provider {prov!r} ({cost.source}) gives a cost "
                f"of {cost.total} {cost.currency}, finer than 10^-12, which aibill cannot keep "
                "exactly; set a custom price for this model.",
            )
        return _charge(conn, cost, mandate=mandate, currency=cur, at=when, memo=memo)

    def _usage_cost(
        self,
        conn: Connection,
        mandate: str,
        provider: str,
        model: str,
        usage: Usage,
        at: datetime,
        memo: Memo | None,
    ) -> _Cost:
        """The exact provider cost of ``usage``: at the custom price in force,
        else at the catalog's."""
        custom = _memoized(
            memo,
            ("custom", mandate, provider, model, at),
            lambda: custom_price_in_force(conn, mandate, provider, model, at),
        )
        if custom is not None:
            total, components = pricing_rules.custom_price_cost(custom, usage)
            cost = _Cost(
                total, custom.currency, custom.source, provider, model, model, usage, components
            )
            cost.price.update(
                scope="platform" if custom.mandate is None else "mandate",
                price_id=custom.price_id,
                valid_from=custom.valid_from.isoformat(),
            )
            return cost
        found: ProviderCost = self._catalog.price(provider, model, usage, at)
        cost = _Cost(
            found.total,
            found.currency,
            found.source,
            provider,
            model,
            found.model_id,
            usage,
            found.components,
        )
        cost.price.update(
            scope="catalog", provider_matched=found.provider_id, model_name=found.model_name
        )
        return cost

    def quote_cost(
        self,
        conn: Connection,
        *,
        mandate: str,
        currency: str,
        provider_cost: Decimal | int | str,
        provider_currency: str = CATALOG_CURRENCY,
        provider: str | None = None,
        model: str | None = None,
        at: datetime,
        memo: Memo | None = None,
    ) -> Charge:
        """The charge for a call whose provider cost the caller knows (the
        provider's own bill, or the seed's ``recordUsage(base)``): the same
        steps as :meth:`quote` from the provider cost on. ``provider_cost`` is
        exact and positive, at most 12 decimal places (pico-units), in
        ``provider_currency``; ``provider`` and ``model`` select the markup.
        The charge's ``price_source`` is ``caller``.
        """
        check_name(mandate, "mandate")
        cur = check_currency(currency)
        cost = _given_cost(provider_cost, provider_currency, provider, model)
        when = check_time(at, "at")
        return _charge(conn, cost, mandate=mandate, currency=cur, at=when, memo=memo)

    def price_cost(
        self,
        mandate: str,
        provider_cost: Decimal | int | str,
        *,
        provider_currency: str = CATALOG_CURRENCY,
        provider: str | None = None,
        model: str | None = None,
        at: datetime | None = None,
    ) -> Charge:
        """:meth:`quote_cost` in the mandate's own currency, in a read
        transaction of its own; ``at`` defaults to now. What
        ``Billing.record_usage(provider_cost=...)`` would post at ``at``.
        Needs a key that makes calls in the mandate or reads it."""
        check_name(mandate, "mandate")
        cost = _given_cost(provider_cost, provider_currency, provider, model)
        when = self._now() if at is None else check_time(at, "at")

        def work(conn: Connection) -> Charge:
            self._guard_call_cost(conn, mandate)
            row = ledger.mandate(conn, mandate, None, None)
            if row is None:
                raise UnknownMandate(mandate)
            return _charge(conn, cost, mandate=mandate, currency=row.currency, at=when)

        return self._read(work)

    def price(
        self,
        mandate: str,
        currency: str,
        provider: str,
        model: str,
        usage: Usage,
        at: datetime | None = None,
    ) -> Charge:
        """:meth:`quote` in a read transaction of its own; ``at`` defaults to now.
        Needs read access to ``mandate`` (its custom prices and markups are its own)."""
        when = self._now() if at is None else at

        def work(conn: Connection) -> Charge:
            self._authorize(conn, mandate, Scope.READ)
            return self.quote(
                conn,
                mandate=mandate,
                currency=currency,
                provider=provider,
                model=model,
                usage=usage,
                at=when,
            )

        return self._read(work)

    def output_limit(
        self,
        conn: Connection,
        mandate: str,
        provider: str,
        model: str,
        *,
        at: datetime | None = None,
    ) -> int | None:
        """The model's maximum output tokens, if known: the ``output_limit`` of the
        custom price in force at ``at`` (default: now) when it sets one, else
        the catalog's. A model the catalog lacks but a custom price covers
        gives None; a model neither knows is ``UnknownModel``."""
        check_name(mandate, "mandate")
        prov = check_label(provider, "provider", PROVIDER_MAX_LENGTH)
        mod = check_label(model, "model", MODEL_MAX_LENGTH)
        when = self._now() if at is None else check_time(at, "at")
        custom = custom_price_in_force(conn, mandate, prov, mod, when)
        if custom is None:
            return self._catalog.output_limit(prov, mod)
        if custom.output_limit is not None:
            return custom.output_limit
        try:
            return self._catalog.output_limit(prov, mod)
        except UnknownModel:
            return None


def _custom_model_price(
    custom: CustomPrice,
    provider: str,
    model: str,
    mandate: str | None,
    at: datetime,
    context_window: int | None,
    output_limit: int | None,
) -> ModelPrice:
    """A custom price as the prices in force for ``model`` of ``provider``."""
    return ModelPrice(
        provider=provider,
        model=model,
        model_matched=model,
        model_name=None,
        scope="platform" if custom.mandate is None else "mandate",
        source=custom.source,
        catalog_version=None,
        currency=custom.currency,
        input_mtok=custom.input_mtok,
        output_mtok=custom.output_mtok,
        cache_read_mtok=custom.cache_read_mtok,
        cache_write_mtok=custom.cache_write_mtok,
        per_request=custom.per_request,
        other_prices={},
        tiers=(),
        context_window=context_window,
        output_limit=output_limit,
        price_id=custom.price_id,
        valid_from=custom.valid_from,
        mandate=mandate,
        at=at,
    )


def _given_cost(
    provider_cost: object, provider_currency: object, provider: object, model: object
) -> _Cost:
    """A provider cost the caller gives, checked, ready for :func:`_charge`."""
    currency = check_provider_currency(provider_currency)
    total = check_provider_cost(provider_cost)
    prov = (
        None
        if provider is None
        else check_line(provider, "provider", max_length=PROVIDER_MAX_LENGTH)
    )
    mod = None if model is None else check_line(model, "model", max_length=MODEL_MAX_LENGTH)
    if mod is not None and prov is None:
        raise InvalidRequest("model needs its provider.", field="provider")
    cost = _Cost(total, currency, PROVIDER_COST_SOURCE, prov, mod, mod, None, ())
    cost.price["scope"] = "caller"
    return cost


def _memoized(memo: Memo | None, key: tuple[Any, ...], read: Callable[[], T]) -> T:
    """``read()``, or what it gave for ``key`` before in ``memo``."""
    if memo is None:
        return read()
    if key not in memo:
        memo[key] = read()
    value: T = memo[key]
    return value


def _charge(
    conn: Connection,
    cost: _Cost,
    *,
    mandate: str,
    currency: str,
    at: datetime,
    memo: Memo | None = None,
) -> Charge:
    """A charge: the exact provider cost -> times the rate from its currency
    to ``currency`` in force at ``at`` -> times ``1 + markup / 100`` (the
    most specific markup of the mandate, provider and model) -> rounded
    once, half-even, to micro-units. This finds the rate and the markup;
    the arithmetic is :func:`aibill.domain.pricing_rules.priced`."""
    field = "usage" if cost.usage is not None else "provider_cost"
    pico = _EXACT.multiply(cost.total, Decimal(PICO_PER_UNIT))
    if pico > MAX_PICO:
        raise InvalidAmount(
            f"The provider cost {cost.total} {cost.currency} of this call is larger than "
            "aibill accepts.",
            field=field,
        )
    rate, fx = _memoized(
        memo, ("fx", cost.currency, currency, at), lambda: _fx(conn, cost.currency, currency, at)
    )
    percent, markup_from = _memoized(
        memo,
        ("markup", mandate, cost.provider, cost.model),
        lambda: markup_in_force(conn, mandate, cost.provider, cost.model),
    )
    steps = pricing_rules.priced(cost.total, rate=rate, markup_percent=percent)
    if steps.micros > MAX_AMOUNT_MICROS:
        raise InvalidAmount(
            f"The charge {steps.exact} {currency} of this call is larger than aibill accepts.",
            field=field,
        )
    amount = from_micros(steps.micros)
    markup = {"percent": str(percent), **markup_from}
    return Charge(
        mandate=mandate,
        provider=cost.provider,
        model=cost.model,
        model_matched=cost.model_matched,
        usage=cost.usage,
        provider_cost=cost.total,
        provider_currency=cost.currency,
        provider_cost_pico=int(pico),
        price_source=cost.source,
        fx_rate=rate,
        markup_percent=percent,
        amount=amount,
        amount_micros=steps.micros,
        currency=currency,
        at=at,
        breakdown=_breakdown(cost, steps, amount, fx=fx, markup=markup, currency=currency, at=at),
    )


def _breakdown(
    cost: _Cost,
    steps: pricing_rules.PricedAmount,
    amount: Decimal,
    *,
    fx: dict[str, Any],
    markup: dict[str, Any],
    currency: str,
    at: datetime,
) -> dict[str, Any]:
    """A charge's JSON-ready record of everything that went into it."""
    return {
        "provider": cost.provider,
        "model": cost.model,
        "model_matched": cost.model_matched,
        "usage": None if cost.usage is None else _usage_counts(cost.usage),
        "price": cost.price,
        "unit_prices": {c.price_key: c.unit_price for c in cost.components},
        "components": [c.to_dict() for c in cost.components],
        "provider_cost": str(cost.total),
        "provider_currency": cost.currency,
        "fx": fx,
        "converted_cost": str(steps.converted),
        "markup": markup,
        "amount_exact": str(steps.exact),
        "amount": str(amount),
        "currency": currency,
        "at": at.isoformat(),
    }


def _fx(conn: Connection, base: str, quote: str, at: datetime) -> tuple[Decimal, dict[str, Any]]:
    """The rate from ``base`` to ``quote`` in force at ``at``, and how the
    breakdown names it (the same currency is 1, without a lookup)."""
    if base == quote:
        return Decimal(1), {"rate": "1", "from": base, "to": quote, "source": "same currency"}
    rate, row = rate_in_force(conn, base, quote, at)
    return rate, {
        "rate": str(rate),
        "from": base,
        "to": quote,
        "valid_from": row.valid_from.isoformat(),
        "source": row.source,
    }


def _usage_counts(usage: Usage) -> dict[str, int]:
    return {name: getattr(usage, name) for name in COUNT_FIELDS}
