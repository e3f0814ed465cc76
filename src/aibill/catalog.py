"""What a provider charges for one model call, exactly, in the provider's currency.

The prices come from the catalog bundled with ``genai-prices`` (only the
bundled snapshot: the catalog never fetches prices over the network). This
module turns aibill's :class:`Usage` into a :class:`ProviderCost`: the exact
Decimal total in USD, the cost of each priced part of the call and the unit
price applied to it. (This is the adapter to the bundled catalog; the pricing
service, ``aibill.service.pricing``, applies custom prices, exchange rates and
markups on top of it.)

    from aibill.catalog import Catalog, Usage
    cost = Catalog().price("openai", "gpt-4o", Usage(input_tokens=1200, output_tokens=512), at)
    cost.total  # Decimal('0.00812'), USD, exact

How a call is priced (the catalog's rules, applied here exactly):

* Token counts nest. ``input_tokens`` is the whole input; cache reads, cache
  writes and audio input are parts of it. Each part the model has its own
  price for is charged at that price, and only the remainder at the plain
  input price. Likewise ``output_audio_tokens`` is part of ``output_tokens``.
  A part the model has no price for stays in the remainder.
* Tiered prices are cliffs: once the call's total input tokens are *above* a
  tier's start, every token of every tiered unit is charged at that tier's
  price (200,000 input tokens: base price; 200,001: tier price).
* The request time selects the price in force (prices that changed on a date
  change at midnight UTC).
* Prices are Decimals per unit (per million tokens, per thousand requests);
  every multiplication and division runs in a context that raises instead of
  rounding, so a total is never rounded here. Rounding happens once, when the
  amount is posted (see ``aibill.domain.money``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import (
    Decimal,
)
from itertools import combinations
from typing import Final

import genai_prices
from genai_prices.data import providers as _bundled_providers
from genai_prices.data_snapshot import find_provider_by_id
from genai_prices.data_units import unit_data as _bundled_unit_data
from genai_prices.types import ModelInfo, Provider, TieredPrices
from genai_prices.types import ModelPrice as CatalogModelPrice
from genai_prices.units import UnitDef, UnitRegistry
from genai_prices.validation import validate_priced_units

from aibill.domain.errors import InvalidRequest, UnknownModel
from aibill.domain.prices import ModelPrice, PriceTier
from aibill.domain.pricing_rules import EXACT
from aibill.domain.times import check_time
from aibill.domain.usage import (
    COUNT_FIELDS,
    MAX_COUNT,
    TOKEN_FIELDS,
    CostComponent,
    ProviderCost,
    Usage,
)

__all__ = ["MAX_COUNT", "Catalog", "CostComponent", "ProviderCost", "Usage"]

CATALOG_CURRENCY: Final = "USD"

# Every price in the catalog is in USD and every cost is computed in this
# context: it is wide enough for any count aibill accepts and raises instead
# of rounding, so a cost is either exact or an error.
_EXACT: Final = EXACT  # the domain's exact arithmetic: raises rather than round
_ZERO: Final = Decimal(0)
_MODEL_PRICE_KEYS: Final = frozenset(
    {"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "per_request"}
)
"""The prices a :class:`ModelPrice` names; the catalog's others are ``other_prices``."""


@dataclass(frozen=True, slots=True)
class _Rate:
    """One price of a unit: the threshold it starts above, the price, and as shown."""

    tier_start: int | None
    price: Decimal
    per: Decimal
    shown: str


@dataclass(frozen=True, slots=True)
class _Part:
    """A priced unit of one model price, ready to be applied to a Usage."""

    unit: UnitDef
    field: str | None
    descendants: tuple[int, ...]
    rates: tuple[_Rate, ...]  # highest tier first, the base price last
    direction: str | None
    token_type: str | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """A model price prepared once: parts in the order leaves are computed."""

    parts: tuple[_Part, ...]
    order: tuple[int, ...]  # the order components are reported in
    tiered: bool
    conflicts: tuple[tuple[tuple[str, ...], str], ...]


