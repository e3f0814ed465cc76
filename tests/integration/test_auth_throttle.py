"""Throttling failed authentication, over HTTP, on SQLite and PostgreSQL: the
API's bearer keys, the dashboard's sign-in and its session cookies, the
client's answer to a 429, the settings, and a real ``aibill serve``.

Each in-process app gets a throttle on a clock the test moves, and each
client address is a TestClient of its own (``client=``), as the ASGI scope
gives it to the app.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from aibill import Billing, Client
from aibill.api import create_app
from aibill.domain import errors as e
from aibill.domain.throttle import NS_PER_S, FailureBudget
from aibill.http.throttle import AuthThrottle
from aibill.settings import load_settings
from tests.e2e.test_serve import Served, clean_env, free_port

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ATTACKER = ("203.0.113.66", 40000)
GATEWAY = ("198.51.100.7", 40000)
BALANCE = "/v1/mandates/acme/balance"


class FakeClock:
    """Monotonic nanoseconds that move only when told to."""

    def __init__(self) -> None:
        self.now_ns = 10_000 * NS_PER_S

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: int) -> None:
        self.now_ns += seconds * NS_PER_S


@dataclass
class Site:
    billing: Billing
    clock: FakeClock
    app: FastAPI
    key: str  # alice's key in acme (an admin there, every scope)

    def at(self, address: tuple[str, int]) -> TestClient:
        return TestClient(self.app, client=address)

    def statements(self) -> list[str]:
        """The SQL the app runs from now on (appended as it runs)."""
        seen: list[str] = []

        def record(*args: Any) -> None:
            seen.append(str(args[2]))

        event.listen(self.billing.engine, "before_cursor_execute", record)
        return seen


def wrong(key: str) -> str:
    """``key`` with another secret: the same key id."""
    return key[:-64] + ("0" if key[-1] != "0" else "1") * 64


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_site(billing: Billing, budget: FailureBudget) -> Site:
    billing.create_mandate("acme", currency="CHF")
    billing.add_user("alice")
    billing.add_member("acme", "alice", role="admin")
    scopes = ["billing:use", "billing:read", "billing:admin"]
    key = billing.keys.create_key(user="alice", mandate="acme", scopes=scopes).secret
    clock = FakeClock()
    app = create_app(billing, sweep_interval_s=0, auth_throttle=AuthThrottle(budget, clock=clock))
    return Site(billing, clock, app, key)


@pytest.fixture
def site(billing: Billing) -> Site:
    return make_site(billing, FailureBudget(burst=5, per_minute=60, max_lockout_s=60))


def assert_throttled(response: Any, *, at_most_s: int = 60) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "too_many_failed_attempts"
    assert body["status"] == 429 and "try again in" in body["detail"]
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= at_most_s
    assert body["details"]["retry_after_s"] == wait
    return wait


# ------------------------------------------------------------------ the API


def test_wrong_secrets_from_one_address_get_429_before_any_database_work(site: Site) -> None:
    attacker, gateway = site.at(ATTACKER), site.at(GATEWAY)
    for n in range(5):  # guesses at five key ids: only the address's budget is spent
        guess = f"aibill_acme_{n:012x}_" + "f" * 64
        assert attacker.get(BALANCE, headers=bearer(guess)).status_code == 401
    sql = site.statements()
    wait = assert_throttled(attacker.get(BALANCE, headers=bearer("aibill_acme_" + "a" * 77)))
    assert wait == 1
    assert_throttled(attacker.get(BALANCE, headers=bearer(site.key)))  # never seen here: waits too
    assert sql == []  # refused before the database was asked anything
    assert gateway.get(BALANCE, headers=bearer(site.key)).status_code == 200

    site.clock.advance(wait)
    assert attacker.get(BALANCE, headers=bearer(site.key)).status_code == 200


def test_a_thousand_wrong_secrets_get_twenty_401s_with_the_default_budget(
    billing: Billing,
) -> None:
    site = make_site(billing, FailureBudget())
    attacker = site.at(ATTACKER)
    statuses = [
        attacker.get(BALANCE, headers=bearer(f"aibill_acme_{n:012x}_" + "f" * 64)).status_code
        for n in range(1_000)
    ]
    assert statuses.count(401) == 20
    assert statuses.count(429) == 980
    # Only failures count: the valid key, from another address, is never throttled.
    gateway = site.at(GATEWAY)
    assert all(gateway.get(BALANCE, headers=bearer(site.key)).status_code == 200 for _ in range(50))


def test_successful_requests_never_spend_the_budget(site: Site) -> None:
    gateway = site.at(GATEWAY)
    for _ in range(100):
        assert gateway.get(BALANCE, headers=bearer(site.key)).status_code == 200
    for _ in range(5):  # the whole budget is still there
        assert gateway.get(BALANCE, headers=bearer(wrong(site.key))).status_code == 401
    assert_throttled(gateway.get(BALANCE, headers=bearer(wrong(site.key))))


def test_hammering_one_key_id_from_many_addresses_throttles_that_key_id_only(site: Site) -> None:
    gateway = site.at(GATEWAY)
    assert gateway.get(BALANCE, headers=bearer(site.key)).status_code == 200  # in use before
    forged = wrong(site.key)
    other_key_id = site.billing.keys.create_key(user="alice", mandate="acme").secret

    def attempt(n: int) -> Any:
        return site.at((f"10.1.{n // 250}.{n % 250}", 1)).get(BALANCE, headers=bearer(forged))

    with ThreadPoolExecutor(8) as pool:  # real threads: failures charged concurrently
        answers = list(pool.map(attempt, range(300)))
    statuses = [r.status_code for r in answers]
    assert 5 <= statuses.count(401) <= 5 + 8  # the burst, plus those already let in
    waits = [assert_throttled(r) for r in answers if r.status_code == 429]
    assert max(waits) <= 60  # bounded, however many failed at once

    fresh = site.at(("10.9.9.9", 1))
    assert fresh.get(BALANCE, headers=bearer(forged)).status_code == 429  # the key id waits
    assert (
        fresh.get(BALANCE, headers=bearer(wrong(other_key_id))).status_code == 401
    )  # others don't
    # The real holder, seen to succeed before, is not locked out by the attack.
    assert gateway.get(BALANCE, headers=bearer(site.key)).status_code == 200
    assert fresh.get(BALANCE, headers=bearer(site.key)).status_code == 200

    # A worker that never saw the key succeed makes it wait, at most the bound.
    billing = site.billing
    clock = FakeClock()
    throttle = AuthThrottle(site.app.state.auth_throttle.budget, clock=clock)
    app = create_app(billing, sweep_interval_s=0, auth_throttle=throttle)
    for n in range(20):
        TestClient(app, client=(f"10.2.0.{n}", 1)).get(BALANCE, headers=bearer(forged))
    holder = TestClient(app, client=GATEWAY)
    wait = assert_throttled(holder.get(BALANCE, headers=bearer(site.key)))
    clock.advance(wait)
    assert holder.get(BALANCE, headers=bearer(site.key)).status_code == 200


# ------------------------------------------------------------ the dashboard


def post_sign_in(browser: TestClient, key: str) -> Any:
    form = browser.get("/sign-in")
    token = CSRF.search(form.text)
    assert token, form.text
    return browser.post(
        "/sign-in", data={"csrf": token.group(1), "api_key": key}, follow_redirects=False
    )


def test_sign_in_with_wrong_keys_is_throttled_per_address(site: Site) -> None:
    attacker = site.at(ATTACKER)
    for n in range(5):
        assert post_sign_in(attacker, f"aibill_acme_{n:012x}_" + "f" * 64).status_code == 401
    sql = site.statements()
    refused = post_sign_in(attacker, "not a key at all")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert "Too many failed attempts" in refused.text
    assert "text/html" in refused.headers["content-type"]
    assert sql == []
    assert post_sign_in(site.at(GATEWAY), site.key).status_code == 303

    site.clock.advance(1)
    assert post_sign_in(attacker, site.key).status_code == 303


def test_forged_session_cookies_are_throttled_but_a_live_session_keeps_working(
    site: Site,
) -> None:
    browser = site.at(ATTACKER)  # signed in before, behind the same address as an attacker
    assert post_sign_in(browser, site.key).status_code == 303
    assert browser.get("/", follow_redirects=False).status_code == 200
    attacker = site.at(ATTACKER)
    forged = "p." + "ab" * 8 + "." + "cd" * 32
    for _ in range(5):
        attacker.cookies.set("aibill_session", forged)
        assert attacker.get("/", follow_redirects=False).status_code == 303  # to sign-in
    attacker.cookies.set("aibill_session", forged)
    sql = site.statements()
    refused = attacker.get("/", follow_redirects=False)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert sql == []
    assert browser.get("/", follow_redirects=False).status_code == 200
    site.clock.advance(1)
    assert attacker.get("/", follow_redirects=False).status_code == 303


# ---------------------------------------------------------------- settings


def test_the_settings_size_the_budget_and_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIBILL_CONFIG", raising=False)
    defaults = load_settings().auth_budget
    assert defaults == FailureBudget(burst=20, per_minute=60, max_lockout_s=60, enabled=True)
    monkeypatch.setenv("AIBILL_AUTH_FAILURE_BURST", "7")
    monkeypatch.setenv("AIBILL_AUTH_FAILURES_PER_MINUTE", "600")
    monkeypatch.setenv("AIBILL_AUTH_THROTTLE", "false")
    settings = load_settings()
    assert settings.auth_budget == FailureBudget(burst=7, per_minute=600, enabled=False)
    assert settings.to_env()["AIBILL_AUTH_THROTTLE"] == "false"
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert load_settings().auth_budget == settings.auth_budget


def test_an_off_switch_means_only_401s(billing: Billing) -> None:
    site = make_site(billing, FailureBudget(burst=1, enabled=False))
    attacker = site.at(ATTACKER)
    assert all(
        attacker.get(BALANCE, headers=bearer(wrong(site.key))).status_code == 401 for _ in range(30)
    )


# ------------------------------------------------------------- a real server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        s.kill()


def test_a_real_server_throttles_per_worker_by_forwarded_address(
    served: list[Served], tmp_path: Path, db_url: str
) -> None:
    """uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 (a local proxy), so
    each header value is a client address; on PostgreSQL there are two
    worker processes, each with its own budget."""
    workers = 1 if db_url.startswith("sqlite") else 2
    env = clean_env(AIBILL_AUTH_FAILURE_BURST="3", AIBILL_WORKERS=str(workers))
    server = Served(tmp_path, ["--db", db_url, "--port", str(free_port())], env)
    served.append(server)
    url = server.wait_ready()
    key = server.bootstrap_key()
    assert key
    with httpx.Client(base_url=url, timeout=10) as http:
        attacker = {"X-Forwarded-For": "203.0.113.9"}
        statuses = [
            http.get(
                "/v1/mandates", headers={**attacker, **bearer(f"aibill-admin_{n:012x}_" + "f" * 64)}
            ).status_code
            for n in range(60)
        ]
        assert 3 <= statuses.count(401) <= 3 * workers
        assert statuses.count(429) == 60 - statuses.count(401)
        refused = http.get("/v1/mandates", headers={**attacker, **bearer("nope")})
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
        # The valid key, from another address, keeps working (only failures count).
        gateway = {"X-Forwarded-For": "198.51.100.20"}
        for _ in range(20):
            assert http.get("/v1/mandates", headers={**gateway, **bearer(key)}).status_code == 200

    # The client raises a 429 at once: one request per call, no retry, let
    # alone a tight loop (a call may reach a worker whose budget is intact).
    sent: list[httpx.Request] = []
    with httpx.Client(headers=attacker, event_hooks={"request": [sent.append]}) as http:
        client = Client(url, wrong(key), http=http, retries=3, backoff_s=0)
        for calls in range(1, 3 * workers + 2):
            with pytest.raises((e.InvalidApiKey, e.TooManyFailedAttempts)) as raised:
                client.mandates()
            assert len(sent) == calls
            if isinstance(raised.value, e.TooManyFailedAttempts):
                break
    assert isinstance(raised.value, e.TooManyFailedAttempts)
    assert 1 <= raised.value.retry_after_s <= 60
    assert raised.value.code == "too_many_failed_attempts"
