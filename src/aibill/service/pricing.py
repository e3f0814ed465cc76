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

import copy
import csv
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, TextIO, TypeVar

from genai_prices.types import TieredPrices
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    insert,
    select,
    update,
)

from aibill.catalog import CATALOG_CURRENCY, Catalog
from aibill.domain import pricing_rules
from aibill.domain.clock import Clock, system_clock
from aibill.domain.errors import (
    AlreadyExists,
    InvalidAmount,
    InvalidRequest,
    MissingExchangeRate,
    PermissionDenied,
    UnknownMandate,
    UnknownModel,
)
from aibill.domain.model import check_name
from aibill.domain.money import (
    MAX_AMOUNT_MICROS,
    check_currency,
    from_micros,
)
from aibill.domain.prices import (
    MAX_PICO,
    PICO_PER_UNIT,
    Charge,
    CustomPrice,
    ExchangeRate,
    Markup,
    ModelPrice,
    PriceTier,
    check_provider_cost,
)
from aibill.domain.prices import parse_decimal as _parse_decimal
from aibill.domain.principal import Scope
from aibill.domain.text import check_line, check_searchable
from aibill.domain.times import check_time
from aibill.domain.usage import CostComponent, ProviderCost, Usage
from aibill.service.hooks import Auditor, Guard, no_audit, trust
from aibill.store import fast, tx
from aibill.store.schema import (
    exchange_rates,
    mandate_markups,
    mandate_prices,
    mandates,
    platform_markups,
    platform_prices,
)