class Catalog:
    """The price catalog bundled with genai-prices, as aibill uses it.

    Thread-safe. Model lookups are cached (least recently used first out,
    ``cache_size`` entries), and each model price is prepared once.
    """

    def __init__(self, *, cache_size: int = 4096) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise InvalidRequest("cache_size must be a positive int.", field="cache_size")
        self._providers: list[Provider] = _bundled_providers
        self._registry = UnitRegistry(_bundled_unit_data)
        self._cache_size = cache_size
        self._lookups: OrderedDict[tuple[str, str], tuple[Provider, ModelInfo] | str] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self._plans: dict[int, tuple[CatalogModelPrice, _Plan | UnknownModel]] = {}
        self._version: str = genai_prices.__version__
        self._source = f"genai-prices {self._version}"

    @property
    def version(self) -> str:
        """The version of genai-prices whose bundled prices are used, e.g. ``0.2.3``."""
        return self._version

    @property
    def source(self) -> str:
        """Where the prices come from, e.g. ``genai-prices 0.2.3``."""
        return self._source

    def providers(self) -> list[str]:
        """The ids of every provider in the catalog, sorted."""
        return sorted(p.id for p in self._providers)

    def models(self, provider: str) -> list[str]:
        """The ids of the models a provider lists, sorted.

        Raises ``UnknownModel`` (with model ``*``) for an unknown provider.
        """
        return sorted(m.id for m in self._provider(provider, "*").models)

    def output_limit(self, provider: str, model: str) -> int | None:
        """The model's maximum output tokens, if the catalog knew it.

        The catalog records no output limit for any model (only the context
        window, see :meth:`context_window`), so this is always None for a known
        model. An unknown provider or model raises ``UnknownModel``.
        """
        self._lookup(provider, model)
        return None

    def context_window(self, provider: str, model: str) -> int | None:
        """The model's context window in tokens, if the catalog knows it."""
        return self._lookup(provider, model)[1].context_window

    def price(self, provider: str, model: str, usage: Usage, at: datetime) -> ProviderCost:
        """The exact cost of ``usage`` on ``model`` of ``provider`` at request time ``at``.

        ``at`` must be timezone-aware. Raises ``UnknownModel`` when the catalog
        has no price for the provider or model (never a price of 0), and
        ``InvalidRequest`` for a malformed call.
        """
        if not isinstance(usage, Usage):
            raise InvalidRequest(
                f"usage must be an aibill Usage, not {type(usage).__name__}.", field="usage"
            )
        at = check_time(at, "at")
        provider_info, model_info = self._lookup(provider, model)
        plan = self._plan(model_info.get_prices(at), provider, model)
        components = _components(plan, _leaves(plan, usage), usage)
        total = input_cost = output_cost = _ZERO
        for component in components:
            total = _EXACT.add(total, component.cost)
            if component.direction == "input":
                input_cost = _EXACT.add(input_cost, component.cost)
            elif component.direction == "output":
                output_cost = _EXACT.add(output_cost, component.cost)
        return ProviderCost(
            provider,
            provider_info.id,
            model,
            model_info.id,
            model_info.name,
            CATALOG_CURRENCY,
            total,
            input_cost,
            output_cost,
            components,
            usage,
            at,
            self._source,
        )

    def model_price(self, provider: str, model: str, at: datetime) -> ModelPrice:
        """The prices of ``model`` of ``provider`` in force at ``at``, as
        :meth:`price` applies them (the model matched as a call's is), for no
        mandate. Raises ``UnknownModel`` for a model the catalog lacks."""
        _, info = self._lookup(provider, model)
        main: dict[str, Decimal] = {}
        other: dict[str, Decimal] = {}
        tiers: list[PriceTier] = []
        for price_key, value in vars(info.get_prices(at)).items():
            if price_key.startswith("_") or not isinstance(value, Decimal | TieredPrices):
                continue
            # Per-request fees are per thousand requests in the catalog, per request here.
            name, per = ("per_request", 1000) if price_key == "requests_kcount" else (price_key, 1)
            base = value.base if isinstance(value, TieredPrices) else value
            (main if name in _MODEL_PRICE_KEYS else other)[name] = _per_unit(base, per)
            if isinstance(value, TieredPrices):
                tiers += [PriceTier(name, t.start, _per_unit(t.price, per)) for t in value.tiers]
        return ModelPrice(
            provider=provider,
            model=model,
            model_matched=info.id,
            model_name=info.name,
            scope="catalog",
            source=self._source,
            catalog_version=self._version,
            currency=CATALOG_CURRENCY,
            input_mtok=main.get("input_mtok"),
            output_mtok=main.get("output_mtok"),
            cache_read_mtok=main.get("cache_read_mtok"),
            cache_write_mtok=main.get("cache_write_mtok"),
            per_request=main.get("per_request"),
            other_prices=other,
            tiers=tuple(sorted(tiers, key=lambda t: (t.above_input_tokens, t.price_key))),
            context_window=info.context_window,
            output_limit=self.output_limit(provider, model),
            price_id=None,
            valid_from=None,
            mandate=None,
            at=at,
        )

    # -- lookups ---------------------------------------------------------------

    def _provider(self, provider: str, model: str) -> Provider:
        if not isinstance(provider, str) or not provider.strip():
            raise InvalidRequest(
                f"provider must be a non-empty string, not {provider!r}.", field="provider"
            )
        found = find_provider_by_id(self._providers, provider)
        if found is None:
            raise UnknownModel(
                provider,
                model,
                f"No provider {provider!r} in the price catalog ({self._source}).",
            )
        return found

    def _lookup(self, provider: str, model: str) -> tuple[Provider, ModelInfo]:
        if not isinstance(provider, str) or not isinstance(model, str):
            bad, value = (
                ("provider", provider) if not isinstance(provider, str) else ("model", model)
            )
            raise InvalidRequest(f"{bad} must be a string, not {value!r}.", field=bad)
        key = (provider, model)
        with self._lock:
            hit = self._lookups.get(key)
            if hit is not None:
                self._lookups.move_to_end(key)
        if hit is None:
            hit = self._find(provider, model)
            with self._lock:
                self._lookups[key] = hit
                if len(self._lookups) > self._cache_size:
                    self._lookups.popitem(last=False)
        if isinstance(hit, str):
            raise UnknownModel(provider, model, hit)
        return hit

    def _find(self, provider: str, model: str) -> tuple[Provider, ModelInfo] | str:
        """The provider and model the catalog matches, or why there is none."""
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequest(f"model must be a non-empty string, not {model!r}.", field="model")
        try:
            provider_info = self._provider(provider, model)
        except UnknownModel as exc:
            return exc.message
        model_info = provider_info.find_model(model, all_providers=self._providers)
        if model_info is None:
            return (
                f"No price for model {model!r} of provider {provider_info.id!r} "
                f"in the price catalog ({self._source})."
            )
        return provider_info, model_info

    # -- preparing prices ------------------------------------------------------

    def _plan(self, model_price: CatalogModelPrice, provider: str, model: str) -> _Plan:
        entry = self._plans.get(id(model_price))
        if entry is None or entry[0] is not model_price:
            built: _Plan | UnknownModel
            try:
                built = self._build_plan(model_price)
            except (ValueError, ArithmeticError) as exc:
                built = UnknownModel(
                    provider,
                    model,
                    f"The catalog's price for model {model!r} of provider {provider!r} "
                    f"cannot be applied: {exc}",
                )
            entry = (model_price, built)
            self._plans[id(model_price)] = entry
        plan = entry[1]
        if isinstance(plan, UnknownModel):
            raise UnknownModel(provider, model, plan.message)
        return plan

    def _build_plan(self, model_price: CatalogModelPrice) -> _Plan:
        registry = self._registry
        priced: list[tuple[UnitDef, Decimal | TieredPrices]] = []
        for price_key, value in vars(model_price).items():
            if price_key.startswith("_") or value is None:
                continue
            try:
                unit = registry.unit_for_price_key(price_key)
            except KeyError:
                # A unit aibill cannot report is never used, so it costs nothing.
                continue
            if not isinstance(value, Decimal | TieredPrices):
                raise ValueError(f"{price_key} is {value!r}, not a price")
            priced.append((unit, value))
        validate_priced_units([unit for unit, _ in priced], registry)

        # Most specific units first: a unit's leaf is its count minus the leaves
        # of every priced unit nested in it.
        by_specificity = sorted(
            range(len(priced)),
            key=lambda i: (-len(priced[i][0].dimensions), priced[i][0].usage_key),
        )
        position = {index: pos for pos, index in enumerate(by_specificity)}
        reported = {name: registry.units[name] for name in TOKEN_FIELDS}
        parts: list[_Part] = []
        conflicts: list[tuple[tuple[str, ...], str]] = []
        for index in by_specificity:
            unit, value = priced[index]
            dims = unit.dimensions.items()
            descendants = tuple(
                position[other]
                for other in by_specificity[: position[index]]
                if dims <= priced[other][0].dimensions.items()
            )
            field = unit.usage_key if unit.usage_key in COUNT_FIELDS else None
            rates = _rates(value, unit.per) if field is not None else ()
            if field is None:
                conflicts.extend(_conflicts(unit, reported))
            parts.append(
                _Part(
                    unit=unit,
                    field=field,
                    descendants=descendants,
                    rates=rates,
                    direction=unit.dimensions.get("direction"),
                    token_type=unit.dimensions.get("token_type"),
                )
            )
        return _Plan(
            parts=tuple(parts),
            order=tuple(position[index] for index in range(len(priced))),
            tiered=any(isinstance(value, TieredPrices) for _, value in priced),
            conflicts=tuple(conflicts),
        )


