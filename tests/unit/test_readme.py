"""The README's Python examples run as written, in order, on a fresh ledger, and
show what a user sees: an expression followed by a comment ``# → <repr>`` (on its
own line or the next) must print exactly that repr (``...`` stands for any text)."""

from __future__ import annotations

import ast
import doctest
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
ARROW = "# → "


def _expected(lines: list[str], stmt: ast.stmt) -> str | None:
    """The ``# →`` comment that belongs to ``stmt``: on its last line, or alone
    on the line after it."""
    assert stmt.end_lineno is not None
    last = lines[stmt.end_lineno - 1]
    if ARROW in last:
        return last.split(ARROW, 1)[1].strip()
    if stmt.end_lineno < len(lines) and lines[stmt.end_lineno].lstrip().startswith(ARROW):
        return lines[stmt.end_lineno].split(ARROW, 1)[1].strip()
    return None


def run_block(code: str, namespace: dict[str, object]) -> int:
    """Run ``code`` statement by statement; returns how many shown values it checked."""
    lines = code.splitlines()
    checker = doctest.OutputChecker()
    checked = 0
    for stmt in ast.parse(code).body:
        expected = _expected(lines, stmt)
        if expected is None or not isinstance(stmt, ast.Expr):
            exec(compile(ast.Module([stmt], []), str(README), "exec"), namespace)
            continue
        value = eval(compile(ast.Expression(stmt.value), str(README), "eval"), namespace)
        shown = repr(value)
        # A comment may add words after the value, in parentheses: "[] (sound)".
        candidates = [expected, re.sub(r"\s+\(.*\)$", "", expected)]
        assert any(
            checker.check_output(want + "\n", shown + "\n", doctest.ELLIPSIS) for want in candidates
        ), f"README line {stmt.lineno}: shows {expected!r}, but the value is {shown!r}"
        checked += 1
    return checked


def test_readme_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict[str, object] = {}
    checked = 0
    for block in blocks:
        code = block.replace("sqlite:///aibill.db", f"sqlite:///{tmp_path / 'readme.db'}")
        checked += run_block(code, namespace)
    assert checked >= 5
    billing = namespace["billing"]
    assert billing.verify() == []  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "permission_denied" in out and "aibill_acme_" in out


def test_a_wrong_shown_value_is_caught() -> None:
    """The check above can fail: a shown value that is not the real one is reported."""
    with pytest.raises(AssertionError, match="shows"):
        run_block("1 + 1   # → 3\n", {})
    assert run_block("[1, 2, 3]   # → [1, ...]\n", {}) == 1
