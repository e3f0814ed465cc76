"""The README's shell examples, run as a new user runs them: ``./scripts/run``
serves in one terminal, and the walk-through with curl and the command-line
block run in another, in a bash shell. Two things are filled in, as the README
tells the user to: the key the server printed, and the server's address (a free
port here instead of 8000)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_serve import KEY_LINE, clean_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
START_TIMEOUT_S = 120


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A place that looks like the checkout to ``./scripts/run`` (its scripts and
    its venv), so that ``./aibill.db`` and exported files land here."""
    for name in ("scripts", ".venv", "pyproject.toml"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


@pytest.fixture
def served(checkout: Path) -> Iterator[tuple[str, str]]:
    """``./scripts/run serve`` on a free port; yields (base URL, printed key)."""
    out = (checkout / "serve.out").open("w")
    proc = subprocess.Popen(
        ["./scripts/run", "serve", "--port", "0"],
        cwd=checkout,
        env=clean_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            text = (checkout / "serve.out").read_text()
            url = re.search(r"aibill listening on (http://\S+)", text)
            key = KEY_LINE.search(text)
            if url and key:
                yield url.group(1), key.group(1)
                break
            assert proc.poll() is None, text
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        out.close()


def run_block(block: str, cwd: Path, url: str, key: str) -> str:
    script = block.replace("aibill-admin_...", key).replace("http://127.0.0.1:8000", url)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=clean_env(COLUMNS="200", AIBILL_KEY=key),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{script}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done.stdout


def test_the_readmes_shell_examples_work_as_written(
    checkout: Path, served: tuple[str, str]
) -> None:
    url, key = served
    blocks = sh_blocks()
    walk = next(b for b in blocks if "curl" in b)
    cli = next(b for b in blocks if b.startswith("./scripts/run mandate create"))
    out = run_block(walk, checkout, url, key)
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    balance = answers[-1]
    # What the README's last comment says the user sees.
    assert (balance["balance"], balance["available"]) == ("99.690000", "99.690000")
    assert not any("code" in answer for answer in answers), answers
    out = run_block(cli, checkout, url, key)
    shown = json.loads(out[out.index("{") :])
    assert shown["balance"] == "99.690000"
    assert json.loads((checkout / "acme.json").read_text())


def test_every_shell_block_is_run_or_is_the_quick_start() -> None:
    """A new shell block in the README must be added to the test above."""
    blocks = sh_blocks()
    quick = [b for b in blocks if b.startswith("./scripts/run ") and "./scripts/test" in b]
    ran = [b for b in blocks if "curl" in b or b.startswith("./scripts/run mandate create")]
    assert len(quick) == 1 and len(ran) == 2 and len(blocks) == 3, blocks
    assert shutil.which("bash")