__all__ = [
    "DEFAULT_MARKUP_PERCENT",
    "MAX_MARKUP_PERCENT",
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

T = TypeVar("T")

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


CSV_COLUMNS: Final = ("base", "quote", "rate", "valid_from")
CSV_OPTIONAL: Final = ("source",)

_TOKENS_PER_MTOK: Final = 1_000_000
_PROVIDER_MAX: Final = 64
_MODEL_MAX: Final = 160
_SOURCE_MAX: Final = 64

# Every product below runs in a context that raises instead of rounding: a
# charge is exact until its one rounding (aibill.domain.pricing_rules).
_EXACT: Final = pricing_rules.EXACT
_ZERO: Final = Decimal(0)


# ------------------------------------------------------------------ values


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
    base = _parse_decimal(base_price, "base_price", max_places=18, max_digits=40, signed=True)
    pct = _check_percent(percent)
    if base <= 0:
        return from_micros(0)
    micros = pricing_rules.priced(base, rate=Decimal(1), markup_percent=pct).micros
    if micros > MAX_AMOUNT_MICROS:
        raise InvalidAmount(
            f"base_price {base} marked up is larger than aibill accepts.", field="base_price"
        )
    return from_micros(micros)


# ------------------------------------------------------------------ service


class Pricing:
    """Exchange rates, markups and custom prices, and the charge of a model call.

    Settings are written to the store (each call one transaction); quoting
    reads them inside the caller's transaction (:meth:`quote`) or its own
    (:meth:`price`), with at most three queries and no in-process cache, so
    every process sees a setting as soon as it is committed.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = system_clock,
        catalog: Catalog | None = None,
        guard: Guard | None = None,
        auditor: Auditor | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._catalog = catalog if catalog is not None else Catalog()
        # Set by the billing service: who may change what, and the audit log.
        self._guard: Guard = guard or trust
        self._auditor: Auditor = auditor or no_audit

    def bound(self, guard: Guard, auditor: Auditor) -> Pricing:
        """This pricing service acting under another principal's guard and audit."""
        view = copy.copy(self)
        view._guard, view._auditor = guard, auditor
        return view

    def _guard_call_cost(self, conn: Connection, mandate: str) -> None:
        """What a call in ``mandate`` will cost (its markup, a model's price):
        for a key that makes calls there (``billing:use``, as ``estimate``
        tells it) or reads it (``billing:read``)."""
        try:
            self._guard(conn, mandate, Scope.USE)
        except PermissionDenied:
            self._guard(conn, mandate, Scope.READ)

    @property
    def catalog(self) -> Catalog:
        """The provider price catalog used when no custom price applies."""
        return self._catalog

    def _now(self) -> datetime:
        return _aware(self._clock(), "clock")

    def _write(self, work: Callable[[Connection], T]) -> T:
        return tx.run(self._engine, work)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return tx.run(self._engine, work, read_only=True)

    # ----------------------------------------------------------- exchange rates

    def set_exchange_rate(
        self,
        base: str,
        quote: str,
        rate: Decimal | int | str,
        *,
        valid_from: datetime | None = None,
        source: str | None = None,
    ) -> ExchangeRate:
        """Set the rate from ``base`` to ``quote`` (1 base = ``rate`` quote) from
        ``valid_from`` (default: now) on.

        The rate must be positive, at most 12 significant digits and 12
        decimals, given as Decimal, int or decimal string. Setting the same
        pair and ``valid_from`` again with the same rate changes nothing and
        returns the stored rate; with another rate it is ``AlreadyExists``
        (field ``rate``): a rate that was in force stays on record, a
        correction is a new rate with a later ``valid_from``.
        """
        base, quote = _check_pair(base, quote)
        value = _check_rate(rate)
        start = self._now() if valid_from is None else _aware(valid_from, "valid_from")
        src = _check_source(source)

        def work(conn: Connection) -> ExchangeRate:
            self._guard(conn, None, Scope.ADMIN)
            now = self._now()
            stored = conn.execute(
                select(exchange_rates).where(
                    _X.base == base, _X.quote == quote, _X.valid_from == start
                )
            ).first()
            if stored is not None:
                existing = _rate_from_row(stored)
                _same_rate(existing, value)
                return existing
            conn.execute(
                insert(exchange_rates).values(
                    base=base,
                    quote=quote,
                    valid_from=start,
                    rate=_store(value),
                    source=src,
                    created_at=now,
                )
            )
            created = ExchangeRate(base, quote, value, start.astimezone(UTC), src, now)
            self._auditor(conn, None, "exchange_rate.set", f"{base}/{quote}", None, created)
            return created

        return self._write(work)

    def import_exchange_rates(self, source: TextIO | Iterable[str]) -> int:
        """Import rates from CSV, all or nothing; returns how many were new.

        The header is ``base,quote,rate,valid_from`` (an optional fifth column
        ``source`` names where a rate came from). ``valid_from`` is ISO 8601
        with a timezone (``2026-03-01T00:00:00+00:00``, ``...Z``); a date alone
        (``2026-03-01``) means midnight UTC. Blank lines are skipped. A bad
        line is ``InvalidRequest`` naming the line number and the problem, and
        nothing is written. Rates already stored with the same value are
        skipped (an import can be repeated); one stored with another value is
        ``AlreadyExists`` naming the line, and nothing is written.
        """
        self._read(lambda conn: self._guard(conn, None, Scope.ADMIN))  # refuse before reading
        parsed = _parse_csv(source)

        def work(conn: Connection) -> int:
            self._guard(conn, None, Scope.ADMIN)
            now = self._now()
            pairs = {(r.base, r.quote) for _, r in parsed}
            stored: dict[tuple[str, str, datetime], ExchangeRate] = {}
            for base, quote in sorted(pairs):
                for row in conn.execute(
                    select(exchange_rates).where(_X.base == base, _X.quote == quote)
                ):
                    known = _rate_from_row(row)
                    stored[(known.base, known.quote, known.valid_from)] = known
            new: list[dict[str, Any]] = []
            for line, rate in parsed:
                existing = stored.get((rate.base, rate.quote, rate.valid_from))
                if existing is not None:
                    _same_rate(existing, rate.rate, line=line)
                    continue
                new.append(
                    {
                        "base": rate.base,
                        "quote": rate.quote,
                        "valid_from": rate.valid_from,
                        "rate": _store(rate.rate),
                        "source": rate.source,
                        "created_at": now,
                    }
                )
            if new:
                conn.execute(insert(exchange_rates), new)
                self._auditor(conn, None, "exchange_rate.import", None, None, {"rates": new})
            return len(new)

        return self._write(work)

    def exchange_rates(
        self, base: str | None = None, quote: str | None = None
    ) -> list[ExchangeRate]:
        """Every stored rate, optionally of one base and/or quote currency,
        by pair and then oldest first."""
        stmt = select(exchange_rates).order_by(_X.base, _X.quote, _X.valid_from)
        if base is not None:
            stmt = stmt.where(_X.base == check_currency(base))
        if quote is not None:
            stmt = stmt.where(_X.quote == check_currency(quote))
        return self._read(lambda conn: [_rate_from_row(r) for r in conn.execute(stmt)])

    def exchange_rate(self, base: str, quote: str, at: datetime) -> Decimal:
        """The rate from ``base`` to ``quote`` in force at ``at``: the one with
        the latest ``valid_from`` not after ``at``.

        The same currency is 1 without a lookup. No rate in force is
        ``MissingExchangeRate``; the opposite pair's rate is never inverted.
        """
        when = _aware(at, "at")
        if check_currency(base) == check_currency(quote):
            return Decimal(1)
        return self._read(lambda conn: self._rate(conn, base, quote, when)[0])

    def _rate(self, conn: Connection, base: str, quote: str, at: datetime) -> tuple[Decimal, Any]:
        row = _RATE_AT.first(conn, {"base": base, "quote": quote, "at": at})
        if row is None:
            raise MissingExchangeRate(base, quote, at.isoformat())
        return Decimal(row.rate), row

    # ---------------------------------------------------------------- markups

    def set_markup(
        self,
        percent: Decimal | int | str,
        *,
        mandate: str | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> Markup:
        """Set a markup in percent (0 to 1000), replacing the one of the same scope.

        Without ``mandate`` it is platform-wide; without ``provider`` it
        applies to every provider; ``model`` needs ``provider``. The most
        specific markup wins (see :meth:`markup_for`).
        """
        pct = _check_percent(percent)
        scope = _markup_scope(mandate, provider, model)

        def work(conn: Connection) -> Markup:
            self._guard(conn, mandate, Scope.ADMIN)
            now = self._now()
            if mandate is not None:
                _require_mandate(conn, mandate)
            table, where = _markup_where(scope)
            found = conn.execute(select(table.c.percent, table.c.updated_at).where(*where)).first()
            if found is not None and Decimal(found.percent) == pct:
                return Markup(pct, mandate, provider, model, found.updated_at)  # unchanged
            target = f"{provider or '*'}/{model or '*'}"
            before = None if found is None else {"percent": found.percent}
            self._auditor(conn, mandate, "markup.set", target, before, {"percent": pct})
            if found is None:
                conn.execute(
                    insert(table).values(**_markup_key(scope), percent=_store(pct), updated_at=now)
                )
            else:
                conn.execute(
                    update(table).where(*where).values(percent=_store(pct), updated_at=now)
                )
            return Markup(pct, mandate, provider, model, now)

        return self._write(work)

    def clear_markup(
        self, *, mandate: str | None = None, provider: str | None = None, model: str | None = None
    ) -> bool:
        """Remove the markup of exactly this scope, so a less specific one applies.
        Returns whether there was one."""
        scope = _markup_scope(mandate, provider, model)

        def work(conn: Connection) -> bool:
            self._guard(conn, mandate, Scope.ADMIN)
            table, where = _markup_where(scope)
            found = conn.execute(select(table.c.percent).where(*where)).first()
            if found is None:
                return False
            conn.execute(table.delete().where(*where))
            target = f"{provider or '*'}/{model or '*'}"
            self._auditor(conn, mandate, "markup.clear", target, {"percent": found.percent}, None)
            return True

        return self._write(work)

    def markups(self, mandate: str | None = None) -> list[Markup]:
        """The platform's markups, or (with ``mandate``) that mandate's own,
        least specific first."""

        def work(conn: Connection) -> list[Markup]:
            self._guard(conn, mandate, Scope.READ)  # None: the platform's own settings
            if mandate is None:
                rows = conn.execute(
                    select(platform_markups).order_by(_PM.provider, _PM.model)
                ).all()
            else:
                check_name(mandate, "mandate")
                rows = conn.execute(
                    select(mandate_markups)
                    .where(_MM.mandate_id == mandate)
                    .order_by(_MM.provider, _MM.model)
                ).all()
            return [
                Markup(
                    Decimal(r.percent),
                    mandate,
                    r.provider or None,
                    r.model or None,
                    r.updated_at,
                )
                for r in rows
            ]

        return self._read(work)

    def markup_for(self, mandate: str | None, provider: str | None, model: str | None) -> Decimal:
        """The markup in percent for a call, the most specific set, in this order:
        mandate + provider + model, mandate + provider, mandate (any),
        platform provider + model, platform provider, platform (any), and
        ``DEFAULT_MARKUP_PERCENT`` (50) when none is set. Names match exactly
        as given."""
        if mandate is not None:
            check_name(mandate, "mandate")
        for name, value in (("provider", provider), ("model", model)):
            if value is not None:
                check_searchable(value, name, max_length=_MODEL_MAX)

        def work(conn: Connection) -> Decimal:
            if mandate is not None:
                self._guard_call_cost(conn, mandate)
            return self._markup(conn, mandate, provider, model)[0]

        return self._read(work)

    def _markup(
        self, conn: Connection, mandate: str | None, provider: str | None, model: str | None
    ) -> tuple[Decimal, dict[str, Any]]:
        params = {
            "mandate": mandate or "",
            "provider": provider or "",
            "model": (model or "") if provider else "",
        }
        best: tuple[int, Decimal, dict[str, Any]] | None = None
        for row in _MARKUPS.run(conn, params):
            rank = (0 if row.scope == "mandate" else 3) + (
                0 if row.model else 1 if row.provider else 2
            )
            if best is None or rank < best[0]:
                best = (
                    rank,
                    Decimal(row.percent),
                    {
                        "scope": row.scope,
                        "mandate": mandate if row.scope == "mandate" else None,
                        "provider": row.provider or None,
                        "model": row.model or None,
                    },
                )
        if best is None:
            return DEFAULT_MARKUP_PERCENT, {"scope": "default"}
        return best[1], best[2]

    # ----------------------------------------------------------- custom prices

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
        prov = _check_label(provider, "provider", _PROVIDER_MAX)
        mod = _check_label(model, "model", _MODEL_MAX)
        if mandate is not None:
            check_name(mandate, "mandate")
        cur = check_currency(currency)
        start = self._now() if valid_from is None else _aware(valid_from, "valid_from")
        if output_limit is not None and (
            isinstance(output_limit, bool) or not isinstance(output_limit, int) or output_limit < 1
        ):
            raise InvalidRequest(
                f"output_limit must be a positive int or None, not {output_limit!r}.",
                field="output_limit",
            )
        prices = {
            "input_mtok": _check_price(input_mtok, "input_mtok", MTOK_PRICE_PLACES),
            "output_mtok": _check_price(output_mtok, "output_mtok", MTOK_PRICE_PLACES),
            "cache_read_mtok": _maybe_price(cache_read_mtok, "cache_read_mtok", MTOK_PRICE_PLACES),
            "cache_write_mtok": _maybe_price(
                cache_write_mtok, "cache_write_mtok", MTOK_PRICE_PLACES
            ),
            "per_request": _maybe_price(per_request, "per_request", REQUEST_PRICE_PLACES),
        }
        table = platform_prices if mandate is None else mandate_prices
        key = {"provider": prov, "model": mod, "valid_from": start}
        if mandate is not None:
            key["mandate_id"] = mandate

        def work(conn: Connection) -> CustomPrice:
            self._guard(conn, mandate, Scope.ADMIN)
            now = self._now()
            if mandate is not None:
                _require_mandate(conn, mandate)
            stored = conn.execute(
                select(table).where(*(table.c[name] == value for name, value in key.items()))
            ).first()
            if stored is not None:
                existing = _price_from_row(stored, mandate)
                wanted: dict[str, object] = {
                    "currency": cur,
                    **prices,
                    "output_limit": output_limit,
                }
                for name, value in wanted.items():
                    if getattr(existing, name) != value:
                        raise AlreadyExists(
                            f"A custom price for {prov}/{mod} from {start.isoformat()} is already "
                            f"set ({existing.price_id}) with {name}={getattr(existing, name)}; "
                            f"this call has {name}={value}. Set a new price with a later "
                            "valid_from instead.",
                            field=name,
                            price_id=existing.price_id,
                            first=_str_or_none(getattr(existing, name)),
                            now=_str_or_none(value),
                        )
                return existing
            price_id = f"cp_{secrets.token_hex(8)}"
            conn.execute(
                insert(table).values(
                    **key,
                    price_id=price_id,
                    currency=cur,
                    **{name: _store_or_none(value) for name, value in prices.items()},
                    output_limit=output_limit,
                    created_at=now,
                )
            )
            created = CustomPrice(
                price_id=price_id,
                provider=prov,
                model=mod,
                currency=cur,
                input_mtok=_required(prices["input_mtok"]),
                output_mtok=_required(prices["output_mtok"]),
                cache_read_mtok=prices["cache_read_mtok"],
                cache_write_mtok=prices["cache_write_mtok"],
                per_request=prices["per_request"],
                valid_from=start.astimezone(UTC),
                mandate=mandate,
                output_limit=output_limit,
                created_at=now,
            )
            self._auditor(conn, mandate, "custom_price.set", f"{prov}/{mod}", None, created)
            return created

        return self._write(work)

    def custom_prices(self, mandate: str | None = None) -> list[CustomPrice]:
        """The platform's custom prices, or (with ``mandate``) that mandate's own,
        by provider, model and then oldest first (past, current and future)."""

        def work(conn: Connection) -> list[CustomPrice]:
            self._guard(conn, mandate, Scope.READ)  # None: the platform's own settings
            if mandate is None:
                stmt = select(platform_prices)
                table: Table = platform_prices
            else:
                check_name(mandate, "mandate")
                table = mandate_prices
                stmt = select(mandate_prices).where(mandate_prices.c.mandate_id == mandate)
            rows = conn.execute(
                stmt.order_by(table.c.provider, table.c.model, table.c.valid_from)
            ).all()
            return [_price_from_row(r, mandate) for r in rows]

        return self._read(work)

    def _custom_price(
        self, conn: Connection, mandate: str | None, provider: str, model: str, at: datetime
    ) -> CustomPrice | None:
        """The custom price in force at ``at``: the mandate's, else the platform's
        (``mandate`` None: the platform's only); None when the catalog prices it."""
        rows = _PRICE_AT.run(
            conn, {"mandate": mandate or "", "provider": provider, "model": model, "at": at}
        )
        for scope in ("mandate", "platform"):
            for row in rows:
                if row.scope == scope:
                    return _price_from_row(row, mandate if scope == "mandate" else None)
        return None

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
        prov = _check_label(provider, "provider", _PROVIDER_MAX)
        mod = _check_label(model, "model", _MODEL_MAX)
        if mandate is not None:
            check_name(mandate, "mandate")
        when = self._now() if at is None else _aware(at, "at")

        def work(conn: Connection) -> ModelPrice:
            if mandate is not None:
                self._guard_call_cost(conn, mandate)
                _require_mandate(conn, mandate)
            custom = self._custom_price(conn, mandate, prov, mod, when)
            if custom is None:
                return self._catalog_price(prov, mod, mandate, when)
            try:
                window = self._catalog.context_window(prov, mod)
                limit = custom.output_limit or self._catalog.output_limit(prov, mod)
            except UnknownModel:
                window, limit = None, custom.output_limit
            return ModelPrice(
                provider=prov,
                model=mod,
                model_matched=mod,
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
                context_window=window,
                output_limit=limit,
                price_id=custom.price_id,
                valid_from=custom.valid_from,
                mandate=mandate,
                at=when,
            )

        return self._read(work)

    def _catalog_price(
        self, provider: str, model: str, mandate: str | None, at: datetime
    ) -> ModelPrice:
        """The catalog's prices of a model at ``at``, as :meth:`Catalog.price` applies them."""
        # The catalog's own lookup, so that the model matches as a call's does.
        _, info = self._catalog._lookup(provider, model)
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
            source=self._catalog.source,
            catalog_version=self._catalog.version,
            currency=CATALOG_CURRENCY,
            input_mtok=main.get("input_mtok"),
            output_mtok=main.get("output_mtok"),
            cache_read_mtok=main.get("cache_read_mtok"),
            cache_write_mtok=main.get("cache_write_mtok"),
            per_request=main.get("per_request"),
            other_prices=other,
            tiers=tuple(sorted(tiers, key=lambda t: (t.above_input_tokens, t.price_key))),
            context_window=info.context_window,
            output_limit=self._catalog.output_limit(provider, model),
            price_id=None,
            valid_from=None,
            mandate=mandate,
            at=at,
        )

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
    ) -> Charge:
        """The charge for ``usage`` of ``model`` by ``mandate`` (billed in
        ``currency``) at request time ``at``, read inside the caller's
        transaction ``conn``.

        Provider cost (custom price or catalog), exact -> times the exchange
        rate in force at ``at`` -> times ``1 + markup / 100`` -> rounded once,
        half-even, to micro-units (see :meth:`_charge`). Raises ``UnknownModel``
        (no custom price and not in the catalog, or a catalog price that cannot
        be kept exactly), ``MissingExchangeRate``, or ``InvalidRequest`` for a
        malformed call.
        """
        check_name(mandate, "mandate")
        cur = check_currency(currency)
        prov = _check_label(provider, "provider", _PROVIDER_MAX)
        mod = _check_label(model, "model", _MODEL_MAX)
        if not isinstance(usage, Usage):
            raise InvalidRequest(
                f"usage must be an aibill Usage, not {type(usage).__name__}.", field="usage"
            )
        when = _aware(at, "at")
        custom = self._custom_price(conn, mandate, prov, mod, when)
        if custom is not None:
            total, components = _custom_cost(custom, usage)
            cost = _Cost(total, custom.currency, custom.source, prov, mod, mod, usage, components)
            cost.price.update(
                scope="platform" if custom.mandate is None else "mandate",
                price_id=custom.price_id,
                valid_from=custom.valid_from.isoformat(),
            )
        else:
            found: ProviderCost = self._catalog.price(prov, mod, usage, when)
            cost = _Cost(
                found.total,
                found.currency,
                found.source,
                prov,
                mod,
                found.model_id,
                usage,
                found.components,
            )
            cost.price.update(
                scope="catalog", provider_matched=found.provider_id, model_name=found.model_name
            )
        pico = _EXACT.multiply(cost.total, Decimal(PICO_PER_UNIT))
        if pico != pico.to_integral_value():
            raise UnknownModel(
                prov,
                mod,
                f"The price of model {mod!r} of provider {prov!r} ({cost.source}) gives a cost "
                f"of {cost.total} {cost.currency}, finer than 10^-12, which aibill cannot keep "
                "exactly; set a custom price for this model.",
            )
        return self._charge(conn, cost, mandate=mandate, currency=cur, at=when)

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
        return self._charge(conn, cost, mandate=mandate, currency=cur, at=_aware(at, "at"))

    def _charge(
        self, conn: Connection, cost: _Cost, *, mandate: str, currency: str, at: datetime
    ) -> Charge:
        """A charge: the exact provider cost -> times the rate from its currency
        to ``currency`` in force at ``at`` -> times ``1 + markup / 100`` (the
        most specific markup of the mandate, provider and model) -> rounded
        once, half-even, to micro-units. This finds the rate and the markup;
        the arithmetic is :func:`aibill.domain.pricing_rules.priced`."""
        pico = _EXACT.multiply(cost.total, Decimal(PICO_PER_UNIT))
        if pico > MAX_PICO:
            raise InvalidAmount(
                f"The provider cost {cost.total} {cost.currency} of this call is larger than "
                "aibill accepts.",
                field="usage" if cost.usage is not None else "provider_cost",
            )
        rate, fx = self._fx(conn, cost.currency, currency, at)
        percent, markup_from = self._markup(conn, mandate, cost.provider, cost.model)
        steps = pricing_rules.priced(cost.total, rate=rate, markup_percent=percent)
        converted, exact, micros = steps.converted, steps.exact, steps.micros
        if micros > MAX_AMOUNT_MICROS:
            raise InvalidAmount(
                f"The charge {exact} {currency} of this call is larger than aibill accepts.",
                field="usage" if cost.usage is not None else "provider_cost",
            )
        amount = from_micros(micros)
        breakdown: dict[str, Any] = {
            "provider": cost.provider,
            "model": cost.model,
            "model_matched": cost.model_matched,
            "usage": None if cost.usage is None else _usage_dict(cost.usage),
            "price": cost.price,
            "unit_prices": {c.price_key: c.unit_price for c in cost.components},
            "components": [c.to_dict() for c in cost.components],
            "provider_cost": str(cost.total),
            "provider_currency": cost.currency,
            "fx": fx,
            "converted_cost": str(converted),
            "markup": {"percent": str(percent), **markup_from},
            "amount_exact": str(exact),
            "amount": str(amount),
            "currency": currency,
            "at": at.isoformat(),
        }
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
            amount_micros=micros,
            currency=currency,
            at=at,
            breakdown=breakdown,
        )

    def _fx(
        self, conn: Connection, base: str, quote: str, at: datetime
    ) -> tuple[Decimal, dict[str, Any]]:
        """The rate from ``base`` to ``quote`` in force at ``at``, and how the
        breakdown names it (the same currency is 1, without a lookup)."""
        if base == quote:
            return Decimal(1), {"rate": "1", "from": base, "to": quote, "source": "same currency"}
        rate, row = self._rate(conn, base, quote, at)
        return rate, {
            "rate": str(rate),
            "from": base,
            "to": quote,
            "valid_from": row.valid_from.isoformat(),
            "source": row.source,
        }

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
        when = self._now() if at is None else _aware(at, "at")

        def work(conn: Connection) -> Charge:
            self._guard_call_cost(conn, mandate)
            row = conn.execute(
                select(mandates.c.currency).where(mandates.c.mandate_id == mandate)
            ).first()
            if row is None:
                raise UnknownMandate(mandate)
            return self._charge(conn, cost, mandate=mandate, currency=row.currency, at=when)

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
            self._guard(conn, mandate, Scope.READ)
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
        prov = _check_label(provider, "provider", _PROVIDER_MAX)
        mod = _check_label(model, "model", _MODEL_MAX)
        when = self._now() if at is None else _aware(at, "at")
        custom = self._custom_price(conn, mandate, prov, mod, when)
        if custom is None:
            return self._catalog.output_limit(prov, mod)
        if custom.output_limit is not None:
            return custom.output_limit
        try:
            return self._catalog.output_limit(prov, mod)
        except UnknownModel:
            return None


