"""Trusting a verified API key for a moment (``key_cache_s``), on SQLite and
PostgreSQL, in the library and over HTTP: a revocation or a removed system
admin in this process is refused at once, a revocation by another process
within the time to live (real time, really slept), an expired key at its
expiry; the use is still recorded once a minute; 0 reads the key every time;
and bad values are refused with a clear message.

The cast: mandate ``acme`` with ``alice`` (an admin) and ``bob`` (a member);
``root`` and ``ops`` are system admins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

import aibill
from aibill import Billing, ManualClock
from aibill.api import create_app
from aibill.domain import errors as e
from aibill.domain.clock import system_clock
from aibill.domain.principal import Principal, PrincipalKind
from aibill.service.key_cache import KeyCache
from aibill.settings import SettingsError, load_settings

LONG_S = 60.0
"""A time to live no test outlasts: whatever is refused was refused by the cache's rules."""


@dataclass
class Ledger:
    billing: Billing
    keys: dict[str, str]  # user -> key string (alice, bob: acme; root: platform)
    ids: dict[str, str]  # user -> key id

    def statements(self) -> list[str]:
        """The SQL this ledger runs from now on."""
        seen: list[str] = []
        event.listen(
            self.billing.engine, "before_cursor_execute", lambda *a: seen.append(str(a[2]))
        )
        return seen


def populate(billing: Billing) -> tuple[dict[str, str], dict[str, str]]:
    billing.create_mandate("acme", currency="CHF")
    for user in ("alice", "bob", "root", "ops"):
        billing.add_user(user)
    billing.add_member("acme", "alice", role="admin")
    billing.add_member("acme", "bob")
    billing.access.add_sysadmin("root")
    billing.access.add_sysadmin("ops")
    created = {
        "alice": billing.keys.create_key(
            user="alice", mandate="acme", scopes=["billing:admin", "billing:use"]
        ),
        "bob": billing.keys.create_key(user="bob", mandate="acme", scopes=["billing:read"]),
        "root": billing.keys.create_key(user="root", mandate=None, scopes=["billing:admin"]),
    }
    return {u: c.secret for u, c in created.items()}, {u: c.key_id for u, c in created.items()}


def open_ledger(db_url: str, clock: Any, key_cache_s: float) -> Ledger:
    billing = aibill.connect(db_url, clock=clock, key_cache_s=key_cache_s)
    keys, ids = populate(billing)
    return Ledger(billing, keys, ids)


@pytest.fixture
def cached(db_url: str, clock: ManualClock) -> Iterator[Ledger]:
    """A ledger that trusts a verified key for a minute, on the test's clock."""
    ledger = open_ledger(db_url, clock, LONG_S)
    yield ledger
    ledger.billing.close()


def refused(billing: Billing, key: str) -> None:
    with pytest.raises(e.InvalidApiKey):
        billing.keys.authenticate(key)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ------------------------------------------------------------------ the library


def test_a_verified_key_is_not_read_again_within_the_time_to_live(cached: Ledger) -> None:
    billing, alice = cached.billing, cached.keys["alice"]
    first = billing.keys.authenticate(alice)
    sql = cached.statements()
    for _ in range(5):
        assert billing.keys.authenticate(alice) == first
        assert billing.keys.recall(alice) == first
    assert sql == []
    # Another secret under the same key id is not the cached key: the database refuses it.
    wrong = alice[:-64] + ("0" if alice[-1] != "0" else "1") * 64
    refused(billing, wrong)
    assert sql != []
    assert billing.keys.recall(wrong) is None


def test_zero_reads_the_key_at_every_authentication(db_url: str, clock: ManualClock) -> None:
    ledger = open_ledger(db_url, clock, 0)
    try:
        billing, alice = ledger.billing, ledger.keys["alice"]
        billing.keys.authenticate(alice)
        for n in range(1, 4):
            sql = ledger.statements()
            billing.keys.authenticate(alice)
            assert any("api_keys" in s for s in sql), n
            assert billing.keys.recall(alice) is None
        assert len(billing.keys.cache) == 0
        # And a revocation by another ledger on the same database counts at once.
        with aibill.connect(db_url, clock=clock) as other:
            other.keys.revoke_key(ledger.ids["alice"], mandate="acme")
        refused(billing, alice)
    finally:
        ledger.billing.close()


def test_a_key_revoked_in_this_process_is_refused_at_once(cached: Ledger) -> None:
    billing = cached.billing
    for user, mandate in (("alice", "acme"), ("root", None)):
        key = cached.keys[user]
        assert billing.keys.authenticate(key).key_id == cached.ids[user]
        assert billing.keys.recall(key) is not None
        billing.keys.revoke_key(cached.ids[user], mandate=mandate)
        assert billing.keys.recall(key) is None
        refused(billing, key)
    # A ledger acting for a principal shares the cache: a revocation through it counts too.
    bob = cached.keys["bob"]
    assert billing.keys.authenticate(bob).user == "bob"
    ops = billing.keys.create_key(user="ops", mandate=None, scopes=["billing:admin"]).secret
    billing.authenticate(ops).keys.revoke_key(cached.ids["bob"], mandate="acme")
    refused(billing, bob)


