"""End to end: a real ``aibill serve`` process, on SQLite and on PostgreSQL.

Each test starts ``python -m aibill serve`` on a free port against a fresh
database, reads the bootstrap key it prints, waits for ``/readyz`` and then
talks to it over HTTP the way the README's curl example does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aibill.settings import Settings, SettingsError, load_settings

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
KEY_LINE = re.compile(r"export AIBILL_KEY=(\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any AIBILL_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBILL_")}
    env.update(extra)
    return env


class Served:
    """One ``python -m aibill serve`` process; its stdout and stderr go to files."""

    def __init__(
        self, workdir: Path, args: list[str], env: dict[str, str] | None = None, tag: str = "1"
    ) -> None:
        self.stdout_path = workdir / f"serve-{tag}.out"
        self.stderr_path = workdir / f"serve-{tag}.err"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aibill", "serve", *args],
                cwd=workdir,
                env=env if env is not None else clean_env(),
                stdout=out,
                stderr=err,
            )
        self.base_url = ""

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_ready(self) -> str:
        """Wait for the "listening on" line and a ready /readyz; returns the base URL."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.base_url:
            match = re.search(r"aibill listening on (http://\S+)", self.stdout)
            if match:
                self.base_url = match.group(1)
                break
            self._alive_before(deadline)
            time.sleep(0.05)
        while True:
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return self.base_url
            except httpx.HTTPError:
                pass
            self._alive_before(deadline)
            time.sleep(0.05)

    def _alive_before(self, deadline: float) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"aibill serve exited with {self.proc.returncode}:\n{self.stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"aibill serve not ready after {START_TIMEOUT_S}s:\n{self.stderr}")

    def bootstrap_key(self) -> str | None:
        match = KEY_LINE.search(self.stdout)
        return match.group(1) if match else None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    """Start servers in ``tmp_path``; any still running at the end are killed."""
    started: list[Served] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Served:
        served = Served(tmp_path, args, env, tag=str(len(started) + 1))
        started.append(served)
        return served

    yield start
    for served in started:
        served.kill()


def headers(key: str | None, idem: str | None = None) -> dict[str, str]:
    h = {}
    if key:
        h["Authorization"] = f"Bearer {key}"
    if idem:
        h["Idempotency-Key"] = idem
    return h


def problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def readme_flow(api: httpx.Client, key: str) -> str:
    """The README's curl example, checked step by step; returns the hold's id."""
    r = api.post(
        "/v1/mandates",
        json={"id": "acme", "billing_model": "prepay_mandate", "currency": "CHF"},
        headers=headers(key),
    )
    assert r.status_code == 201, r.text
    assert r.json()["currency"] == "CHF"
    r = api.post("/v1/users", json={"id": "alice"}, headers=headers(key))
    assert r.status_code == 201 and r.json() == {"id": "alice"}
    r = api.post("/v1/mandates/acme/members", json={"user": "alice"}, headers=headers(key))
    assert r.status_code == 201 and r.json()["role"] == "member"

    r = api.post(
        "/v1/mandates/acme/credits",
        json={"amount": "100.00", "reason": "payment"},
        headers=headers(key, "pay-2026-001"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["amount"] == "100.000000"
    assert r.headers["Idempotent-Replayed"] == "false"

    hold_body = {"amount": "0.50", "user": "alice"}
    r = api.post("/v1/mandates/acme/holds", json=hold_body, headers=headers(key, "call-42"))
    assert r.status_code == 201, r.text
    hold = r.json()
    assert hold["amount"] == "0.500000" and hold["id"].startswith("acme:hold_")
    assert r.headers["Idempotent-Replayed"] == "false"

    # A retry of the same request replays the first answer.
    r = api.post("/v1/mandates/acme/holds", json=hold_body, headers=headers(key, "call-42"))
    assert r.status_code == 201, r.text
    assert r.json()["id"] == hold["id"]
    assert r.headers["Idempotent-Replayed"] == "true"
    # The same key with another body is a conflict.
    r = api.post(
        "/v1/mandates/acme/holds",
        json={"amount": "0.60", "user": "alice"},
        headers=headers(key, "call-42"),
    )
    problem(r, 409, "idempotency_conflict")
    # No key, no answer.
    problem(api.get("/v1/mandates/acme/balance"), 401)
    problem(api.get("/v1/mandates/acme/balance", headers=headers("aibill-admin_not_a_key")), 401)
    # More than is available.
    r = api.post(
        "/v1/mandates/acme/holds",
        json={"amount": "1000", "user": "alice"},
        headers=headers(key, "call-big"),
    )
    problem(r, 402, "insufficient_balance")

    r = api.get("/v1/mandates/acme/balance", headers=headers(key))
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("balance", "available", "pending")} == {
        "balance": "100.000000",
        "available": "99.500000",
        "pending": "0.500000",
    }

    r = api.post(
        f"/v1/holds/{hold['id']}/capture",
        json={"amount": "0.31"},
        headers=headers(key, "call-42-capture"),
    )
    assert r.status_code == 200, r.text
    entry = r.json()
    assert entry["amount"] == "0.310000" and entry["balance_after"] == "99.690000"
    assert entry["hold_id"] == hold["id"] and entry["kind"] == "debit"

    r = api.get("/v1/mandates/acme/balance", headers=headers(key))
    assert {k: r.json()[k] for k in ("balance", "available", "pending")} == {
        "balance": "99.690000",
        "available": "99.690000",
        "pending": "0.000000",
    }
    r = api.get("/v1/mandates/acme/verify", headers=headers(key))
    assert r.status_code == 200 and r.json() == []
    return str(hold["id"])


@pytest.mark.slow
def test_serve_end_to_end(launch: Any, db_url: str) -> None:
    port = free_port()
    first = launch(["--db", db_url, "--port", str(port)])
    url = first.wait_ready()
    assert url == f"http://127.0.0.1:{port}"
    key = first.bootstrap_key()
    assert key and key.startswith("aibill-admin_"), first.stdout
    assert first.stdout.count(key) == 1  # shown once
    assert "curl" in first.stdout
    if db_url.startswith("postgresql"):  # several worker processes share the port
        assert "worker processes;" in first.stdout
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}

    with httpx.Client(base_url=url, timeout=10) as api:
        readme_flow(api, key)
    assert first.stop(signal.SIGTERM) == 0, first.stderr

    # A restart keeps the ledger and the key, and prints no new key.
    second = launch(["--db", db_url, "--port", str(port)])
    second.wait_ready()
    assert second.bootstrap_key() is None, second.stdout
    assert "AIBILL_KEY" not in second.stdout
    with httpx.Client(base_url=url, timeout=10) as api:
        r = api.get("/v1/mandates/acme/balance", headers=headers(key))
        assert r.status_code == 200 and r.json()["balance"] == "99.690000"
    assert second.stop(signal.SIGINT) == 0, second.stderr


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_curl_block() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if "export AIBILL_KEY=" in b and "curl" in b]
    assert len(found) == 1, "the README's quick start has one curl example"
    return found[0]


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("bash") and shutil.which("curl") and shutil.which("python3")),
    reason="needs bash, curl and python3",
)
def test_readme_curl_example_runs_as_written(launch: Any, tmp_path: Path) -> None:
    """The README's curl block, run by bash as written (key and port filled in), twice:
    the second run replays every write and the balance is unchanged."""
    port = free_port()
    served = launch(["--db", f"sqlite:///{tmp_path / 'readme.db'}", "--port", str(port)])
    url = served.wait_ready()
    key = served.bootstrap_key()
    assert key
    script = readme_curl_block()
    script = re.sub(r"^export AIBILL_KEY=.*$", f"export AIBILL_KEY={key}", script, flags=re.M)
    script = script.replace("API=http://127.0.0.1:8000", f"API={url}")
    for run in range(2):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 6, done.stdout
        capture, balance = json.loads(lines[-2]), json.loads(lines[-1])
        assert capture["amount"] == "0.310000" and capture["replayed"] is (run == 1)
        assert (balance["balance"], balance["available"], balance["pending"]) == (
            "99.690000",
            "99.690000",
            "0.000000",
        )
    assert served.stop() == 0, served.stderr