# ----------------------------------------------------------------- statements

_X = exchange_rates.c
_PM = platform_markups.c
_MM = mandate_markups.c

# The three reads of a quote run on the driver's cursor (``store.fast``): plain
# SQL that both backends accept, a few microseconds each instead of ~30.
_PRICE_COLUMNS: Final = (
    "provider, model, valid_from, price_id, currency, input_mtok, output_mtok, "
    "cache_read_mtok, cache_write_mtok, per_request, output_limit, created_at"
)
_PRICE_AT = fast.Statement(
    f"""
    SELECT * FROM (
        SELECT 'mandate' AS scope, {_PRICE_COLUMNS} FROM mandate_prices
        WHERE mandate_id = :mandate AND provider = :provider AND model = :model
          AND valid_from <= :at
        ORDER BY valid_from DESC LIMIT 1) AS m
    UNION ALL
    SELECT * FROM (
        SELECT 'platform' AS scope, {_PRICE_COLUMNS} FROM platform_prices
        WHERE provider = :provider AND model = :model AND valid_from <= :at
        ORDER BY valid_from DESC LIMIT 1) AS p
    """,
    times=("at", "valid_from", "created_at"),
)
_RATE_AT = fast.Statement(
    """
    SELECT rate, valid_from, source FROM exchange_rates
    WHERE base = :base AND quote = :quote AND valid_from <= :at
    ORDER BY valid_from DESC LIMIT 1
    """,
    times=("at", "valid_from"),
)
# provider '' and model '' are the "any" rows; with no provider asked only those match.
_MARKUPS = fast.Statement(
    """
    SELECT 'mandate' AS scope, provider, model, percent FROM mandate_markups
    WHERE mandate_id = :mandate AND provider IN ('', :provider) AND model IN ('', :model)
    UNION ALL
    SELECT 'platform' AS scope, provider, model, percent FROM platform_markups
    WHERE provider IN ('', :provider) AND model IN ('', :model)
    """
)


