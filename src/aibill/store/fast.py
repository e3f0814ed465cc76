"""The ledger's hot statements, run on the driver's cursor.

A hold and a capture run about ten statements. Through SQLAlchemy Core each
costs 25-30 µs of Python before the driver sees it, which is most of a
cycle's CPU on a fast disk; on the driver's cursor it costs a few µs. These
statements are plain SQL that SQLite and PostgreSQL both accept, written
once with ``:name`` parameters; they run inside the unit of work's own
transaction (same connection, same commit), and the values cross the
boundary exactly as SQLAlchemy's column types would store them (UTC times,
JSON text, integers), so Core and this path read each other's rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

_PARAM = re.compile(r"(?<!:):(\w+)")
Observer = Callable[[str, Mapping[str, Any]], None]
_observers: list[Observer] = []
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format for SQLite DATETIME


def _sqlite_time(value: datetime) -> str:
    """A UTC time as SQLAlchemy stores a SQLite DATETIME (``_SQLITE_TIME``), made
    the faster way: ``isoformat`` writes the same text for years 1000-9999."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _json_text(value: Any) -> str:
    """JSON text as SQLAlchemy's JSON type writes it; ``None`` and ``{}`` (most
    metadata) without calling the encoder."""
    if value is None:
        return "null"
    if value == {} and isinstance(value, dict):
        return "{}"
    return json.dumps(value)


class Row:
    """A result row: attributes by column name, and ``_mapping`` like SQLAlchemy's rows."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None


class Statement:
    """One SQL statement, with the columns whose values need converting."""

    __slots__ = ("_json", "_names", "_pg", "_sqlite", "_times")

    def __init__(
        self, sql: str, *, times: Iterable[str] = (), json_columns: Iterable[str] = ()
    ) -> None:
        self._sqlite = " ".join(sql.split())
        self._pg = _PARAM.sub(r"%(\1)s", self._sqlite)
        self._names = frozenset(_PARAM.findall(self._sqlite))
        self._times = frozenset(times)
        self._json = frozenset(json_columns)

    def _bind(self, params: Mapping[str, Any], sqlite: bool) -> dict[str, Any]:
        out = dict.fromkeys(self._names)  # a parameter not given is NULL
        out.update(params)
        for name in self._times:
            value = out.get(name)
            if value is not None:
                value = value.astimezone(UTC)
                out[name] = _sqlite_time(value) if sqlite else value
        for name in self._json:
            if name in out:
                out[name] = _json_text(out[name])
        return out

    def _load(self, names: list[str], values: tuple[Any, ...], sqlite: bool) -> Row:
        row = dict(zip(names, values, strict=True))
        for name in self._times & row.keys():
            value = row[name]
            if value is None:
                continue
            if isinstance(value, str):
                row[name] = datetime.fromisoformat(value).replace(tzinfo=UTC)
            else:
                row[name] = value.astimezone(UTC)
        if sqlite:
            for name in self._json & row.keys():
                if isinstance(row[name], str):
                    row[name] = json.loads(row[name])
        return row_type(row)

    def run(self, conn: Connection, params: Mapping[str, Any]) -> list[Row]:
        """Execute in ``conn``'s transaction; return every row it gives back."""
        sqlite = conn.dialect.name == "sqlite"
        sql = self._sqlite if sqlite else self._pg
        bound = self._bind(params, sqlite)
        for observe in _observers:
            observe(sql, bound)
        with _cursor(conn, sql, bound) as cursor:
            cursor.execute(sql, bound)
            if cursor.description is None:
                return []
            names = [d[0] for d in cursor.description]
            values = cursor.fetchall()
        return [self._load(names, row, sqlite) for row in values]

    def run_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """Execute once per parameter set of ``rows``, in one driver call (a
        pipeline on PostgreSQL), in ``conn``'s transaction."""
        sqlite = conn.dialect.name == "sqlite"
        sql = self._sqlite if sqlite else self._pg
        bound = [self._bind(params, sqlite) for params in rows]
        if not bound:
            return
        for observe in _observers:
            for params in bound:
                observe(sql, params)
        with _cursor(conn, sql, bound) as cursor:
            cursor.executemany(sql, bound)

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Row | None:
        rows = self.run(conn, params)
        return rows[0] if rows else None

    def one(self, conn: Connection, params: Mapping[str, Any]) -> Row:
        rows = self.run(conn, params)
        if len(rows) != 1:
            raise AssertionError(f"expected one row, got {len(rows)}: {self._sqlite}")
        return rows[0]


@contextmanager
def _cursor(conn: Connection, sql: str, bound: Any) -> Iterator[Any]:
    """The driver's cursor of ``conn``, closed after; a driver error is
    translated as SQLAlchemy would, so the unit of work's retry rules apply."""
    dialect = conn.dialect
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            bound,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        ) from exc
    finally:
        cursor.close()


row_type = Row


@contextmanager
def observing(observer: Observer) -> Iterator[None]:
    """Call ``observer(sql, parameters)`` for every statement run on this path,
    in this process, as the driver receives it: how ``bench/ledger.py`` learns
    the exact statements of a cycle to replay them through the bare driver."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)