def test_quick_start_prints_where_it_listens(launch: Any, tmp_path: Path) -> None:
    """What ``./scripts/run`` runs: ``aibill serve`` with no flags, SQLite at ./aibill.db."""
    port = free_port()
    served = launch([], clean_env(AIBILL_PORT=str(port)))
    served.wait_ready()
    assert f"aibill listening on http://127.0.0.1:{port}" in served.stdout
    assert "sqlite:///aibill.db" in served.stdout
    assert (tmp_path / "aibill.db").exists()
    assert served.bootstrap_key()
    assert served.stop() == 0, served.stderr


def test_sqlite_runs_one_worker_and_logs_json(launch: Any, tmp_path: Path) -> None:
    port = free_port()
    served = launch(
        ["--db", f"sqlite:///{tmp_path / 'w.db'}", "--port", str(port), "--workers", "3"],
        clean_env(AIBILL_LOG_FORMAT="json"),
    )
    served.wait_ready()
    assert "(1 worker process" in served.stdout
    assert served.stop() == 0, served.stderr
    lines = served.stderr.splitlines()
    assert "SQLite has a single writer" in lines[0]
    logs = [json.loads(line) for line in lines[1:]]
    assert {"time", "level", "logger", "message"} <= set(logs[0])
    assert any(log["logger"] == "uvicorn.access" and "/readyz" in log["message"] for log in logs)


def test_a_taken_port_exits_5_names_the_way_out_and_keeps_the_bootstrap_key(
    launch: Any, tmp_path: Path
) -> None:
    """Exit 5 is the service's own "could not start" (3 is a billing refusal), and
    the one line names the option and the variable that change the port."""
    db = f"sqlite:///{tmp_path / 'taken.db'}"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        refused = launch(["--db", db, "--port", str(port)])
        assert refused.proc.wait(timeout=START_TIMEOUT_S) == 5
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in refused.stderr
    assert "--port" in refused.stderr and "AIBILL_PORT" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert refused.bootstrap_key() is None
    # Nothing was created, so the next start still shows the first key.
    served = launch(["--db", db, "--port", str(free_port())])
    served.wait_ready()
    assert served.bootstrap_key()
    assert served.stop() == 0, served.stderr


def test_bad_settings_exit_2_with_a_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aibill", "serve", "--db", "mysql://x/y"],
        check=False,
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SQLite or PostgreSQL" in done.stderr and not done.stdout


# ----------------------------------------------------------------- settings


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AIBILL_"):
            monkeypatch.delenv(name)
    s = load_settings()
    assert (s.database_url, s.host, s.port, s.log_format, s.sqlite_synchronous) == (
        "sqlite:///aibill.db",
        "127.0.0.1",
        8000,
        "text",
        "FULL",
    )
    assert s.effective_workers == 1
    pg = load_settings(database_url="postgresql+psycopg://u:secret@db/aibill")
    assert 2 <= pg.effective_workers <= 4
    assert "secret" not in pg.display_url
    assert load_settings(database_url="sqlite:///x.db", workers=4).effective_workers == 1


def test_settings_precedence_flags_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("AIBILL_"):
            monkeypatch.delenv(name)
    config = tmp_path / "aibill.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nlog_format = "json"\nworkers = 3\n')
    monkeypatch.setenv("AIBILL_CONFIG", str(config))
    monkeypatch.setenv("AIBILL_PORT", "9002")
    s = load_settings()
    assert (s.port, s.host, s.log_format, s.workers) == (9002, "0.0.0.0", "json", 3)
    assert load_settings(port=9003).port == 9003
    monkeypatch.setenv("AIBILL_SQLITE_SYNCHRONOUS", "normal")
    assert Settings().sqlite_synchronous == "NORMAL"

    config.write_text("prot = 9001\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings()
    monkeypatch.setenv("AIBILL_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="no such file"):
        load_settings()
    monkeypatch.delenv("AIBILL_CONFIG")
    monkeypatch.setenv("AIBILL_PORT", "eighty")
    with pytest.raises(SettingsError, match="port"):
        load_settings()
