"""docs/architecture.md names modules and functions; each one it names exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
PACKAGES = "|".join(("domain", "store", "service", "api", "web", "cli", "client", "compat", "http"))
FILE = re.compile(rf"`((?:{PACKAGES})/[a-z_]+\.py)`")
DOTTED = re.compile(rf"`(?:aibill\.)?((?:{PACKAGES})\.[A-Za-z_.]+)`")


def test_every_file_it_names_exists() -> None:
    named = set(FILE.findall(DOC))
    named |= set(re.findall(r"\(in `service/rates\.py`, `([a-z_]+\.py)`", DOC))
    assert len(named) > 20
    missing = [path for path in sorted(named) if not (ROOT / "src" / "aibill" / path).exists()]
    assert missing == []


def test_every_dotted_name_it_names_exists() -> None:
    """``service.money.MoneyPath.hold``, ``domain.rules.fits``, ... resolve to something."""
    names = set(DOTTED.findall(DOC))
    assert len(names) > 30
    missing = [name for name in sorted(names) if not _resolves(name)]
    assert missing == []


def _resolves(dotted: str) -> bool:
    parts = dotted.rstrip(".").split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module("aibill." + ".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False