# -------------------------------------------------------------------- helpers


def _aware(value: object, field: str) -> datetime:
    """A timezone-aware time within the range the stores hold, in UTC."""
    return check_time(value, field)


def _check_rate(value: object, field: str = "rate") -> Decimal:
    rate = _parse_decimal(value, field, max_places=RATE_MAX_DIGITS, max_digits=RATE_MAX_DIGITS)
    if rate <= 0:
        raise InvalidAmount(f"{field} must be positive, not {rate}.", field=field)
    if rate > RATE_MAX:
        raise InvalidAmount(f"{field} {rate} is larger than aibill accepts.", field=field)
    return rate


def _given_cost(
    provider_cost: object, provider_currency: object, provider: object, model: object
) -> _Cost:
    """A provider cost the caller gives, checked, ready for :meth:`Pricing._charge`."""
    currency = check_provider_currency(provider_currency)
    total = check_provider_cost(provider_cost)
    prov = None if provider is None else check_line(provider, "provider", max_length=_PROVIDER_MAX)
    mod = None if model is None else check_line(model, "model", max_length=_MODEL_MAX)
    if mod is not None and prov is None:
        raise InvalidRequest("model needs its provider.", field="provider")
    cost = _Cost(total, currency, PROVIDER_COST_SOURCE, prov, mod, mod, None, ())
    cost.price["scope"] = "caller"
    return cost


