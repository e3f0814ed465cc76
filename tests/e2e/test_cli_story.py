"""An operator's story with the real ``aibill`` command, in subprocesses: fill a
database with the demo month, read a report, export, top up, verify. Once on a
local SQLite file, once against a running ``aibill serve`` on PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PostgresServer, need_pg
from tests.e2e.test_serve import clean_env

pytestmark = pytest.mark.slow

RECORDS = "400"


def aibill(
    cwd: Path, *args: str, code: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "aibill", *args],
        cwd=cwd,
        env=env or clean_env(COLUMNS="160"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == code, (
        f"aibill {' '.join(args)} exited {done.returncode}, not {code}\n"
        f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
    )
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def story(run: Any, tmp_path: Path) -> None:
    """What an operator does once the demo month is there (``run`` adds the
    connection options)."""
    mandates = as_json(run("mandate", "list", "--json"))
    assert {m["billing_model"] for m in mandates} == {"unlimited", "prepay_mandate", "prepay_user"}
    pool = next(m["id"] for m in mandates if m["billing_model"] == "prepay_mandate")

    table = run("report", pool, "--by", "provider").stdout
    assert "total:" in table and "calls" in table
    report = as_json(run("report", pool, "--by", "provider", "--json"))
    assert len(report) >= 2
    billed = sum(D(r["amount"]) for r in report)

    out = tmp_path / f"{pool}.csv"
    run("export", pool, "history", "-o", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    usage = [r for r in rows if r["reason"] == "usage"]
    assert sum(D(r["amount"]) for r in usage) == billed

    before = D(as_json(run("balance", pool, "--json"))["balance"])
    run("credit", pool, "250", "--reason", "payment", "-k", "story-top-up")
    run("credit", pool, "250", "--reason", "payment", "-k", "story-top-up")  # a retry
    after = D(as_json(run("balance", pool, "--json"))["balance"])
    assert after - before == D("250")

    assert run("verify").stdout.strip() == "ledger is sound"


def test_the_operator_story_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "ops.db"

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        return aibill(tmp_path, "--db", str(db), *args, code=code)

    made = run("demo", "--records", RECORDS)
    assert "3 mandates" in made.stdout
    again = run("demo", "--records", RECORDS)
    assert "already" in again.stdout
    story(run, tmp_path)


def test_the_operator_story_against_a_server(
    tmp_path: Path, launch: Any, pg_server: PostgresServer
) -> None:
    need_pg(pg_server)
    url = pg_server.create()
    try:
        aibill(tmp_path, "--db", url, "demo", "--records", RECORDS)
        # The demo made a system admin, so the server mints no bootstrap key:
        # the operator makes one, as the demo's last line says.
        created = aibill(
            tmp_path, "--db", url, "key", "create", "--user", "platform.ops",
            "--scope", "billing:read", "--scope", "billing:admin", "--json",
        )  # fmt: skip
        key = as_json(created)["secret"]
        served = launch(["--db", url, "--port", "0", "--workers", "1"])
        base = served.wait_ready()
        assert served.bootstrap_key() is None

        def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
            return aibill(tmp_path, *args, code=code, env=clean_env(
                AIBILL_URL=base, AIBILL_KEY=key, COLUMNS="160"
            ))  # fmt: skip

        story(run, tmp_path)
        # The server's answers are the ledger's: the same balance read locally.
        local = as_json(aibill(tmp_path, "--db", url, "balance", "acme", "--json"))
        remote = as_json(run("balance", "acme", "--json"))
        assert local == remote
        assert served.stop() == 0
    finally:
        pg_server.drop(url)