def _leaves(plan: _Plan, usage: Usage) -> list[int]:
    """Each part's own count: its usage count less the parts nested in it (a
    part the model prices separately is charged at its own price only)."""
    for fields, message in plan.conflicts:
        if all(getattr(usage, name) > 0 for name in fields):
            raise InvalidRequest(message, field=fields[0])
    leaves = [0] * len(plan.parts)
    for i, part in enumerate(plan.parts):
        leaf: int = getattr(usage, part.field) if part.field is not None else 0
        for j in part.descendants:
            leaf -= leaves[j]
        if leaf < 0:
            raise InvalidRequest(
                f"The parts reported inside {part.unit.usage_key} exceed its count "
                f"({getattr(usage, part.field) if part.field else 0}).",
                field=part.field or part.unit.usage_key,
            )
        leaves[i] = leaf
    return leaves


def _components(plan: _Plan, leaves: list[int], usage: Usage) -> tuple[CostComponent, ...]:
    """The cost of every part with a non-zero count, each at the price of the
    highest tier the call's input is above (tiers are cliffs)."""
    threshold = usage.input_tokens if plan.tiered else 0
    components: list[CostComponent] = []
    for i in plan.order:
        quantity = leaves[i]
        if not quantity:
            continue
        part = plan.parts[i]
        rate = part.rates[-1]
        for candidate in part.rates:
            if candidate.tier_start is not None and threshold > candidate.tier_start:
                rate = candidate
                break
        components.append(
            CostComponent(
                part.unit.usage_key,
                part.unit.price_key,
                quantity,
                rate.shown,
                part.unit.per,
                rate.tier_start,
                _EXACT.divide(_EXACT.multiply(rate.price, Decimal(quantity)), rate.per),
                part.direction,
                part.token_type,
            )
        )
    return tuple(components)


