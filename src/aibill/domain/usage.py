"""What one model call used, and what it cost at the provider's prices.

Value types only: :class:`Usage` (the billable counts a caller reports),
:class:`ProviderCost` and its :class:`CostComponent` parts (what the price
catalog, ``aibill.catalog``, computes from them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from aibill.domain.errors import InvalidRequest

__all__ = ["COUNT_FIELDS", "MAX_COUNT", "TOKEN_FIELDS", "CostComponent", "ProviderCost", "Usage"]

MAX_COUNT: Final = 10**12
"""Largest token (or request) count one call may report."""

# The counts aibill's Usage reports, under the catalog's own unit names.
TOKEN_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)
COUNT_FIELDS: Final = (*TOKEN_FIELDS, "requests")

_ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class Usage:
    """The billable quantities of one model call, as non-negative integers.

    ``input_tokens`` is the TOTAL number of input tokens, cached ones included,
    as OpenAI reports ``prompt_tokens`` and as the price catalog counts them:
    ``cache_read_tokens``, ``cache_write_tokens`` and ``input_audio_tokens`` are
    parts of ``input_tokens``, not additions to it. For a model that prices
    cache reads at 0.125 and input at 1.25 USD per million, 1,000 input tokens
    of which 800 were read from the cache cost 200 * 1.25 + 800 * 0.125 per
    million. Anthropic's API reports ``input_tokens`` *without* the cached
    tokens: add ``cache_creation_input_tokens`` and ``cache_read_input_tokens``
    to it before building a Usage.

    ``output_audio_tokens`` is likewise part of ``output_tokens``.
    ``requests`` is the number of API requests the usage covers; it only
    matters for models with a per-request fee.

    Every count must be an ``int`` (not a bool) from 0 to ``MAX_COUNT``; the
    parts must fit in their whole. Violations raise ``InvalidRequest`` naming
    the field.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    requests: int = 1

    def __post_init__(self) -> None:
        for name in COUNT_FIELDS:
            value: object = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequest(
                    f"{name} must be an int, not {type(value).__name__}: {value!r}.", field=name
                )
            if value < 0:
                raise InvalidRequest(f"{name} must not be negative, not {value}.", field=name)
            if value > MAX_COUNT:
                raise InvalidRequest(
                    f"{name} {value} is larger than aibill accepts ({MAX_COUNT}).", field=name
                )
        cached = self.cache_read_tokens + self.cache_write_tokens
        if cached > self.input_tokens:
            raise InvalidRequest(
                f"cache_read_tokens ({self.cache_read_tokens}) plus cache_write_tokens "
                f"({self.cache_write_tokens}) exceed input_tokens ({self.input_tokens}); "
                "input_tokens must be the total input, cached tokens included.",
                field="input_tokens",
            )
        if self.input_audio_tokens > self.input_tokens:
            raise InvalidRequest(
                f"input_audio_tokens ({self.input_audio_tokens}) exceed input_tokens "
                f"({self.input_tokens}); input_tokens must be the total input, audio included.",
                field="input_audio_tokens",
            )
        if self.output_audio_tokens > self.output_tokens:
            raise InvalidRequest(
                f"output_audio_tokens ({self.output_audio_tokens}) exceed output_tokens "
                f"({self.output_tokens}); output_tokens must be the total output, audio included.",
                field="output_audio_tokens",
            )


@dataclass(frozen=True, slots=True)
class CostComponent:
    """One priced part of a call: how many units, at which price, for how much.

    ``usage_key`` names the part in the catalog's terms (``input_tokens`` here
    means the input tokens not charged under a more specific price, e.g. the
    uncached ones); ``price_key`` names the price (``input_mtok``: per million
    input tokens). ``unit_price`` is the price applied, a decimal string per
    ``per`` units (per million for tokens, per thousand for requests);
    ``tier_start`` is None for the base price, or the input-token threshold of
    the tier that applied. ``cost`` is exact.
    """

    usage_key: str
    price_key: str
    quantity: int
    unit_price: str
    per: int
    tier_start: int | None
    cost: Decimal
    direction: str | None
    token_type: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the cost as a decimal string, the tier in words."""
        return {
            "usage_key": self.usage_key,
            "price_key": self.price_key,
            "quantity": self.quantity,
            "unit_price": self.unit_price,
            "per": self.per,
            "tier": "base" if self.tier_start is None else f"above {self.tier_start}",
            "cost": str(self.cost),
        }


@dataclass(frozen=True, slots=True)
class ProviderCost:
    """The exact cost of one call at the provider's prices, with its breakdown.

    ``provider``/``model`` are the names asked for; ``provider_id``,
    ``model_id`` and ``model_name`` are what the catalog matched them to.
    ``total`` is an exact Decimal in ``currency`` (always USD), never rounded.
    ``input_cost`` and ``output_cost`` are the sums of the input-side and
    output-side components (cache reads and writes are input-side); fees such
    as per-request charges belong to neither, so ``total`` can exceed their
    sum. ``components`` lists every part with a non-zero quantity. ``at`` is
    the request time that selected the prices and ``source`` the catalog
    they came from.
    """

    provider: str
    provider_id: str
    model: str
    model_id: str
    model_name: str | None
    currency: str
    total: Decimal
    input_cost: Decimal
    output_cost: Decimal
    components: tuple[CostComponent, ...]
    usage: Usage
    at: datetime
    source: str

    def cost_of(self, usage_key: str) -> Decimal:
        """The cost of one part (e.g. ``cache_read_tokens``), zero if not charged."""
        return sum((c.cost for c in self.components if c.usage_key == usage_key), _ZERO)

    @property
    def cache_read_cost(self) -> Decimal:
        """What the cache reads cost (any modality)."""
        return sum((c.cost for c in self.components if c.token_type == "cache_read"), _ZERO)

    @property
    def cache_write_cost(self) -> Decimal:
        """What the cache writes cost (any modality)."""
        return sum((c.cost for c in self.components if c.token_type == "cache_write"), _ZERO)

    @property
    def requests_cost(self) -> Decimal:
        """The per-request fees."""
        return self.cost_of("requests")

    @property
    def unit_prices(self) -> dict[str, str]:
        """The unit prices applied, by price name (``input_mtok``: USD per million)."""
        return {c.price_key: c.unit_price for c in self.components}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready breakdown: every amount and price as a decimal string."""
        return {
            "provider": self.provider,
            "provider_id": self.provider_id,
            "model": self.model,
            "model_id": self.model_id,
            "model_name": self.model_name,
            "currency": self.currency,
            "total": str(self.total),
            "input_cost": str(self.input_cost),
            "output_cost": str(self.output_cost),
            "components": [c.to_dict() for c in self.components],
            "usage": {name: getattr(self.usage, name) for name in COUNT_FIELDS},
            "at": self.at.isoformat(),
            "source": self.source,
        }
