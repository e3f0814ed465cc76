"""The code's shape (docs/architecture.md, "Layers"): modules under 800 lines,
functions under 70, and every SQL statement in the store layer."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "aibill"
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 70
SQL_BUILDERS = frozenset({"select", "insert", "update", "delete", "text", "func", "and_", "or_"})


def _sources() -> Iterator[Path]:
    for path in sorted(SRC.rglob("*.py")):
        if "migrations" not in path.parts:
            yield path


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_module_is_over_800_lines() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in _sources()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_70_lines() -> None:
    long = {}
    for path in _sources():
        for fn in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            assert fn.end_lineno is not None
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(SRC)}:{fn.name}"] = lines
    assert long == {}


def _sql_in(path: Path) -> list[str]:
    """What in ``path`` builds or runs SQL: an import of SQLAlchemy's statement
    builders, of the tables, or of the driver path; a call of ``execute``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = {alias.name for alias in node.names}
            if node.module == "sqlalchemy" and names & SQL_BUILDERS:
                found.append(
                    f"line {node.lineno}: from sqlalchemy import {sorted(names & SQL_BUILDERS)}"
                )
            if node.module == "aibill.store.schema" or (
                node.module == "aibill.store" and names & {"schema", "fast"}
            ):
                found.append(f"line {node.lineno}: imports the store's tables or statements")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "execute"
        ):
            found.append(f"line {node.lineno}: .execute(...)")
    return found


@pytest.mark.parametrize(
    "package", ["service", "api", "web", "cli", "compat", "client", "demo_data", "http", "serve"]
)
def test_sql_lives_in_the_store(package: str) -> None:
    """Services and interfaces call named store functions; none writes SQL."""
    root = SRC / package
    paths = sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]
    found = {str(p.relative_to(SRC)): sql for p in paths if (sql := _sql_in(p))}
    assert found == {}


def test_the_check_finds_sql() -> None:
    """The check above is not blind: the store itself is full of SQL."""
    assert _sql_in(SRC / "store" / "tenants.py")
    assert _sql_in(SRC / "store" / "history.py")