def _per_unit(price: Decimal, per: int) -> Decimal:
    """A catalog price per ``per`` units, per unit, exactly."""
    return price if per == 1 else _EXACT.divide(price, Decimal(per))


def _rates(value: Decimal | TieredPrices, per: int) -> tuple[_Rate, ...]:
    """The prices of one unit, highest tier first."""
    # A count times a price divided by a power of ten is always exact.
    if per < 1 or 10 ** (len(str(per)) - 1) != per:
        raise ValueError(f"prices per {per} units cannot be applied exactly")

    def rate(start: int | None, price: Decimal) -> _Rate:
        if not price.is_finite() or price < 0:
            raise ValueError(f"price {price} is not a finite non-negative number")
        return _Rate(start, price, Decimal(per), str(price))

    if isinstance(value, TieredPrices):
        tiers = sorted(value.tiers, key=lambda tier: tier.start, reverse=True)
        return (*(rate(t.start, t.price) for t in tiers), rate(None, value.base))
    return (rate(None, value),)


def _conflicts(unit: UnitDef, reported: Mapping[str, UnitDef]) -> list[tuple[tuple[str, ...], str]]:
    """When a usage cannot be split for a priced unit aibill does not count.

    The catalog refuses to guess how many of the counted tokens belong to
    such a unit: when a count nested in it is non-zero, or when two counts
    whose overlap it is are both non-zero (e.g. a separate price for cached
    audio input, with both cache reads and audio input reported).
    """
    dims = unit.dimensions.items()
    found: list[tuple[tuple[str, ...], str]] = []
    for name, other in reported.items():
        if other is not unit and dims <= other.dimensions.items():
            found.append(
                (
                    (name,),
                    f"This model has a separate price for {unit.usage_key}, which aibill "
                    f"does not count; {name} cannot be priced without it.",
                )
            )
    for (name_a, a), (name_b, b) in combinations(sorted(reported.items()), 2):
        if not a.is_compatible_with(b):
            continue
        a_dims, b_dims = a.dimensions.items(), b.dimensions.items()
        if a_dims <= b_dims or b_dims <= a_dims:
            continue
        if dict(a.dimensions) | dict(b.dimensions) == dict(unit.dimensions):
            found.append(
                (
                    (name_a, name_b),
                    f"This model has a separate price for {unit.usage_key}, the overlap of "
                    f"{name_a} and {name_b}, which aibill does not count; a call with both "
                    f"{name_a} and {name_b} cannot be priced.",
                )
            )
    return found
