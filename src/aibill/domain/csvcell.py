"""The one rule for a CSV text cell that a spreadsheet could run as a formula.

Spreadsheets (Excel, LibreOffice, Google Sheets) run a cell whose text starts
with ``=``, ``+``, ``-`` or ``@`` as a formula, and some also after a leading
tab or carriage return. A text cell that starts with one of these is written
with a single quote in front (``'=HYPERLINK(...)``), which spreadsheets show
as text. The rule applies to *text* columns only: whether a cell is text is
decided by its column, never by what it contains, so a negative amount
(``-0.500000``) in a number column stays a number, and a description that
happens to read ``-1`` is quoted like any other text.
"""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""The first characters that make a spreadsheet read a cell as a formula."""
QUOTE = "'"


def neutralize(text: str) -> str:
    """``text`` as a spreadsheet shows it but never runs it: prefixed with ``'``
    when it starts with one of :data:`FORMULA_START`, else unchanged."""
    return QUOTE + text if text.startswith(FORMULA_START) else text


def is_neutral(text: str) -> bool:
    """Whether a spreadsheet would take ``text`` as plain text (not a formula)."""
    return not text.startswith(FORMULA_START)


__all__ = ["FORMULA_START", "QUOTE", "is_neutral", "neutralize"]