def test_a_revocation_racing_a_verification_is_not_undone(cached: Ledger) -> None:
    """Threads authenticate without pause while the key is revoked: once the
    revocation has returned, no thread is let in (no verification read before
    the revocation may leave the key in the cache)."""
    billing, alice = cached.billing, cached.keys["alice"]
    revoked = threading.Event()
    after: list[bool] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            was_revoked = revoked.is_set()
            try:
                billing.keys.authenticate(alice)
            except e.InvalidApiKey:
                continue
            if was_revoked:
                after.append(True)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    billing.keys.revoke_key(cached.ids["alice"], mandate="acme")
    revoked.set()
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    assert after == []
    refused(billing, alice)


def test_a_removed_system_admin_is_refused_at_once(cached: Ledger) -> None:
    billing, root = cached.billing, cached.keys["root"]
    assert billing.keys.authenticate(root).user == "root"
    alice = billing.keys.authenticate(cached.keys["alice"])
    billing.access.remove_sysadmin("root")
    refused(billing, root)
    # Only that user's platform keys were forgotten.
    assert billing.keys.recall(cached.keys["alice"]) == alice


def test_an_expired_key_is_refused_at_its_expiry_even_when_cached(
    cached: Ledger, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    billing = cached.billing
    expires = clock() + timedelta(hours=1)
    created = billing.keys.create_key(user="bob", mandate="acme", expires_at=expires)
    clock.set(expires - timedelta(microseconds=1))
    billing.keys.authenticate(created.secret)
    assert billing.keys.recall(created.secret) is not None
    clock.set(expires)
    assert billing.keys.recall(created.secret) is None
    caplog.set_level("INFO", logger="aibill.keys")
    refused(billing, created.secret)
    assert "expired" in caplog.text


def test_the_use_is_recorded_once_a_minute_while_cached(cached: Ledger, clock: ManualClock) -> None:
    billing, alice, key_id = cached.billing, cached.keys["alice"], cached.ids["alice"]
    t0 = clock()
    billing.keys.authenticate(alice)
    assert billing.keys.get_key(key_id, mandate="acme").last_used_at == t0
    clock.advance(59)
    sql = cached.statements()
    billing.keys.authenticate(alice)
    assert sql == []  # cached, and the use recorded a minute ago is recent enough
    clock.advance(1)
    assert billing.keys.recall(alice) is None  # a use is due: not answered without I/O
    principal = billing.keys.authenticate(alice)  # still cached: writes the use, reads nothing
    assert principal.key_id == key_id
    assert sql and all(s.lstrip().upper().startswith(("UPDATE", "BEGIN")) for s in sql)
    assert billing.keys.get_key(key_id, mandate="acme").last_used_at == t0 + timedelta(seconds=60)
    assert billing.keys.recall(alice) == principal


def test_a_revocation_by_another_process_counts_within_the_time_to_live(db_url: str) -> None:
    """Real time: this ledger trusts its verification for ``ttl_s``; another
    ledger on the same database (another worker process) revokes the key."""
    ttl_s = 0.3
    ledger = open_ledger(db_url, system_clock, ttl_s)
    try:
        billing, alice = ledger.billing, ledger.keys["alice"]
        with aibill.connect(db_url) as other:
            billing.keys.authenticate(alice)
            verified = time.monotonic()
            other.keys.revoke_key(ledger.ids["alice"], mandate="acme")
            if time.monotonic() - verified < ttl_s / 2:  # unless this machine stalled
                assert billing.keys.authenticate(alice).user == "alice"  # still trusted here
            time.sleep(max(0.0, verified + ttl_s - time.monotonic()) + 0.02)
            refused(billing, alice)
            assert billing.keys.recall(alice) is None
    finally:
        ledger.billing.close()


# ------------------------------------------------------------------------ HTTP


@pytest.fixture
def api(cached: Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(cached.billing, sweep_interval_s=0)) as client:
        yield client


def test_over_http_a_key_revoked_through_this_server_gets_401_at_once(
    cached: Ledger, api: TestClient
) -> None:
    bob, alice = cached.keys["bob"], cached.keys["alice"]
    assert api.get("/v1/mandates/acme/balance", headers=bearer(bob)).status_code == 200
    r = api.post(f"/v1/mandates/acme/keys/{cached.ids['bob']}/revoke", headers=bearer(alice))
    assert r.status_code == 200 and r.json()["revoked_at"]
    refused = api.get("/v1/mandates/acme/balance", headers=bearer(bob))
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_api_key"
    # A removed system admin: the same.
    root = cached.keys["root"]
    assert api.get("/v1/mandates", headers=bearer(root)).status_code == 200
    billing = cached.billing
    assert billing.keys.recall(root) is not None
    ops = billing.keys.create_key(user="ops", mandate=None, scopes=["billing:admin"]).secret
    assert api.delete("/v1/sysadmins/root", headers=bearer(ops)).status_code == 204
    assert api.get("/v1/mandates", headers=bearer(root)).status_code == 401


def test_over_http_an_expired_key_gets_401_at_its_expiry(
    cached: Ledger, api: TestClient, clock: ManualClock
) -> None:
    expires = clock() + timedelta(minutes=5)
    key = cached.billing.keys.create_key(
        user="bob", mandate="acme", scopes=["billing:read"], expires_at=expires
    ).secret
    clock.set(expires - timedelta(microseconds=1))
    assert api.get("/v1/mandates/acme/balance", headers=bearer(key)).status_code == 200
    assert api.get("/v1/mandates/acme/balance", headers=bearer(key)).status_code == 200
    clock.set(expires)
    assert api.get("/v1/mandates/acme/balance", headers=bearer(key)).status_code == 401


def test_over_http_a_revocation_by_another_process_counts_within_the_time_to_live(
    db_url: str,
) -> None:
    ttl_s = 0.3
    ledger = open_ledger(db_url, system_clock, ttl_s)
    bob = ledger.keys["bob"]
    try:
        with (
            TestClient(create_app(ledger.billing, sweep_interval_s=0)) as api,
            aibill.connect(db_url) as other,
        ):
            assert api.get("/v1/mandates/acme/balance", headers=bearer(bob)).status_code == 200
            verified = time.monotonic()
            other.keys.revoke_key(ledger.ids["bob"], mandate="acme")
            time.sleep(max(0.0, verified + ttl_s - time.monotonic()) + 0.02)
            r = api.get("/v1/mandates/acme/balance", headers=bearer(bob))
            assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    finally:
        ledger.billing.close()


def test_over_http_a_refused_key_is_never_remembered(cached: Ledger, api: TestClient) -> None:
    bob = cached.keys["bob"]
    wrong = bob[:-64] + ("0" if bob[-1] != "0" else "1") * 64
    for _ in range(3):
        assert api.get("/v1/mandates/acme/balance", headers=bearer(wrong)).status_code == 401
    assert len(cached.billing.keys.cache) == 0
    assert api.get("/v1/mandates/acme/balance", headers=bearer(bob)).status_code == 200
    assert len(cached.billing.keys.cache) == 1


# -------------------------------------------------------------------- settings


def test_the_setting_defaults_to_one_second_and_travels_to_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIBILL_CONFIG", raising=False)
    monkeypatch.delenv("AIBILL_KEY_CACHE_S", raising=False)
    assert load_settings().key_cache_s == 1.0
    monkeypatch.setenv("AIBILL_KEY_CACHE_S", "0.25")
    settings = load_settings()
    assert settings.key_cache_s == 0.25
    assert settings.to_env()["AIBILL_KEY_CACHE_S"] == "0.25"
    monkeypatch.setenv("AIBILL_KEY_CACHE_S", "0")
    assert load_settings().key_cache_s == 0


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("-1", "greater than or equal to 0"),
        ("60.5", "less than or equal to 60"),
        ("soon", "valid number"),
        ("nan", "finite number"),
        ("inf", "finite number"),
    ],
)
def test_a_bad_setting_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    monkeypatch.delenv("AIBILL_CONFIG", raising=False)
    monkeypatch.setenv("AIBILL_KEY_CACHE_S", value)
    with pytest.raises(SettingsError, match=f"key_cache_s: .*{why}"):
        load_settings()


