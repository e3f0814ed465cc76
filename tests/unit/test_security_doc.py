"""docs/security.md names, for each protection, the tests that prove it: every
test and test file it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_security_doc_names_exists() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    files = set(re.findall(r"tests/[a-z0-9_/]+\.py", doc))
    stems = {Path(f).stem for f in files}
    named = set(re.findall(r"\b(test_[a-z0-9_]+)\b", doc)) - stems
    assert len(named) >= 30 and len(files) >= 10
    for path in files:
        assert (ROOT / path).is_file(), path
    defined: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^\s*(?:async )?def (test_[a-z0-9_]+)", path.read_text(), re.M))
    assert sorted(named - defined) == []
