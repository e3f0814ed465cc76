"""The statements of pricing: exchange rates, markups and custom prices.

Each function runs one statement inside the caller's transaction ``conn`` and
returns rows (attributes by column name) or nothing. Values go in as they are
stored: prices, rates and percents as plain decimal text, times aware. A
markup's ``provider`` and ``model`` are ``''`` for "any"; ``mandate`` None
means the platform's own setting.

Every statement is plain SQL that SQLite and PostgreSQL both accept, run on
the driver's cursor (:mod:`aibill.store.fast`): the three reads of a quote
cost a few microseconds each this way instead of ~30 through SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection

from aibill.store.fast import Row, Statement

__all__ = [
    "custom_price",
    "custom_prices",
    "custom_prices_at",
    "delete_markup",
    "exchange_rate",
    "exchange_rates",
    "insert_custom_price",
    "insert_exchange_rates",
    "insert_markup",
    "markup",
    "markups",
    "markups_matching",
    "rate_at",
    "update_markup",
]

_TIMES: Final = ("at", "valid_from", "created_at", "updated_at")


def _statement(sql: str) -> Statement:
    return Statement(sql, times=_TIMES)


def _values(columns: tuple[str, ...]) -> str:
    """``(a, b) VALUES (:a, :b)`` for an INSERT of these columns."""
    return f"({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"


# ------------------------------------------------------------ exchange rates

_RATE_COLUMNS: Final = ("base", "quote", "valid_from", "rate", "source", "created_at")
_RATE_SELECT: Final = f"SELECT {', '.join(_RATE_COLUMNS)} FROM exchange_rates"

_EXCHANGE_RATE = _statement(
    f"{_RATE_SELECT} WHERE base = :base AND quote = :quote AND valid_from = :valid_from"
)
_BY_PAIR: Final = " ORDER BY base, quote, valid_from"
# Keyed by (base given, quote given).
_EXCHANGE_RATES: Final = {
    (False, False): _statement(_RATE_SELECT + _BY_PAIR),
    (True, False): _statement(f"{_RATE_SELECT} WHERE base = :base{_BY_PAIR}"),
    (False, True): _statement(f"{_RATE_SELECT} WHERE quote = :quote{_BY_PAIR}"),
    (True, True): _statement(f"{_RATE_SELECT} WHERE base = :base AND quote = :quote{_BY_PAIR}"),
}
_INSERT_EXCHANGE_RATE = _statement(f"INSERT INTO exchange_rates {_values(_RATE_COLUMNS)}")
_RATE_AT = _statement(
    """
    SELECT rate, valid_from, source FROM exchange_rates
    WHERE base = :base AND quote = :quote AND valid_from <= :at
    ORDER BY valid_from DESC LIMIT 1
    """
)


def exchange_rate(conn: Connection, base: str, quote: str, valid_from: datetime) -> Row | None:
    """The rate of the pair stored from exactly ``valid_from``, if any."""
    return _EXCHANGE_RATE.first(conn, {"base": base, "quote": quote, "valid_from": valid_from})


def exchange_rates(conn: Connection, base: str | None, quote: str | None) -> list[Row]:
    """Every stored rate, of one base and/or quote currency when given, by
    pair and then oldest first."""
    listing = _EXCHANGE_RATES[(base is not None, quote is not None)]
    return listing.run(conn, {"base": base, "quote": quote})


def insert_exchange_rates(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Store new rates, each a mapping of every column to its value."""
    for row in rows:
        _INSERT_EXCHANGE_RATE.run(conn, row)


def rate_at(conn: Connection, base: str, quote: str, at: datetime) -> Row | None:
    """The rate of the pair in force at ``at`` (``rate``, ``valid_from``,
    ``source``): the one with the latest ``valid_from`` not after ``at``."""
    return _RATE_AT.first(conn, {"base": base, "quote": quote, "at": at})


