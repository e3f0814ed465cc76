"""``aibill serve`` when things go wrong around it: a database it cannot reach
at start (exit 2, one line, no traceback), and a parent killed with SIGKILL
(its workers exit within seconds, so a restart can bind the port)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_serve import START_TIMEOUT_S, clean_env, free_port
from tests.integration.test_store_timeouts import BlackHole

WORKER_EXIT_S = 5


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    return free_port()


def start_against(
    url: str, tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "aibill", "serve", "--db", url, "--port", str(free_port())],
        check=False,
        cwd=tmp_path,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    return done, time.monotonic() - started


def test_an_unreachable_database_at_start_exits_2_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://aibill:s3cret@127.0.0.1:{closed_port()}/aibill"
    refused, baseline_s = start_against(url, tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("aibill serve: error [store_unavailable]: cannot use the database")
    assert "Traceback" not in refused.stderr and "s3cret" not in refused.stderr

    # A host that accepts and never answers is given up after the connect
    # timeout (psycopg's default would wait 130 s), not once per retry.
    hole = BlackHole()
    try:
        hung, elapsed = start_against(hole.url, tmp_path, AIBILL_DB_CONNECT_TIMEOUT_S="2")
    finally:
        hole.close()
    assert hung.returncode == 2, hung.stderr
    assert len(hung.stderr.splitlines()) == 1, hung.stderr
    assert "Traceback" not in hung.stderr
    # Starting Python and importing aibill took ``baseline_s`` the first time.
    assert elapsed < baseline_s + 2 + 4, (elapsed, baseline_s)


def children(pid: int) -> list[int]:
    """uvicorn's worker processes under ``pid`` (started by multiprocessing)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(child))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_exit_when_their_parent_is_killed(
    launch: Any, pg_server: Any, tmp_path: Path
) -> None:
    from tests.conftest import need_pg

    need_pg(pg_server)
    url = pg_server.create()
    port = free_port()
    first = launch(["--db", url, "--port", str(port), "--workers", "2"])
    workers: list[int] = []
    try:
        first.wait_ready()
        deadline = time.monotonic() + 10
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = children(first.proc.pid)
            time.sleep(0.1)
        assert len(workers) == 2, workers
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        deadline = time.monotonic() + WORKER_EXIT_S
        while any(running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(running(w) for w in workers), "workers outlived their parent"
        # The port is free again: a restart binds it and serves.
        second = launch(["--db", url, "--port", str(port), "--workers", "2"])
        second.wait_ready()
        assert second.stop() == 0, second.stderr
    finally:
        for worker in workers:
            if running(worker):
                os.kill(worker, signal.SIGKILL)
        pg_server.drop(url)


def test_a_single_process_uvicorn_is_not_tied_to_its_parent(tmp_path: Path) -> None:
    """Outside uvicorn's supervisor (``uvicorn --factory`` with one process, run
    by another process manager) nothing is arranged: the manager watches it."""
    probe = (
        "import signal, aibill.serve as s\n"
        "called = []\n"
        "s._pdeathsig = lambda sig: called.append(sig) or True\n"
        "s.die_with_parent()\n"
        "print(called)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
