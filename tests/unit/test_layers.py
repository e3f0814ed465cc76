"""The layers of ``src/aibill`` import downward only, and no modules import each
other in a cycle (docs/architecture.md, "Layers").

Every module under ``src/aibill`` is parsed with ``ast``; every import counts,
at any level (inside functions too), ``if TYPE_CHECKING:`` imports included:
an annotation that needs a module above, or one that imports back, is the
same dependency as a run-time import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "aibill"

# Lowest first. A module may import its own layer and any layer below it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("domain", ("aibill.domain",)),
    ("store", ("aibill.store", "aibill.catalog")),
    ("service", ("aibill.service", "aibill.settings")),
    ("http", ("aibill.http",)),
    (
        "interfaces",
        ("aibill.api", "aibill.web", "aibill.client", "aibill.compat", "aibill.demo_data"),
    ),
    ("server", ("aibill.serve",)),
    ("cli", ("aibill.cli", "aibill.__main__")),
    ("facade", ("aibill",)),
)
SIBLINGS = "interfaces"
"""The interfaces are siblings: none imports another (the API does not import
the dashboard, the dashboard does not import the API, the client neither)..."""
SIBLING_EXCEPTIONS = frozenset({("aibill.api.app", "aibill.web")})
"""...except that the API's app, the top of the HTTP graph, mounts the dashboard."""


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str:
    """The module an imported name lives in (``aibill.x.Name`` -> ``aibill.x``)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _imports_of(module: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target == ROOT or target.startswith(ROOT + "."):
                yield Import(module, _resolve(target), node.lineno)


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports_of(module, path)]


def _layer_of(module: str) -> tuple[int, str]:
    """(rank, component): the layer's rank, and the package the module belongs to."""
    best: tuple[int, str] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # the root package is the facade alone, not everything under it
            inside = module == prefix or (prefix != ROOT and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > len(best[1])):
                best = (rank, prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def _refusal(imp: Import) -> str | None:
    source_rank, source_part = _layer_of(imp.source)
    target_rank, target_part = _layer_of(imp.target)
    where = f"{imp.source}:{imp.line} imports {imp.target}"
    if target_rank > source_rank:
        return f"{where}: {LAYERS[source_rank][0]} may not import {LAYERS[target_rank][0]}"
    sideways = source_rank == target_rank and source_part != target_part
    if not sideways or LAYERS[source_rank][0] != SIBLINGS:
        return None
    for source, target in SIBLING_EXCEPTIONS:
        if (imp.source == source or imp.source.startswith(source + ".")) and target_part == target:
            return None
    return f"{where}: {source_part} and {target_part} are siblings"


def test_every_module_has_a_layer() -> None:
    assert len(MODULES) > 50
    for module in MODULES:
        _layer_of(module)
    with pytest.raises(AssertionError, match="belongs to no layer"):
        _layer_of("aibill.somewhere_new")


def test_imports_go_downward_only() -> None:
    refusals = [r for imp in IMPORTS if (r := _refusal(imp)) is not None]
    assert refusals == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {}
    for imp in IMPORTS:
        if imp.target != imp.source:
            edges.setdefault(imp.source, set()).add(imp.target)
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_an_upward_import_is_refused() -> None:
    assert _refusal(Import("aibill.domain.money", "aibill.store.fast", 1))
    assert _refusal(Import("aibill.store.tx", "aibill.service.hooks", 1))
    assert _refusal(Import("aibill.client", "aibill.web.forms", 1))
    assert _refusal(Import("aibill.compat.gateway", "aibill", 1))
    assert _refusal(Import("aibill.web.forms", "aibill.api.errors", 1))
    assert _refusal(Import("aibill.api.docs", "aibill.web.routing", 1))
    assert _refusal(Import("aibill.api.app", "aibill.web.routing", 1)) is None
    assert _refusal(Import("aibill.service.billing", "aibill.store.tx", 1)) is None


def test_the_client_imports_domain_types_only() -> None:
    """Every module of the HTTP client imports the domain and its own package only."""
    sources = {imp.source for imp in IMPORTS if imp.source.startswith("aibill.client")}
    assert {"aibill.client", "aibill.client.remote"} <= sources
    for imp in IMPORTS:
        if imp.source == "aibill.client" or imp.source.startswith("aibill.client."):
            assert imp.target.startswith(("aibill.domain", "aibill.client")), imp


def test_the_demo_month_is_imported_only_by_the_demo_command() -> None:
    importers = {imp.source for imp in IMPORTS if imp.target == "aibill.demo_data"}
    assert importers <= {"aibill.cli.app"}
    tree = ast.parse(MODULES["aibill.cli.app"].read_text(encoding="utf-8"))
    for node in tree.body:  # never at the top of the module, only inside the command
        if isinstance(node, ast.ImportFrom | ast.Import):
            names = [a.name for a in node.names]
            assert "demo_data" not in names and "aibill.demo_data" not in names


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        "import aibill.domain.money",
        "import aibill.domain",
        "import aibill",
        "import pkgutil, importlib, aibill.domain as d\n"
        "for m in pkgutil.iter_modules(d.__path__):\n"
        "    importlib.import_module('aibill.domain.' + m.name)",
    ],
)
def test_the_domain_loads_neither_the_database_nor_http(code: str) -> None:
    loaded = _loaded_after(code)
    assert "aibill" in loaded
    assert not {"sqlalchemy", "httpx", "fastapi"} & loaded


def test_the_client_does_not_load_the_database_layer() -> None:
    loaded = _loaded_after("import aibill.client")
    assert "httpx" in loaded and "sqlalchemy" not in loaded


def test_the_library_and_its_interfaces_do_not_load_the_demo_month() -> None:
    loaded = _loaded_after(
        "import aibill, aibill.api, aibill.cli, aibill.serve, aibill.compat.gateway\n"
        "for name in aibill.__all__: getattr(aibill, name)"
    )
    assert {"aibill.service.billing", "aibill.cli.app", "aibill.client"} <= loaded
    assert "aibill.demo_data" not in loaded