def check_provider_currency(value: object) -> str:
    try:
        return check_currency(value)  # type: ignore[arg-type]
    except InvalidRequest as exc:
        raise InvalidRequest(
            exc.message.replace("currency", "provider_currency", 1), field="provider_currency"
        ) from None


def _check_percent(value: object) -> Decimal:
    pct = _parse_decimal(value, "percent", max_places=6, max_digits=12)
    if pct > MAX_MARKUP_PERCENT:
        raise InvalidAmount(
            f"percent must be from 0 to {MAX_MARKUP_PERCENT}, not {pct}.", field="percent"
        )
    return pct


def _check_price(value: object, field: str, places: int) -> Decimal:
    price = _parse_decimal(value, field, max_places=places, max_digits=places + 7)
    if price > PRICE_MAX:
        raise InvalidAmount(f"{field} {price} is larger than aibill accepts.", field=field)
    return price


def _maybe_price(value: object, field: str, places: int) -> Decimal | None:
    return None if value is None else _check_price(value, field, places)


def _required(value: Decimal | None) -> Decimal:
    assert value is not None
    return value


def _check_pair(base: str, quote: str) -> tuple[str, str]:
    try:
        base = check_currency(base)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message.replace("currency", "base", 1), field="base") from None
    try:
        quote = check_currency(quote)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message.replace("currency", "quote", 1), field="quote") from None
    if base == quote:
        raise InvalidRequest(
            f"An exchange rate needs two different currencies, not {base} to {quote}; "
            "the same currency always converts at 1.",
            field="quote",
        )
    return base, quote


