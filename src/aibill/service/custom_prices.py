"""Custom prices: an admin's price for a model, platform-wide or for one
mandate, from a ``valid_from`` on.

A custom price is per million tokens (input, output, and optionally cache
reads and writes) and optionally per request, in any currency. A mandate's
price wins over the platform's, and either over the bundled catalog; within
a scope the price with the latest ``valid_from`` not after the request time
applies. A price that was in force stays on record.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Connection

from aibill.domain.errors import AlreadyExists
from aibill.domain.model import check_name
from aibill.domain.money import check_currency
from aibill.domain.prices import (
    MODEL_MAX_LENGTH,
    MTOK_PRICE_PLACES,
    PROVIDER_MAX_LENGTH,
    REQUEST_PRICE_PLACES,
    CustomPrice,
    check_label,
    check_optional_price,
    check_output_limit,
    check_price,
)
from aibill.domain.principal import Scope
from aibill.domain.times import check_time
from aibill.service.pricing_base import (
    PricingBase,
    optional_stored_decimal,
    require_mandate,
    stored_decimal,
)
from aibill.store import prices
from aibill.store.fast import Row


class _Terms(NamedTuple):
    """What a custom price charges: what setting it again must repeat, in the
    order a difference is named."""

    currency: str
    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal | None
    cache_write_mtok: Decimal | None
    per_request: Decimal | None
    output_limit: int | None

    def price(
        self, provider: str, model: str, valid_from: datetime, mandate: str | None, now: datetime
    ) -> CustomPrice:
        """A new custom price on these terms, created ``now``."""
        return CustomPrice(
            price_id=f"cp_{secrets.token_hex(8)}",
            provider=provider,
            model=model,
            currency=self.currency,
            input_mtok=self.input_mtok,
            output_mtok=self.output_mtok,
            cache_read_mtok=self.cache_read_mtok,
            cache_write_mtok=self.cache_write_mtok,
            per_request=self.per_request,
            valid_from=valid_from,
            mandate=mandate,
            output_limit=self.output_limit,
            created_at=now,
        )


class CustomPrices(PricingBase):
    """Setting and listing custom prices (part of
    :class:`~aibill.service.pricing.Pricing`)."""

    def set_custom_price(
        self,
        provider: str,
        model: str,
        *,
        input_mtok: Decimal | int | str,
        output_mtok: Decimal | int | str,
        cache_read_mtok: Decimal | int | str | None = None,
        cache_write_mtok: Decimal | int | str | None = None,
        per_request: Decimal | int | str | None = None,
        currency: str = "USD",
        valid_from: datetime | None = None,
        mandate: str | None = None,
        output_limit: int | None = None,
    ) -> CustomPrice:
        """Price a model (one the catalog lacks, or instead of the catalog) from
        ``valid_from`` (default: now) on, platform-wide or for one mandate.

        Prices per million tokens have at most six decimals; ``per_request``
        at most twelve; all are >= 0 and at most 1,000,000. A mandate's price
        wins over the platform's, and either over the catalog; within a scope
        the price with the latest ``valid_from`` not after the request time
        applies. Setting the same scope, model and ``valid_from`` again with
        the same prices returns the stored price; with other prices it is
        ``AlreadyExists`` naming the first differing field.
        """
        prov = check_label(provider, "provider", PROVIDER_MAX_LENGTH)
        mod = check_label(model, "model", MODEL_MAX_LENGTH)
        if mandate is not None:
            check_name(mandate, "mandate")
        cur = check_currency(currency)
        start = self._now() if valid_from is None else check_time(valid_from, "valid_from")
        limit = check_output_limit(output_limit)
        terms = _Terms(
            cur,
            check_price(input_mtok, "input_mtok", MTOK_PRICE_PLACES),
            check_price(output_mtok, "output_mtok", MTOK_PRICE_PLACES),
            check_optional_price(cache_read_mtok, "cache_read_mtok", MTOK_PRICE_PLACES),
            check_optional_price(cache_write_mtok, "cache_write_mtok", MTOK_PRICE_PLACES),
            check_optional_price(per_request, "per_request", REQUEST_PRICE_PLACES),
            limit,
        )

        def work(conn: Connection) -> CustomPrice:
            self._authorize(conn, mandate, Scope.ADMIN)
            now = self._now()
            if mandate is not None:
                require_mandate(conn, mandate)
            asked = terms.price(prov, mod, start.astimezone(UTC), mandate, now)
            stored = prices.custom_price(conn, mandate, prov, mod, start)
            if stored is not None:
                existing = _price_from_row(stored, mandate)
                _same_price(existing, asked, start)
                return existing
            prices.insert_custom_price(conn, mandate, _price_row(asked))
            self._auditor(conn, mandate, "custom_price.set", f"{prov}/{mod}", None, asked)
            return asked

        return self._write(work)

    def custom_prices(self, mandate: str | None = None) -> list[CustomPrice]:
        """The platform's custom prices, or (with ``mandate``) that mandate's own,
        by provider, model and then oldest first (past, current and future)."""

        def work(conn: Connection) -> list[CustomPrice]:
            self._authorize(conn, mandate, Scope.READ)  # None: the platform's own settings
            if mandate is not None:
                check_name(mandate, "mandate")
            return [_price_from_row(r, mandate) for r in prices.custom_prices(conn, mandate)]

        return self._read(work)


def custom_price_in_force(
    conn: Connection, mandate: str | None, provider: str, model: str, at: datetime
) -> CustomPrice | None:
    """The custom price in force at ``at``: the mandate's, else the platform's
    (``mandate`` None: the platform's only); None when the catalog prices it."""
    rows = prices.custom_prices_at(conn, mandate, provider, model, at)
    for scope in ("mandate", "platform"):
        for row in rows:
            if row.scope == scope:
                return _price_from_row(row, mandate if scope == "mandate" else None)
    return None


def _same_price(existing: CustomPrice, asked: CustomPrice, start: datetime) -> None:
    """Refuse a price for a scope, model and ``valid_from`` already stored with
    other prices, naming the first that differs."""
    for name in _Terms._fields:
        first, now = getattr(existing, name), getattr(asked, name)
        if first != now:
            raise AlreadyExists(
                f"A custom price for {asked.provider}/{asked.model} from {start.isoformat()} "
                f"is already set ({existing.price_id}) with {name}={first}; this call has "
                f"{name}={now}. Set a new price with a later valid_from instead.",
                field=name,
                price_id=existing.price_id,
                first=None if first is None else str(first),
                now=None if now is None else str(now),
            )


def _price_row(price: CustomPrice) -> dict[str, Any]:
    """A custom price as it is stored."""
    return {
        "provider": price.provider,
        "model": price.model,
        "valid_from": price.valid_from,
        "price_id": price.price_id,
        "currency": price.currency,
        "input_mtok": stored_decimal(price.input_mtok),
        "output_mtok": stored_decimal(price.output_mtok),
        "cache_read_mtok": optional_stored_decimal(price.cache_read_mtok),
        "cache_write_mtok": optional_stored_decimal(price.cache_write_mtok),
        "per_request": optional_stored_decimal(price.per_request),
        "output_limit": price.output_limit,
        "created_at": price.created_at,
    }


def _price_from_row(row: Row, mandate: str | None) -> CustomPrice:
    return CustomPrice(
        price_id=row.price_id,
        provider=row.provider,
        model=row.model,
        currency=row.currency,
        input_mtok=Decimal(row.input_mtok),
        output_mtok=Decimal(row.output_mtok),
        cache_read_mtok=_decimal_or_none(row.cache_read_mtok),
        cache_write_mtok=_decimal_or_none(row.cache_write_mtok),
        per_request=_decimal_or_none(row.per_request),
        valid_from=row.valid_from,
        mandate=mandate,
        output_limit=row.output_limit,
        created_at=row.created_at,
    )


def _decimal_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
