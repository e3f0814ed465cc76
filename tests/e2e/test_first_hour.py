"""A new user's first hour, as the README tells it: ``./scripts/run`` commands in
a shell, and every command the program itself suggests, run as it is written."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_serve import clean_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def shell(line: str, cwd: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    """``line`` in a shell, as a user types it at the repository's root."""
    done = subprocess.run(
        line,
        shell=True,
        cwd=cwd,
        env=clean_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == code, (
        f"{line!r} exited {done.returncode}, not {code}\n"
        f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
    )
    return done


def test_the_demos_hints_run_as_written(tmp_path: Path) -> None:
    """After ``./scripts/run --db ... demo`` the "Next:" commands it prints work when
    pasted into the same shell (they name ``./scripts/run`` and the same file)."""
    db = tmp_path / "demo.db"
    done = shell(f"./scripts/run --db {db} demo --records 60", ROOT)
    lines = done.stdout.splitlines()
    hints = next(line for line in lines if line.startswith("Next: "))
    suggested = [part.strip() for part in hints.removeprefix("Next: ").split("|")]
    key_line = next(line for line in lines if line.startswith("A key for the dashboard"))
    suggested.append(key_line.split(": ", 1)[1])
    for line in suggested:
        assert line.startswith("./scripts/run --db ") and str(db) in line, line
        shell(line, ROOT)


def test_the_demo_refuses_a_ledger_with_the_readmes_mandate(tmp_path: Path) -> None:
    """The README's walk-through makes ``acme``; the demo then refuses in one line
    that says how to run it instead (exit 2), and that command works."""
    db = tmp_path / "mine.db"
    shell(f"./scripts/run --db {db} db upgrade", ROOT)
    shell(f"./scripts/run --db {db} mandate create acme --currency CHF", ROOT)
    refused = shell(f"./scripts/run --db {db} demo --records 60", ROOT, code=2)
    message = " ".join(refused.stderr.split())
    assert "acme" in message and "Traceback" not in refused.stderr
    suggestion = re.search(r"(\./scripts/run --db \S+ demo)", message)
    assert suggestion is not None, message
    # Run as written, at the repository's root, unless that would touch a file
    # of the user's own.
    target = ROOT / shlex.split(suggestion.group(1))[2]
    if any(target.with_name(target.name + end).exists() for end in ("", "-wal", "-shm")):
        pytest.skip(f"{target} exists; not running the suggestion over it")
    try:
        filled = shell(f"{suggestion.group(1)} --records 60", ROOT)
        assert "mandates created" in filled.stdout
    finally:
        for end in ("", "-wal", "-shm"):
            target.with_name(target.name + end).unlink(missing_ok=True)


@pytest.mark.parametrize("command", ["balance acme", "mandate list", "verify"])
def test_a_missing_ledger_file_is_one_line_and_creates_nothing(
    tmp_path: Path, command: str
) -> None:
    typo = tmp_path / "aibil.db"
    done = shell(f"./scripts/run --db {typo} {command}", ROOT, code=2)
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert f"No ledger at {typo}" in done.stderr and "db upgrade" in done.stderr
    assert not typo.exists()
    nowhere = tmp_path / "no" / "such" / "dir" / "x.db"
    done = shell(f"./scripts/run --db {nowhere} {command}", ROOT, code=2)
    assert done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_only_db_upgrade_and_demo_create_a_ledger_file(tmp_path: Path) -> None:
    made = tmp_path / "new.db"
    shell(f"./scripts/run --db {made} db upgrade", ROOT)
    assert made.exists()
    shell(f"./scripts/run --db {made} mandate list", ROOT)


def test_member_add_on_a_member_grants_the_role_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    shell(f"./scripts/run --db {db} db upgrade", ROOT)
    shell(f"./scripts/run --db {db} mandate create acme --currency CHF", ROOT)
    shell(f"./scripts/run --db {db} user add alice", ROOT)
    first = shell(f"./scripts/run --db {db} member add acme alice", ROOT)
    assert "with roles: member" in first.stdout
    again = shell(f"./scripts/run --db {db} member add acme alice --role admin", ROOT)
    assert "with roles: admin, member" in again.stdout
    listed = shell(f"./scripts/run --db {db} member list acme --json", ROOT)
    assert '"admin"' in listed.stdout