# ------------------------------------------------------------------ markups
# Each setting has a platform statement and a mandate statement, keyed by
# whether a mandate is given; so have custom prices below.

_MARKUP = {
    False: _statement(
        "SELECT percent, updated_at FROM platform_markups WHERE provider = :provider "
        "AND model = :model"
    ),
    True: _statement(
        "SELECT percent, updated_at FROM mandate_markups WHERE mandate_id = :mandate "
        "AND provider = :provider AND model = :model"
    ),
}
_INSERT_MARKUP = {
    False: _statement(
        f"INSERT INTO platform_markups {_values(('provider', 'model', 'percent', 'updated_at'))}"
    ),
    True: _statement(
        "INSERT INTO mandate_markups (mandate_id, provider, model, percent, updated_at) "
        "VALUES (:mandate, :provider, :model, :percent, :updated_at)"
    ),
}
_UPDATE_MARKUP = {
    False: _statement(
        "UPDATE platform_markups SET percent = :percent, updated_at = :updated_at "
        "WHERE provider = :provider AND model = :model"
    ),
    True: _statement(
        "UPDATE mandate_markups SET percent = :percent, updated_at = :updated_at "
        "WHERE mandate_id = :mandate AND provider = :provider AND model = :model"
    ),
}
_DELETE_MARKUP = {
    False: _statement("DELETE FROM platform_markups WHERE provider = :provider AND model = :model"),
    True: _statement(
        "DELETE FROM mandate_markups WHERE mandate_id = :mandate AND provider = :provider "
        "AND model = :model"
    ),
}
_MARKUPS = {
    False: _statement(
        "SELECT provider, model, percent, updated_at FROM platform_markups ORDER BY provider, model"
    ),
    True: _statement(
        "SELECT provider, model, percent, updated_at FROM mandate_markups "
        "WHERE mandate_id = :mandate ORDER BY provider, model"
    ),
}
# With no provider asked only the "any" rows ('') match.
_MARKUPS_MATCHING = _statement(
    """
    SELECT 'mandate' AS scope, provider, model, percent FROM mandate_markups
    WHERE mandate_id = :mandate AND provider IN ('', :provider) AND model IN ('', :model)
    UNION ALL
    SELECT 'platform' AS scope, provider, model, percent FROM platform_markups
    WHERE provider IN ('', :provider) AND model IN ('', :model)
    """
)


def _markup_key(mandate: str | None, provider: str, model: str) -> dict[str, Any]:
    return {"mandate": mandate, "provider": provider, "model": model}


def markup(conn: Connection, mandate: str | None, provider: str, model: str) -> Row | None:
    """The markup of exactly this scope (``percent``, ``updated_at``), if set."""
    return _MARKUP[mandate is not None].first(conn, _markup_key(mandate, provider, model))


def insert_markup(
    conn: Connection,
    mandate: str | None,
    provider: str,
    model: str,
    *,
    percent: str,
    updated_at: datetime,
) -> None:
    """Store the markup of a scope that has none."""
    params = _markup_key(mandate, provider, model) | {"percent": percent, "updated_at": updated_at}
    _INSERT_MARKUP[mandate is not None].run(conn, params)


def update_markup(
    conn: Connection,
    mandate: str | None,
    provider: str,
    model: str,
    *,
    percent: str,
    updated_at: datetime,
) -> None:
    """Replace the markup of a scope."""
    params = _markup_key(mandate, provider, model) | {"percent": percent, "updated_at": updated_at}
    _UPDATE_MARKUP[mandate is not None].run(conn, params)


def delete_markup(conn: Connection, mandate: str | None, provider: str, model: str) -> None:
    """Remove the markup of a scope."""
    _DELETE_MARKUP[mandate is not None].run(conn, _markup_key(mandate, provider, model))


def markups(conn: Connection, mandate: str | None) -> list[Row]:
    """The platform's markups, or a mandate's own, by provider and model."""
    return _MARKUPS[mandate is not None].run(conn, {"mandate": mandate})


