"""The rule every text aibill takes in keeps (concepts.md rule 12).

A text is stored only if every later read can carry it: JSON, CSV, HTML, a
terminal, and both databases. So a text must be a ``str`` that is valid
Unicode (no lone surrogates: it encodes to UTF-8), of bounded length, and
free of the characters that storage refuses or that an output could misread:

* NUL, and every other C0 and C1 control character and DEL (a terminal acts
  on escape sequences, a carriage return overwrites a line, PostgreSQL
  refuses NUL);
* the line and paragraph separators U+2028 and U+2029;
* the bidirectional embedding, override and isolate controls (U+202A-U+202E,
  U+2066-U+2069), which reorder what a terminal or a browser shows around
  them.

Two kinds of text:

* a **line** (idempotency keys, tags, ids, names, labels, metadata keys):
  none of the characters above, and, where a value is required, not blank;
* **prose** (descriptions, metadata values): the same, except that tab and
  line feed are allowed.

Anything else is an :class:`~aibill.domain.errors.InvalidRequest` (422
``invalid_request`` over HTTP) that names the field, the character (as
``U+XXXX``, never the character itself) and its position. The checks are
pure functions; the services call them before they open a transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from aibill.domain.errors import InvalidRequest

__all__ = [
    "check_line",
    "check_optional_line",
    "check_prose",
    "check_searchable",
    "check_text",
    "find_unstorable",
    "printable",
    "text_problem",
]

_SURROGATES: Final = "\ud800-\udfff"
_BIDI: Final = "\u202a-\u202e\u2066-\u2069"
_SEPARATORS: Final = "\u2028\u2029"
_LINE_BAD: Final = re.compile(f"[\x00-\x1f\x7f-\x9f{_SEPARATORS}{_BIDI}{_SURROGATES}]")
_PROSE_BAD: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_SEPARATORS}{_BIDI}{_SURROGATES}]")
_UNSTORABLE: Final = re.compile(f"[\x00{_SURROGATES}]")


def _describe(char: str) -> str:
    point = ord(char)
    code = f"U+{point:04X}"
    if point == 0:
        return f"a NUL character ({code})"
    if 0xD800 <= point <= 0xDFFF:
        return f"a lone surrogate ({code})"
    if char in _SEPARATORS:
        return f"a line or paragraph separator ({code})"
    if 0x202A <= point <= 0x202E or 0x2066 <= point <= 0x2069:
        return f"a bidirectional control character ({code})"
    return f"a control character ({code})"


def text_problem(value: str, *, multiline: bool = False) -> tuple[int, str] | None:
    """The first character of ``value`` that may not be stored, as ``(index,
    description)``; None when every character may. ``multiline``: prose, where
    tab and line feed are allowed."""
    found = (_PROSE_BAD if multiline else _LINE_BAD).search(value)
    if found is None:
        return None
    return found.start(), _describe(found.group())


def _bounded_str(value: object, field: str, name: str, max_length: int) -> str:
    """``value`` if it is a string of at most ``max_length`` characters."""
    if not isinstance(value, str):
        raise InvalidRequest(
            f"{name} must be text (a string), not {type(value).__name__}.", field=field
        )
    if len(value) > max_length:
        raise InvalidRequest(
            f"{name} may have at most {max_length} characters, not {len(value)}.",
            field=field,
            max_length=max_length,
        )
    return value


def check_text(
    value: object,
    field: str,
    *,
    max_length: int,
    multiline: bool = False,
    required: bool = False,
    label: str | None = None,
) -> str:
    """``value`` if it is a text that may be stored in ``field``; else
    ``InvalidRequest`` naming the field. ``required``: not empty and not only
    spaces. ``label``: what the message calls it (default: ``field``)."""
    name = label or field
    value = _bounded_str(value, field, name, max_length)
    problem = text_problem(value, multiline=multiline)
    if problem is not None:
        index, what = problem
        allowed = " (tab and line feed are allowed)" if multiline else ""
        raise InvalidRequest(
            f"{name} has {what} at position {index + 1}; text must be valid Unicode "
            f"(no lone surrogates) without NUL or other control characters{allowed}.",
            field=field,
            position=index + 1,
            character=f"U+{ord(value[index]):04X}",
        )
    if required and not value.strip():
        raise InvalidRequest(f"{name} must not be empty or only spaces.", field=field)
    return value


def check_line(value: object, field: str, *, max_length: int) -> str:
    """A required one-line text: an identifier, a tag, a name, a label."""
    return check_text(value, field, max_length=max_length, required=True)


def check_optional_line(value: object, field: str, *, max_length: int) -> str | None:
    """:func:`check_line`, or None for None."""
    return None if value is None else check_line(value, field, max_length=max_length)


def check_prose(value: object, field: str, *, max_length: int) -> str:
    """Free text for people (a description): may be empty; tab and line feed allowed."""
    return check_text(value, field, max_length=max_length, multiline=True)


def check_searchable(value: object, field: str, *, max_length: int) -> str:
    """A filter's value (what to look for, not what to store): a string that
    both databases can compare, that is, valid Unicode without NUL. Looser than
    :func:`check_line`, so that values stored before a rule existed can still
    be found."""
    value = _bounded_str(value, field, field, max_length)
    found = _UNSTORABLE.search(value)
    if found is not None:
        raise InvalidRequest(
            f"{field} has {_describe(found.group())} at position {found.start() + 1}.",
            field=field,
            position=found.start() + 1,
            character=f"U+{ord(found.group()):04X}",
        )
    return value


def find_unstorable(data: object, path: str = "") -> tuple[str, str] | None:
    """The first text anywhere in decoded JSON ``data`` (object keys included)
    that no database can store, a lone surrogate or a NUL, as ``(path,
    description)``; the path names the field (``metadata.note``, ``items.2``).
    None when there is none."""
    if isinstance(data, str):
        found = _UNSTORABLE.search(data)
        return None if found is None else (path, _describe(found.group()))
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = str(key)
            bad = _UNSTORABLE.search(name)
            if bad is not None:
                return (path, f"a key with {_describe(bad.group())}")
            hit = find_unstorable(value, f"{path}.{name}" if path else name)
            if hit is not None:
                return hit
        return None
    if isinstance(data, list | tuple):
        for index, value in enumerate(data):
            hit = find_unstorable(value, f"{path}.{index}" if path else str(index))
            if hit is not None:
                return hit
    return None


def printable(value: str) -> str:
    """``value`` as it may be shown anywhere, a terminal included: each lone
    surrogate and each control character but tab and line feed written as an
    escape (``\\x1b``, ``\\ud800``), every other character unchanged. Text that
    the checks above let in comes out unchanged."""
    return _PROSE_BAD.sub(_escape, value)


def _escape(found: re.Match[str]) -> str:
    point = ord(found.group())
    return f"\\x{point:02x}" if point <= 0xFF else f"\\u{point:04x}"
