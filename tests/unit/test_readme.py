"""The README's Python examples run as written, in order, on a fresh ledger."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict[str, object] = {}
    for block in blocks:
        code = block.replace("sqlite:///aibill.db", f"sqlite:///{tmp_path / 'readme.db'}")
        exec(compile(code, str(README), "exec"), namespace)
    billing = namespace["billing"]
    assert billing.verify() == []  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "permission_denied" in out and "aibill_acme_" in out