def _check_source(source: object) -> str | None:
    if source is None:
        return None
    return check_line(source, "source", max_length=_SOURCE_MAX)


def _check_label(value: object, field: str, max_length: int) -> str:
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


def _store(value: Decimal) -> str:
    """How an exact Decimal is stored: plain notation, never an exponent."""
    return format(value, "f")


def _store_or_none(value: Decimal | None) -> str | None:
    return None if value is None else _store(value)


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


_MODEL_PRICE_KEYS: Final = frozenset(
    {"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "per_request"}
)


def _per_unit(price: Decimal, per: int) -> Decimal:
    return price if per == 1 else _EXACT.divide(price, Decimal(per))


def _decimal_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _same_rate(existing: ExchangeRate, rate: Decimal, *, line: int | None = None) -> None:
    if existing.rate == rate:
        return
    where = f"Line {line}: " if line is not None else ""
    raise AlreadyExists(
        f"{where}the rate from {existing.base} to {existing.quote} from "
        f"{existing.valid_from.isoformat()} is already set to {existing.rate}, not {rate}. "
        "A rate that was in force stays on record; set a correction with a later valid_from.",
        field="rate",
        base=existing.base,
        quote=existing.quote,
        valid_from=existing.valid_from.isoformat(),
        first=str(existing.rate),
        now=str(rate),
        **({"line": line} if line is not None else {}),
    )


def _rate_from_row(row: Any) -> ExchangeRate:
    return ExchangeRate(
        row.base, row.quote, Decimal(row.rate), row.valid_from, row.source, row.created_at
    )


def _price_from_row(row: Any, mandate: str | None) -> CustomPrice:
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


def _require_mandate(conn: Connection, mandate: str) -> None:
    found = conn.execute(
        select(mandates.c.mandate_id).where(mandates.c.mandate_id == mandate)
    ).first()
    if found is None:
        raise UnknownMandate(mandate)


_MarkupScope = tuple[str | None, str, str]


def _markup_scope(mandate: str | None, provider: str | None, model: str | None) -> _MarkupScope:
    if mandate is not None:
        check_name(mandate, "mandate")
    if model is not None and provider is None:
        raise InvalidRequest("A markup for a model must name its provider.", field="provider")
    prov = "" if provider is None else _check_label(provider, "provider", _PROVIDER_MAX)
    mod = "" if model is None else _check_label(model, "model", _MODEL_MAX)
    return mandate, prov, mod


def _markup_key(scope: _MarkupScope) -> dict[str, str]:
    mandate, provider, model = scope
    key = {"provider": provider, "model": model}
    if mandate is not None:
        key["mandate_id"] = mandate
    return key


def _markup_where(scope: _MarkupScope) -> tuple[Table, list[Any]]:
    table = platform_markups if scope[0] is None else mandate_markups
    return table, [table.c[name] == value for name, value in _markup_key(scope).items()]


_USAGE_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "requests",
)