def markups_matching(conn: Connection, mandate: str | None, provider: str, model: str) -> list[Row]:
    """Every markup that applies to a call (``scope`` ``mandate`` or
    ``platform``, ``provider``, ``model``, ``percent``): of the mandate
    (None: none) and of the platform, for the provider and model, the
    provider, or any."""
    params = {"mandate": mandate or "", "provider": provider, "model": model}
    return _MARKUPS_MATCHING.run(conn, params)


# ------------------------------------------------------------ custom prices

_PRICE_COLUMNS: Final = (
    "provider",
    "model",
    "valid_from",
    "price_id",
    "currency",
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "per_request",
    "output_limit",
    "created_at",
)
_PRICES: Final = ", ".join(_PRICE_COLUMNS)

_CUSTOM_PRICE = {
    False: _statement(
        f"SELECT {_PRICES} FROM platform_prices "
        "WHERE provider = :provider AND model = :model AND valid_from = :valid_from"
    ),
    True: _statement(
        f"SELECT {_PRICES} FROM mandate_prices WHERE mandate_id = :mandate "
        "AND provider = :provider AND model = :model AND valid_from = :valid_from"
    ),
}
_INSERT_CUSTOM_PRICE = {
    False: _statement(f"INSERT INTO platform_prices {_values(_PRICE_COLUMNS)}"),
    True: _statement(
        f"INSERT INTO mandate_prices (mandate_id, {_PRICES}) "
        f"VALUES (:mandate, {', '.join(':' + c for c in _PRICE_COLUMNS)})"
    ),
}
_CUSTOM_PRICES = {
    False: _statement(
        f"SELECT {_PRICES} FROM platform_prices ORDER BY provider, model, valid_from"
    ),
    True: _statement(
        f"SELECT {_PRICES} FROM mandate_prices WHERE mandate_id = :mandate "
        "ORDER BY provider, model, valid_from"
    ),
}
_CUSTOM_PRICES_AT = _statement(
    f"""
    SELECT * FROM (
        SELECT 'mandate' AS scope, {_PRICES} FROM mandate_prices
        WHERE mandate_id = :mandate AND provider = :provider AND model = :model
          AND valid_from <= :at
        ORDER BY valid_from DESC LIMIT 1) AS m
    UNION ALL
    SELECT * FROM (
        SELECT 'platform' AS scope, {_PRICES} FROM platform_prices
        WHERE provider = :provider AND model = :model AND valid_from <= :at
        ORDER BY valid_from DESC LIMIT 1) AS p
    """
)


def custom_price(
    conn: Connection, mandate: str | None, provider: str, model: str, valid_from: datetime
) -> Row | None:
    """The custom price of this scope and model stored from exactly ``valid_from``."""
    params = {"mandate": mandate, "provider": provider, "model": model, "valid_from": valid_from}
    return _CUSTOM_PRICE[mandate is not None].first(conn, params)


def insert_custom_price(conn: Connection, mandate: str | None, row: Mapping[str, Any]) -> None:
    """Store a custom price, ``row`` a mapping of every price column to its value."""
    _INSERT_CUSTOM_PRICE[mandate is not None].run(conn, {**row, "mandate": mandate})


def custom_prices(conn: Connection, mandate: str | None) -> list[Row]:
    """The platform's custom prices, or a mandate's own, by provider, model
    and then oldest first."""
    return _CUSTOM_PRICES[mandate is not None].run(conn, {"mandate": mandate})


def custom_prices_at(
    conn: Connection, mandate: str | None, provider: str, model: str, at: datetime
) -> list[Row]:
    """The custom prices of the model in force at ``at``: the mandate's (None:
    none) and the platform's, at most one each, told apart by ``scope``."""
    params = {"mandate": mandate or "", "provider": provider, "model": model, "at": at}
    return _CUSTOM_PRICES_AT.run(conn, params)
