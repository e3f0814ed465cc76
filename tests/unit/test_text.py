"""The one rule every stored text keeps (aibill.domain.text, DESIGN rule 12)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibill.domain.errors import InvalidRequest
from aibill.domain.model import Tags, check_key, check_name
from aibill.domain.money import check_currency
from aibill.domain.permissions import check_provider, check_role
from aibill.domain.text import (
    check_line,
    check_prose,
    check_searchable,
    check_text,
    find_unstorable,
    printable,
    text_problem,
)

EVERY_CHARACTER = st.characters(codec=None, categories=None)  # surrogates too

REFUSED = [
    ("\ud800", "U+D800", "lone surrogate"),
    ("\udfff", "U+DFFF", "lone surrogate"),
    ("\x00", "U+0000", "NUL"),
    ("\x1b", "U+001B", "control character"),
    ("\r", "U+000D", "control character"),
    ("\x7f", "U+007F", "control character"),
    ("\x85", "U+0085", "control character"),
    ("\u2028", "U+2028", "separator"),
    ("\u202e", "U+202E", "bidirectional"),
    ("\u2067", "U+2067", "bidirectional"),
]


@pytest.mark.parametrize(("char", "code", "named"), REFUSED)
def test_a_refused_character_is_named_with_its_field_and_position(
    char: str, code: str, named: str
) -> None:
    for check in (check_line, check_prose):
        with pytest.raises(InvalidRequest) as caught:
            check(f"ab{char}c", "description", max_length=50)
        err = caught.value
        assert err.code == "invalid_request"
        assert err.details == {"field": "description", "position": 3, "character": code}
        assert named in err.message and code in err.message
        assert char not in err.message  # never echoed: the message itself must be printable
        json.dumps(err.to_dict(), ensure_ascii=False).encode("utf-8")


def test_prose_allows_tab_and_line_feed_a_line_does_not() -> None:
    assert check_prose("one\ttwo\nthree", "description", max_length=50) == "one\ttwo\nthree"
    for char in "\t\n":
        with pytest.raises(InvalidRequest):
            check_line(f"a{char}b", "workflow_id", max_length=50)


def test_every_script_emoji_and_markup_are_plain_text() -> None:
    for text in (
        "Zürich",
        "東京",
        "مرحبا",
        "👩‍👩‍👧",
        "[bold red]x[/]",
        "=1+1",
        "<b>&amp;",
        "\ufeff",
    ):
        assert check_line(text, "tag", max_length=50) == text
        assert text_problem(text) is None


def test_length_type_and_blankness() -> None:
    with pytest.raises(InvalidRequest, match="at most 5 characters, not 6") as caught:
        check_line("abcdef", "model", max_length=5)
    assert caught.value.details["field"] == "model"
    with pytest.raises(InvalidRequest, match="must be text"):
        check_line(b"bytes", "model", max_length=5)
    with pytest.raises(InvalidRequest, match="empty"):
        check_line("   ", "model", max_length=5)
    assert check_text("", "name", max_length=5) == ""
    assert check_prose("", "description", max_length=5) == ""


def test_the_label_names_the_thing_and_the_field_stays_a_path() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_text("a\x00", "metadata", label="A metadata key", max_length=9)
    assert caught.value.message.startswith("A metadata key has a NUL")
    assert caught.value.details["field"] == "metadata"


def test_the_domain_checks_refuse_what_storage_cannot_hold() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_key("key\x00")
    assert caught.value.details["field"] == "idempotency_key"
    with pytest.raises(InvalidRequest) as caught:
        Tags(workflow_id="wf\ud800")
    assert caught.value.details["field"] == "workflow_id"
    with pytest.raises(InvalidRequest, match="at most 64"):
        Tags(feature_code="f" * 65)  # the ledger's column holds 64


@pytest.mark.parametrize(
    ("check", "good"),
    [
        (lambda v: check_name(v, "user"), "alice"),
        (check_role, "admin"),
        (check_provider, "openai"),
        (check_currency, "CHF"),
    ],
)
def test_names_with_a_trailing_newline_are_refused(check: object, good: str) -> None:
    assert check(good) == good  # type: ignore[operator]
    with pytest.raises(InvalidRequest):
        check(good + "\n")  # type: ignore[operator]


def test_a_search_may_name_what_a_line_may_not_but_never_nul_or_a_surrogate() -> None:
    assert check_searchable("a\x1bb", "workflow_id", max_length=20) == "a\x1bb"
    for bad in ("a\x00", "\ud800"):
        with pytest.raises(InvalidRequest) as caught:
            check_searchable(bad, "workflow_id", max_length=20)
        assert caught.value.details["field"] == "workflow_id"


def test_find_unstorable_names_the_path() -> None:
    body = {"amount": "1", "metadata": {"ok": "fine", "note": "x\ud800"}, "tags": ["a", "\x00"]}
    assert find_unstorable(body) == ("metadata.note", "a lone surrogate (U+D800)")
    assert find_unstorable({"tags": ["a", "b\x00"]}) == ("tags.1", "a NUL character (U+0000)")
    assert find_unstorable({"metadata": {"\udc80": 1}}) == (
        "metadata",
        "a key with a lone surrogate (U+DC80)",
    )
    assert find_unstorable({"a": ["\x1b[31m", 1, None, 2.5]}) is None  # controls: the service's


@settings(max_examples=300, deadline=None)
@given(st.text(EVERY_CHARACTER, max_size=30))
def test_what_is_accepted_can_be_written_everywhere(text: str) -> None:
    """Whatever the checks let in encodes to UTF-8, holds no NUL and no control
    but tab and line feed, and prints unchanged; what they refuse is refused
    with a message that itself can be written anywhere."""
    try:
        check_prose(text, "description", max_length=30)
    except InvalidRequest as err:
        json.dumps(err.to_dict(), ensure_ascii=False).encode("utf-8")
        assert printable(text) != text
        return
    text.encode("utf-8")
    assert "\x00" not in text and "\r" not in text and "\x1b" not in text
    assert printable(text) == text


@settings(max_examples=300, deadline=None)
@given(st.text(EVERY_CHARACTER, max_size=30))
def test_printable_is_always_utf8_and_free_of_controls(text: str) -> None:
    shown = printable(text)
    shown.encode("utf-8")
    assert check_prose(shown, "shown", max_length=10 * len(text) + 1) == shown