def _usage_dict(usage: Usage) -> dict[str, int]:
    return {name: getattr(usage, name) for name in _USAGE_FIELDS}


def _custom_cost(price: CustomPrice, usage: Usage) -> tuple[Decimal, tuple[CostComponent, ...]]:
    """Cost of ``usage`` at a custom price, exactly: tokens * price / 1,000,000.

    Cache reads and writes are charged at their own price when the custom
    price has one, and otherwise stay in the plain input (``input_tokens``
    includes them). Audio tokens are charged as plain input and output.
    """
    plain_input = usage.input_tokens
    parts: list[tuple[str, str, int, Decimal, int, str]] = []
    if price.cache_read_mtok is not None:
        plain_input -= usage.cache_read_tokens
        parts.append(
            (
                "cache_read_tokens",
                "cache_read_mtok",
                usage.cache_read_tokens,
                price.cache_read_mtok,
                _TOKENS_PER_MTOK,
                "input",
            )
        )
    if price.cache_write_mtok is not None:
        plain_input -= usage.cache_write_tokens
        parts.append(
            (
                "cache_write_tokens",
                "cache_write_mtok",
                usage.cache_write_tokens,
                price.cache_write_mtok,
                _TOKENS_PER_MTOK,
                "input",
            )
        )
    parts.insert(
        0, ("input_tokens", "input_mtok", plain_input, price.input_mtok, _TOKENS_PER_MTOK, "input")
    )
    parts.append(
        (
            "output_tokens",
            "output_mtok",
            usage.output_tokens,
            price.output_mtok,
            _TOKENS_PER_MTOK,
            "output",
        )
    )
    if price.per_request is not None:
        parts.append(("requests", "per_request", usage.requests, price.per_request, 1, ""))
    total = _ZERO
    components: list[CostComponent] = []
    for usage_key, price_key, quantity, unit_price, per, direction in parts:
        if not quantity:
            continue
        cost = _EXACT.divide(_EXACT.multiply(unit_price, Decimal(quantity)), Decimal(per))
        total = _EXACT.add(total, cost)
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
                direction or None,
                token_type,
            )
        )
    return total, tuple(components)