@pytest.mark.parametrize("value", [-0.1, 61, float("nan"), float("inf"), True, "1", None])
def test_the_library_refuses_a_bad_time_to_live(db_url: str, value: Any) -> None:
    with pytest.raises(e.InvalidRequest, match="key_cache_s") as info:
        aibill.connect(db_url, key_cache_s=value)
    assert info.value.details["field"] == "key_cache_s"


# ------------------------------------------------------------------- the cache


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    cache = KeyCache(LONG_S, max_entries=3)
    minute = timedelta(minutes=1)

    def put(key_id: str) -> None:
        who = Principal(PrincipalKind.USER, "u", "m", frozenset(), key_id)
        cache.put(f"h{key_id}", who, expires_at=None, last_used_at=now, epoch=cache.epoch())

    for key_id in ("a", "b", "c"):
        put(key_id)
    assert cache.recall("m", "a", "ha", now, minute) is not None  # a is now the most recent
    put("d")
    assert len(cache) == 3
    assert cache.recall("m", "b", "hb", now, minute) is None  # the least recently used went
    assert all(cache.recall("m", k, f"h{k}", now, minute) for k in ("a", "c", "d"))
    # A verification that began before a forgetting is not stored.
    epoch = cache.epoch()
    cache.forget_key("m", "x")
    who = Principal(PrincipalKind.USER, "u", "m", frozenset(), "e")
    cache.put("he", who, expires_at=None, last_used_at=now, epoch=epoch)
    assert cache.recall("m", "e", "he", now, minute) is None
    with pytest.raises(ValueError, match="ttl_s"):
        KeyCache(-1)
