"""Money at the edges is ``Decimal``; inside it is an integer of micro-units.

This module is the one place where the two meet. Floats are refused: a float
cannot say 0.1 exactly, and a ledger that starts from an inexact number can
never be exact again.

A money *string* is plain ASCII: an optional sign, the digits ``0-9``, and
optionally a point followed by more digits (``"12"``, ``"0.50"``, ``"-3.25"``).
Python's ``Decimal()`` and ``int()`` would also take other scripts' digits
(``"١٢"`` is 12), exponents (``"1e3"``), underscores (``"1_000"``), ``NaN``,
``Infinity`` and surrounding whitespace; all of these are refused here, so a
string means the same to aibill as to every person and program that reads it.
"""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal

from aibill.domain.errors import InvalidAmount, InvalidRequest

MICROS_PER_UNIT = 1_000_000
MICRO = Decimal("0.000001")
# Largest amount one operation may carry: 10^12 units. Counters are 64-bit
# integers of micro-units (9.2 * 10^12 units), so a single amount can never
# overflow them on its own.
MAX_AMOUNT_MICROS = 10**18
MAX_TEXT_LENGTH = 100
"""The longest money (or price, rate, percent) string read; longer is refused."""
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?", re.ASCII)
# What ``str()`` writes for an int, a float or a Decimal: exponents too.
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_WHOLE_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NOT_FINITE = frozenset({"nan", "snan", "inf", "infinity"})
_UNBOUNDED = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)  # scaleb without rounding


def decimal_from_text(text: str, *, field: str = "amount", exponent: bool = False) -> Decimal:
    """The Decimal a money string says, or ``InvalidAmount`` naming ``field``.

    Only ASCII is read: ``[+-]?[0-9]+(\\.[0-9]+)?``, at most
    ``MAX_TEXT_LENGTH`` characters. ``exponent=True`` also takes what ``str()``
    writes for a float or a Decimal (``"1e-06"``, ``"1E+3"``): for the one
    place that converts plain numbers through ``str()`` (the compatibility
    module). ``NaN`` and infinities are never taken.
    """
    pattern = _NUMBER_TEXT if exponent else _DECIMAL_TEXT
    if len(text) <= MAX_TEXT_LENGTH and pattern.fullmatch(text):
        return Decimal(text)
    if text.lower().lstrip("+-") in _NOT_FINITE:
        raise InvalidAmount(f"{field} must be a finite number, not {text}.", field=field)
    shown = text if len(text) <= 40 else text[:40] + "..."
    raise InvalidAmount(
        f"{field} {shown!r} is not a decimal number: write ASCII digits with an optional"
        ' sign and decimal point, such as "12.50" (no exponent, spaces or other'
        " characters).",
        field=field,
    )


def int_from_text(text: str, *, field: str) -> int:
    """A whole number from text (a query parameter, a form, a CSV cell), ASCII
    digits only: ``int()`` would also read other scripts' digits. Raises
    ``InvalidRequest`` naming ``field``."""
    if len(text) > 40 or not _WHOLE_TEXT.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidRequest(
            f"{field} must be a whole number in ASCII digits, not {shown!r}.", field=field
        )
    return int(text)


def to_decimal(value: object, *, field: str = "amount") -> Decimal:
    """A finite Decimal from a Decimal, an int or a decimal string; never from a
    float (or a bool), which is refused with a message that says why."""
    if isinstance(value, bool | float):
        raise InvalidAmount(
            f"{field} must be a Decimal, an int or a decimal string, not {type(value).__name__}: "
            "floats cannot carry money exactly (write Decimal('0.10')).",
            field=field,
        )
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        number = decimal_from_text(value, field=field)
    else:
        raise InvalidAmount(
            f"{field} must be a Decimal, an int or a decimal string, not {type(value).__name__}.",
            field=field,
        )
    if not number.is_finite():
        raise InvalidAmount(f"{field} must be a finite number, not {number}.", field=field)
    return number


def to_micros(amount: object, *, field: str = "amount", allow_zero: bool = False) -> int:
    """Turn a Decimal (or int, or decimal string) into micro-units, exactly.

    Refuses floats, booleans, NaN and infinities, negative numbers, zero
    (unless ``allow_zero``), amounts with more than six decimal places and
    amounts above ``MAX_AMOUNT_MICROS``.
    """
    value = to_decimal(amount, field=field)
    scaled = value * MICROS_PER_UNIT
    if scaled != scaled.to_integral_value():
        raise InvalidAmount(
            f"{field} {value} has more than six decimal places; aibill counts in millionths.",
            field=field,
        )
    micros = int(scaled)
    if micros < 0 or (micros == 0 and not allow_zero):
        raise InvalidAmount(
            f"{field} must be {'zero or ' if allow_zero else ''}positive, not {value}.", field=field
        )
    if micros > MAX_AMOUNT_MICROS:
        raise InvalidAmount(f"{field} {value} is larger than aibill accepts.", field=field)
    return micros


def from_micros(micros: int) -> Decimal:
    """Micro-units back to a Decimal with exactly six decimal places."""
    return (Decimal(micros) / MICROS_PER_UNIT).quantize(MICRO)


def round_to_micros(value: Decimal) -> int:
    """Round an exact Decimal to micro-units, half-even, once: the scaling to
    micro-units is exact (``value * 10**6`` in the default context would round
    a value of more than 28 digits first, and so round it twice)."""
    micros = value.scaleb(6, context=_UNBOUNDED)
    return int(micros.to_integral_value(rounding=ROUND_HALF_EVEN))


def check_currency(code: str) -> str:
    """A currency is three upper-case letters (ISO 4217)."""
    if not isinstance(code, str) or not _CURRENCY.fullmatch(code):
        raise InvalidRequest(
            f"currency must be an ISO 4217 code of three capital letters, not {code!r}.",
            field="currency",
        )
    return code