# ------------------------------------------------------------------------ CSV


@dataclass(frozen=True, slots=True)
class _CsvRate:
    base: str
    quote: str
    rate: Decimal
    valid_from: datetime
    source: str | None


def _parse_time(text: str) -> datetime:
    text = text.strip()
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"valid_from {text!r} is not an ISO 8601 date") from None
        when = datetime(day.year, day.month, day.day, tzinfo=UTC)
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"valid_from {text!r} is not an ISO 8601 date or time") from None
    if when.utcoffset() is None:
        raise ValueError(
            f"valid_from {text!r} has no timezone (write e.g. {text}+00:00 or {text}Z)"
        )
    try:
        return check_time(when, "valid_from")
    except InvalidRequest as exc:
        raise ValueError(exc.message.rstrip(".")) from None


def _parse_csv(source: TextIO | Iterable[str]) -> list[tuple[int, _CsvRate]]:
    """Every rate of the file with its line number, or the first bad line's error."""
    if isinstance(source, str):
        raise InvalidRequest(
            "import_exchange_rates reads a file or an iterable of lines, not one string "
            "(wrap it: io.StringIO(text)).",
            field="source",
        )
    reader = csv.reader(source)

    def bad(line: int, problem: str, field: str | None = None) -> InvalidRequest:
        return InvalidRequest(f"Line {line}: {problem}.", line=line, field=field)

    header: list[str] | None = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip().lstrip("\ufeff").lower() for cell in row]
            break
    expected = ", ".join(CSV_COLUMNS)
    if header is None:
        raise InvalidRequest(
            f"The exchange rate file is empty; it needs the header {expected}.", line=1
        )
    header_line = reader.line_num
    if header not in (list(CSV_COLUMNS), [*CSV_COLUMNS, *CSV_OPTIONAL]):
        raise bad(
            header_line,
            f"the header must be {expected} (optionally followed by source), "
            f"not {','.join(header)}",
        )
    width = len(header)
    seen: dict[tuple[str, str, datetime], tuple[int, Decimal]] = {}
    parsed: list[tuple[int, _CsvRate]] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != width:
            raise bad(line, f"expected {width} fields ({','.join(header)}), found {len(row)}")
        cells = [cell.strip() for cell in row]
        try:
            base, quote = _check_pair(cells[0], cells[1])
            rate = _check_rate(cells[2])
            source_name = _check_source(cells[4] or None) if width == 5 else None
        except InvalidRequest as exc:
            raise bad(line, exc.message.rstrip("."), exc.details.get("field")) from None
        try:
            valid_from = _parse_time(cells[3])
        except ValueError as exc:
            raise bad(line, str(exc), "valid_from") from None
        key = (base, quote, valid_from)
        earlier = seen.get(key)
        if earlier is not None and earlier[1] != rate:
            raise bad(
                line,
                f"the rate {base}->{quote} from {valid_from.isoformat()} is {rate} here but "
                f"{earlier[1]} on line {earlier[0]}",
                "rate",
            )
        if earlier is None:
            seen[key] = (line, rate)
            parsed.append((line, _CsvRate(base, quote, rate, valid_from, source_name)))
    return parsed
