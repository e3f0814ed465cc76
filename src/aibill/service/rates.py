"""Exchange rates: set one, import a CSV file of them, list them, and find the
one in force at a time.

A rate converts one unit of ``base`` into ``rate`` units of ``quote`` from
its ``valid_from`` on, until the next rate of the pair starts. A rate that
was in force stays on record: a correction is a new rate with a later
``valid_from``. aibill never assumes 1:1 between two currencies and never
inverts the opposite pair's rate.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, TextIO

from sqlalchemy import Connection

from aibill.domain.errors import AlreadyExists, InvalidRequest, MissingExchangeRate
from aibill.domain.money import check_currency
from aibill.domain.prices import (
    ExchangeRate,
    check_currency_pair,
    check_rate,
    check_rate_source,
)
from aibill.domain.principal import Scope
from aibill.domain.times import check_time
from aibill.service.pricing_base import PricingBase, stored_decimal
from aibill.store import prices
from aibill.store.fast import Row

CSV_COLUMNS: Final = ("base", "quote", "rate", "valid_from")
CSV_OPTIONAL: Final = ("source",)


class ExchangeRates(PricingBase):
    """Setting, importing and reading exchange rates (part of
    :class:`~aibill.service.pricing.Pricing`)."""

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
        base, quote = check_currency_pair(base, quote)
        value = check_rate(rate)
        start = self._now() if valid_from is None else check_time(valid_from, "valid_from")
        src = check_rate_source(source)

        def work(conn: Connection) -> ExchangeRate:
            self._authorize(conn, None, Scope.ADMIN)
            now = self._now()
            stored = prices.exchange_rate(conn, base, quote, start)
            if stored is not None:
                existing = _rate_from_row(stored)
                _same_rate(existing, value)
                return existing
            row = _rate_row(base, quote, start, value, src, now)
            prices.insert_exchange_rates(conn, [row])
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
        self._read(lambda conn: self._authorize(conn, None, Scope.ADMIN))  # refuse before reading
        parsed = _parse_csv(source)

        def work(conn: Connection) -> int:
            self._authorize(conn, None, Scope.ADMIN)
            now = self._now()
            stored: dict[tuple[str, str, datetime], ExchangeRate] = {}
            for base, quote in sorted({(r.base, r.quote) for _, r in parsed}):
                for row in prices.exchange_rates(conn, base, quote):
                    known = _rate_from_row(row)
                    stored[(known.base, known.quote, known.valid_from)] = known
            new: list[dict[str, Any]] = []
            for line, rate in parsed:
                existing = stored.get((rate.base, rate.quote, rate.valid_from))
                if existing is not None:
                    _same_rate(existing, rate.rate, line=line)
                    continue
                new.append(
                    _rate_row(rate.base, rate.quote, rate.valid_from, rate.rate, rate.source, now)
                )
            if new:
                prices.insert_exchange_rates(conn, new)
                self._auditor(conn, None, "exchange_rate.import", None, None, {"rates": new})
            return len(new)

        return self._write(work)

    def exchange_rates(
        self, base: str | None = None, quote: str | None = None
    ) -> list[ExchangeRate]:
        """Every stored rate, optionally of one base and/or quote currency,
        by pair and then oldest first."""
        of_base = None if base is None else check_currency(base)
        of_quote = None if quote is None else check_currency(quote)
        return self._read(
            lambda conn: [_rate_from_row(r) for r in prices.exchange_rates(conn, of_base, of_quote)]
        )

    def exchange_rate(self, base: str, quote: str, at: datetime) -> Decimal:
        """The rate from ``base`` to ``quote`` in force at ``at``: the one with
        the latest ``valid_from`` not after ``at``.

        The same currency is 1 without a lookup. No rate in force is
        ``MissingExchangeRate``; the opposite pair's rate is never inverted.
        """
        when = check_time(at, "at")
        if check_currency(base) == check_currency(quote):
            return Decimal(1)
        return self._read(lambda conn: rate_in_force(conn, base, quote, when)[0])


def rate_in_force(conn: Connection, base: str, quote: str, at: datetime) -> tuple[Decimal, Row]:
    """The rate from ``base`` to ``quote`` in force at ``at``, and its row
    (``valid_from``, ``source``); ``MissingExchangeRate`` when there is none."""
    row = prices.rate_at(conn, base, quote, at)
    if row is None:
        raise MissingExchangeRate(base, quote, at.isoformat())
    return Decimal(row.rate), row


def _rate_row(
    base: str, quote: str, valid_from: datetime, rate: Decimal, source: str | None, now: datetime
) -> dict[str, Any]:
    """A new rate as it is stored (and as the audit log records it)."""
    return {
        "base": base,
        "quote": quote,
        "valid_from": valid_from,
        "rate": stored_decimal(rate),
        "source": source,
        "created_at": now,
    }


def _rate_from_row(row: Row) -> ExchangeRate:
    return ExchangeRate(
        row.base, row.quote, Decimal(row.rate), row.valid_from, row.source, row.created_at
    )


def _same_rate(existing: ExchangeRate, rate: Decimal, *, line: int | None = None) -> None:
    """Refuse a rate for a pair and ``valid_from`` already stored with another value."""
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


# ------------------------------------------------------------------------ CSV


@dataclass(frozen=True, slots=True)
class _CsvRate:
    base: str
    quote: str
    rate: Decimal
    valid_from: datetime
    source: str | None


def _bad_line(line: int, problem: str, field: str | None = None) -> InvalidRequest:
    return InvalidRequest(f"Line {line}: {problem}.", line=line, field=field)


def _parse_time(text: str) -> datetime:
    """A CSV ``valid_from``: ISO 8601 with a timezone, or a date (midnight UTC)."""
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


def _header(reader: Iterable[list[str]]) -> list[str] | None:
    """The first line that is not blank, as column names; None for an empty file."""
    for row in reader:
        if any(cell.strip() for cell in row):
            return [cell.strip().lstrip("\ufeff").lower() for cell in row]
    return None


def _parse_line(line: int, row: list[str], header: list[str]) -> _CsvRate:
    """One line of rates, checked as :meth:`ExchangeRates.set_exchange_rate` checks it."""
    width = len(header)
    if len(row) != width:
        raise _bad_line(line, f"expected {width} fields ({','.join(header)}), found {len(row)}")
    cells = [cell.strip() for cell in row]
    try:
        base, quote = check_currency_pair(cells[0], cells[1])
        rate = check_rate(cells[2])
        source_name = check_rate_source(cells[4] or None) if width == 5 else None
    except InvalidRequest as exc:
        raise _bad_line(line, exc.message.rstrip("."), exc.details.get("field")) from None
    try:
        valid_from = _parse_time(cells[3])
    except ValueError as exc:
        raise _bad_line(line, str(exc), "valid_from") from None
    return _CsvRate(base, quote, rate, valid_from, source_name)


def _parse_csv(source: TextIO | Iterable[str]) -> list[tuple[int, _CsvRate]]:
    """Every rate of the file with its line number, or the first bad line's error."""
    if isinstance(source, str):
        raise InvalidRequest(
            "import_exchange_rates reads a file or an iterable of lines, not one string "
            "(wrap it: io.StringIO(text)).",
            field="source",
        )
    reader = csv.reader(source)
    header = _header(reader)
    expected = ", ".join(CSV_COLUMNS)
    if header is None:
        raise InvalidRequest(
            f"The exchange rate file is empty; it needs the header {expected}.", line=1
        )
    if header not in (list(CSV_COLUMNS), [*CSV_COLUMNS, *CSV_OPTIONAL]):
        raise _bad_line(
            reader.line_num,
            f"the header must be {expected} (optionally followed by source), "
            f"not {','.join(header)}",
        )
    seen: dict[tuple[str, str, datetime], tuple[int, Decimal]] = {}
    parsed: list[tuple[int, _CsvRate]] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        rate = _parse_line(line, row, header)
        key = (rate.base, rate.quote, rate.valid_from)
        earlier = seen.get(key)
        if earlier is not None and earlier[1] != rate.rate:
            raise _bad_line(
                line,
                f"the rate {rate.base}->{rate.quote} from {rate.valid_from.isoformat()} is "
                f"{rate.rate} here but {earlier[1]} on line {earlier[0]}",
                "rate",
            )
        if earlier is None:
            seen[key] = (line, rate.rate)
            parsed.append((line, rate))
    return parsed
