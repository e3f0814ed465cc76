"""Money strings are ASCII (DESIGN rule 12): ``[+-]?[0-9]+(\\.[0-9]+)?`` and
nothing else. Python's ``Decimal()`` and ``int()`` read any script's digits
(``"١٢"`` is 12), exponents, underscores, ``NaN``, ``Infinity`` and spaces;
aibill's parsers refuse all of them, and every ASCII decimal in range reads
back exactly."""

from __future__ import annotations

import unicodedata
from decimal import Decimal as D

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

import aibill
from aibill.cli.core import parse_money, whole
from aibill.domain.money import (
    MAX_AMOUNT_MICROS,
    decimal_from_text,
    from_micros,
    int_from_text,
    to_decimal,
    to_micros,
)

# Every decimal digit of Unicode that is not 0-9.
NON_ASCII_DIGITS = [
    c
    for c in map(chr, range(0x80, 0x110000))
    if unicodedata.category(c) == "Nd" and not (0xD800 <= ord(c) <= 0xDFFF)
]
ASCII_TEXT = st.text(alphabet="0123456789.+-", max_size=8)


@st.composite
def with_foreign_digit(draw: st.DrawFn) -> str:
    """An otherwise plausible amount with at least one non-ASCII digit in it."""
    head, tail = draw(ASCII_TEXT), draw(ASCII_TEXT)
    return head + draw(st.sampled_from(NON_ASCII_DIGITS)) + tail


@settings(max_examples=200, deadline=None)
@given(with_foreign_digit())
def test_any_string_with_a_non_ascii_digit_is_refused(text: str) -> None:
    for parse in (
        lambda: to_decimal(text),
        lambda: to_micros(text),
        lambda: decimal_from_text(text, exponent=True),
    ):
        with pytest.raises(aibill.InvalidAmount) as info:
            parse()
        assert info.value.details["field"] == "amount"
    with pytest.raises(aibill.InvalidRequest):
        int_from_text(text, field="limit")
    with pytest.raises(typer.BadParameter):
        parse_money(text)
    with pytest.raises(typer.BadParameter):
        whole(min=0)(text)


@settings(max_examples=200, deadline=None)
@given(
    micros=st.integers(min_value=1, max_value=MAX_AMOUNT_MICROS),
    places=st.integers(min_value=0, max_value=6),
    zeros=st.integers(min_value=0, max_value=3),
)
def test_any_ascii_decimal_in_range_round_trips(micros: int, places: int, zeros: int) -> None:
    """Written with as many decimals as it needs (or more: trailing zeros), an
    amount reads back as exactly its micro-units, and is written the same way."""
    exact = from_micros(micros)
    needed = max(0, -exact.normalize().as_tuple().exponent)  # type: ignore[operator]
    text = format(exact, f".{max(places, needed) + zeros}f")
    assert text.isascii()
    assert to_micros(text) == micros
    assert to_decimal(text) == exact
    assert str(from_micros(to_micros(text))) == format(exact, ".6f")


@pytest.mark.parametrize(
    "text",
    [
        "١٢",  # Arabic-Indic
        "१२",  # Devanagari
        "\uff11\uff12",  # full width
        "12.\u0665",
        "1e3",
        "1E-6",
        "1_000",
        " 1",
        "1 ",
        "\t1",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "sNaN",
        ".5",
        "5.",
        "",
        "+",
        "0x10",
        "1" * 101,
    ],
)
def test_what_is_not_a_plain_ascii_decimal_is_refused(text: str) -> None:
    with pytest.raises(aibill.InvalidAmount) as info:
        to_decimal(text, field="estimate")
    assert info.value.details["field"] == "estimate"
    assert info.value.code == "invalid_amount"


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", D(12)), ("0.50", D("0.50")), ("-3.25", D("-3.25")), ("+1", D(1)), ("007", D(7))],
)
def test_plain_ascii_decimals(text: str, value: D) -> None:
    assert to_decimal(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-06", D("0.000001")), ("1.5e+20", D("1.5E+20")), ("1E+3", D(1000)), ("-0.0", D(0))],
)
def test_what_str_writes_for_a_number_is_read_in_exponent_mode(text: str, value: D) -> None:
    assert decimal_from_text(text, exponent=True) == value


@pytest.mark.parametrize("text", ["inf", "nan", "\u0661e3", "1e\u0663", "1e", "e3"])
def test_exponent_mode_is_still_ascii_and_finite(text: str) -> None:
    with pytest.raises(aibill.InvalidAmount):
        decimal_from_text(text, exponent=True)


def test_whole_numbers() -> None:
    assert int_from_text("1200", field="input_tokens") == 1200
    for text in ("١٢", "12.0", "1e3", " 12", "", "²"):
        with pytest.raises(aibill.InvalidRequest) as info:
            int_from_text(text, field="input_tokens")
        assert info.value.details["field"] == "input_tokens"
    assert whole(min=1, max=10)("7") == 7 and whole(min=1)(900) == 900
    with pytest.raises(typer.BadParameter):
        whole(min=1, max=10)("11")


def test_the_cli_reads_underscores_but_only_ascii() -> None:
    assert parse_money(" 1_000.50 ") == D("1000.50")
    for text in ("\u0661\u066c\u0660\u0660\u0660", "1e3", "NaN"):
        with pytest.raises(typer.BadParameter):
            parse_money(text)
