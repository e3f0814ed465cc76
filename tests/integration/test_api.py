"""The HTTP API in process (FastAPI's test client), on SQLite and PostgreSQL:
auth, money as strings, idempotency, problem documents, tenant isolation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal as D
from typing import Any

import pytest
from fastapi.testclient import TestClient

import aibill
from aibill import Billing, ManualClock
from aibill.api import create_app


@pytest.fixture
def api(billing: Billing) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A client, and keys: root (system admin), alice (admin of acme), bob (admin of beta)."""
    billing.add_user("root")
    billing.access.add_sysadmin("root")
    keys = {
        "root": billing.keys.create_key(user="root", mandate=None, scopes=["billing:admin"]).secret
    }
    for mandate, user in (("acme", "alice"), ("beta", "bob")):
        billing.create_mandate(mandate, currency="CHF")
        billing.add_user(user)
        billing.add_member(mandate, user, role="admin")
        keys[user] = billing.keys.create_key(
            user=user, mandate=mandate, scopes=["billing:admin"]
        ).secret
    with TestClient(create_app(billing)) as client:
        yield client, keys


def auth(key: str, idem: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idem:
        headers["Idempotency-Key"] = idem
    return headers


def is_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    return body


def test_the_ledger_over_http(api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    alice = keys["alice"]
    r = client.post("/v1/mandates/acme/credits", json={"amount": "100"}, headers=auth(alice, "c1"))
    assert r.status_code == 201 and r.json()["amount"] == "100.000000"
    assert r.headers["Idempotent-Replayed"] == "false"
    r = client.post(
        "/v1/mandates/acme/holds",
        json={"amount": "0.50", "user": "alice"},
        headers=auth(alice, "h1"),
    )
    assert r.status_code == 201
    hold = r.json()
    assert hold["amount"] == "0.500000" and hold["status"] == "pending"
    again = client.post(
        "/v1/mandates/acme/holds",
        json={"amount": "0.50", "user": "alice"},
        headers=auth(alice, "h1"),
    )
    assert again.json()["id"] == hold["id"] and again.headers["Idempotent-Replayed"] == "true"
    r = client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "0.31"}, headers=auth(alice, "k1")
    )
    assert r.status_code == 200 and r.json()["balance_after"] == "99.690000"
    balance = client.get("/v1/mandates/acme/balance", headers=auth(alice)).json()
    assert (balance["balance"], balance["available"], balance["pending"]) == (
        "99.690000",
        "99.690000",
        "0.000000",
    )
    page = client.get("/v1/mandates/acme/entries?limit=1", headers=auth(alice)).json()
    assert len(page["entries"]) == 1 and page["cursor"]
    rest = client.get(
        f"/v1/mandates/acme/entries?limit=10&cursor={page['cursor']}", headers=auth(alice)
    ).json()
    assert [e["kind"] for e in page["entries"] + rest["entries"]] == ["debit", "credit"]
    assert client.get("/v1/mandates/acme/verify", headers=auth(alice)).json() == []


def test_errors_are_problem_documents(api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    alice = keys["alice"]
    is_problem(client.get("/v1/mandates/acme/balance"), 401, "invalid_api_key")
    wrong = client.get("/v1/mandates/acme/balance", headers=auth(alice[:-4] + "0000"))
    assert is_problem(wrong, 401, "invalid_api_key")["detail"] == "The API key is not valid."
    short = client.post("/v1/mandates/acme/holds", json={"amount": "5"}, headers=auth(alice, "big"))
    body = is_problem(short, 402, "insufficient_balance")
    assert body["details"]["required"] == "5.000000"
    # A JSON number is refused: money travels as a decimal string.
    number = client.post(
        "/v1/mandates/acme/credits", json={"amount": 0.1}, headers=auth(alice, "n")
    )
    is_problem(number, 422, "invalid_request")
    is_problem(
        client.post("/v1/mandates/acme/credits", json={"amount": "1"}, headers=auth(alice)),
        422,
        "invalid_request",
    )
    client.post("/v1/mandates/acme/credits", json={"amount": "1"}, headers=auth(alice, "same"))
    conflict = client.post(
        "/v1/mandates/acme/credits", json={"amount": "2"}, headers=auth(alice, "same")
    )
    assert is_problem(conflict, 409, "idempotency_conflict")["details"]["field"] == "amount"
    huge = client.post(
        "/v1/mandates/acme/credits",
        content=b'{"amount": "1", "description": "' + b"x" * 70_000 + b'"}',
        headers={**auth(alice, "huge"), "Content-Type": "application/json"},
    )
    is_problem(huge, 413, "request_too_large")
    is_problem(client.get("/v1/holds/acme:hold_nope", headers=auth(alice)), 404, "hold_not_found")


def test_a_key_of_beta_gets_nothing_of_acme(api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    client.post(
        "/v1/mandates/acme/credits", json={"amount": "10"}, headers=auth(keys["alice"], "f")
    )
    bob = keys["bob"]
    for method, path, body in (
        ("get", "/v1/mandates/{m}/balance", None),
        ("get", "/v1/mandates/{m}/entries", None),
        ("post", "/v1/mandates/{m}/credits", {"amount": "1"}),
        ("post", "/v1/mandates/{m}/holds", {"amount": "1"}),
        ("post", "/v1/mandates/{m}/check", {"estimate": "1"}),
        ("get", "/v1/mandates/{m}/verify", None),
    ):
        answers = []
        for mandate in ("acme", "no-such-mandate"):
            r = client.request(
                method, path.format(m=mandate), json=body, headers=auth(bob, f"x-{mandate}")
            )
            answers.append(is_problem(r, 403, "permission_denied")["detail"])
        assert answers[0] == answers[1]
    alice_balance = client.get("/v1/mandates/acme/balance", headers=auth(keys["alice"])).json()
    assert alice_balance["balance"] == "10.000000"


def test_platform_operations_need_the_system_admin(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = api
    r = client.post("/v1/mandates", json={"id": "gamma"}, headers=auth(keys["alice"]))
    is_problem(r, 403, "permission_denied")
    r = client.post("/v1/mandates", json={"id": "gamma"}, headers=auth(keys["root"]))
    assert r.status_code == 201 and r.json()["id"] == "gamma"


def test_priced_calls_over_http(billing: Billing, clock: ManualClock) -> None:
    billing.create_mandate("usd", billing_model="unlimited", currency="USD")
    billing.add_user("gw")
    billing.add_member("usd", "gw")
    billing.access.register_provider("openai")
    key = billing.keys.create_key(user="gw", mandate="usd", scopes=["billing:use"]).secret
    with TestClient(create_app(billing)) as client:
        r = client.post(
            "/v1/mandates/usd/holds",
            json={
                "user": "gw",
                "provider": "openai",
                "model": "gpt-4o",
                "input_tokens": 1200,
                "max_output_tokens": 800,
            },
            headers=auth(key, "h"),
        )
        assert r.status_code == 201 and r.json()["amount"] == "0.016500"  # 0.011 USD + 50 %
        r = client.post(
            f"/v1/holds/{r.json()['id']}/capture",
            json={"usage": {"input_tokens": 1200, "output_tokens": 512}},
            headers=auth(key),
        )
        entry = r.json()
        assert entry["amount"] == "0.012180" and entry["provider_cost"] == "0.00812"
        forbidden = client.post(
            "/v1/mandates/usd/check",
            json={"estimate": "0.01", "user": "gw", "provider": "mistral"},
            headers=auth(key),
        )
        assert forbidden.json()["reason"] == "provider_not_allowed"


def test_health_and_readiness(billing: Billing) -> None:
    with TestClient(create_app(billing)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ok"
        schema = client.get("/openapi.json").json()
        assert "/v1/mandates/{mandate}/holds" in schema["paths"]
    assert isinstance(aibill.__version__, str)


def test_metrics_count_what_happened(api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    alice = keys["alice"]
    client.post("/v1/mandates/acme/credits", json={"amount": "1"}, headers=auth(alice, "c"))
    for _ in range(2):  # the replay is not counted twice
        hold = client.post(
            "/v1/mandates/acme/holds", json={"amount": "0.5"}, headers=auth(alice, "h")
        ).json()
    client.post(f"/v1/holds/{hold['id']}/capture", json={"amount": "0.31"}, headers=auth(alice))
    client.post("/v1/mandates/acme/holds", json={"amount": "9"}, headers=auth(alice, "big"))
    text = client.get("/metrics").text
    assert 'aibill_holds_total{event="placed"} 1.0' in text
    assert 'aibill_holds_total{event="captured"} 1.0' in text
    assert 'aibill_captured_micros_total{currency="CHF"} 310000.0' in text
    assert 'aibill_refusals_total{code="insufficient_balance"} 1.0' in text
    assert (
        'aibill_http_requests_total{method="POST",route="/v1/mandates/{mandate}/holds",'
        'status="201"} 2.0'
    ) in text


def test_the_service_sweeps_expired_holds(billing: Billing, clock: ManualClock) -> None:
    billing.create_mandate("acme")
    billing.credit("acme", D("1"), idempotency_key="c")
    hold = billing.hold("acme", amount=D("1"), ttl_s=60, idempotency_key="h")
    clock.advance(61)
    with TestClient(create_app(billing, sweep_interval_s=0.02)):
        deadline = time.monotonic() + 10
        while billing.get_hold(hold.id).status != aibill.HoldStatus.EXPIRED:
            assert time.monotonic() < deadline, "the sweeper never ran"
            time.sleep(0.02)
    assert billing.verify() == []


def test_administration_over_http(api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    root, alice, bob = keys["root"], keys["alice"], keys["bob"]
    ok = client.post(
        "/v1/exchange-rates",
        json={"base": "USD", "quote": "CHF", "rate": "0.80", "valid_from": "2020-01-01T00:00:00Z"},
        headers=auth(root),
    )
    assert ok.status_code == 201 and ok.json()["rate"] == "0.80"
    is_problem(
        client.post(
            "/v1/exchange-rates",
            json={"base": "USD", "quote": "EUR", "rate": "0.9"},
            headers=auth(alice),
        ),
        403,
        "permission_denied",
    )
    imported = client.post(
        "/v1/exchange-rates/import",
        content="base,quote,rate,valid_from\nEUR,CHF,0.95,2020-01-01\n",
        headers=auth(root),
    )
    assert imported.json() == {"imported": 1}
    assert client.post("/v1/providers", json={"provider": "openai"}, headers=auth(root)).json()[
        "enabled"
    ]
    assert (
        client.post(
            "/v1/markups", json={"percent": "20", "mandate": "acme"}, headers=auth(alice)
        ).json()["percent"]
        == "20"
    )
    price = client.post(
        "/v1/prices",
        json={
            "provider": "openai",
            "model": "tuned-1",
            "input_mtok": "1",
            "output_mtok": "2",
            "mandate": "acme",
            "valid_from": "2020-01-01T00:00:00Z",
        },
        headers=auth(alice),
    )
    assert price.status_code == 201 and price.json()["price_id"].startswith("cp_")
    assert client.get("/v1/mandates/acme/users/alice/providers", headers=auth(alice)).json() == [
        "openai"
    ]
    rule = client.post(
        "/v1/mandates/acme/rules",
        json={
            "role": "viewer",
            "context": "resource",
            "item": "resource.aicore.*",
            "permissions": ["view"],
        },
        headers=auth(alice),
    ).json()
    assert [
        r["rule_id"] for r in client.get("/v1/mandates/acme/rules", headers=auth(alice)).json()
    ] == [rule["rule_id"]]
    created = client.post(
        "/v1/mandates/acme/keys",
        json={"user": "alice", "scopes": ["billing:read"]},
        headers=auth(alice),
    ).json()
    listed = client.get("/v1/mandates/acme/keys", headers=auth(alice)).json()
    assert created["secret"] not in str(listed)
    assert (
        client.get("/v1/mandates/acme/balance", headers=auth(created["secret"])).status_code == 200
    )
    client.post(f"/v1/mandates/acme/keys/{created['key']['id']}/revoke", headers=auth(alice))
    is_problem(
        client.get("/v1/mandates/acme/balance", headers=auth(created["secret"])),
        401,
        "invalid_api_key",
    )
    limit = client.put(
        "/v1/mandates/acme/limits",
        json={"amount": "5", "user": "alice", "period": "day"},
        headers=auth(alice),
    ).json()
    assert limit["amount"] == "5.000000"
    actions = [
        r["action"]
        for r in client.get("/v1/mandates/acme/audit", headers=auth(alice)).json()["records"]
    ]
    assert actions[:3] == ["limit.set", "api_key.revoke", "api_key.create"]
    is_problem(client.get("/v1/mandates/acme/audit", headers=auth(bob)), 403, "permission_denied")
    client.post("/v1/mandates/acme/credits", json={"amount": "10"}, headers=auth(alice, "c"))
    csv_text = client.get("/v1/mandates/acme/entries.csv", headers=auth(alice)).text
    assert csv_text.splitlines()[0].startswith("entry_id,posted_at")
    assert "10.000000" in csv_text
    balances = client.get("/v1/users/alice/balances", headers=auth(alice)).json()
    assert [(b["mandate"], b["balance"]) for b in balances] == [("acme", "10.000000")]
    report = client.get("/v1/mandates/acme/usage-report?group_by=provider", headers=auth(alice))
    assert report.status_code == 200 and report.json() == []


def test_every_mandate_endpoint_refuses_another_mandates_key(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    """The isolation matrix over HTTP: every route that names a mandate, called
    with beta's admin key for acme and for a mandate that does not exist, is
    403 with the same body, and acme's data does not change."""
    client, keys = api
    alice, bob = keys["alice"], keys["bob"]
    client.post("/v1/mandates/acme/credits", json={"amount": "10"}, headers=auth(alice, "f"))
    before = client.get("/v1/mandates/acme/entries", headers=auth(alice)).json()
    schema = client.get("/openapi.json").json()
    fill = {
        "user": "alice",
        "role": "viewer",
        "rule_id": "rule_0000000000000000",
        "key_id": "0123456789ab",
        "provider": "openai",
    }
    bodies = {
        "/v1/mandates/{mandate}/members": {"user": "alice"},
        "/v1/mandates/{mandate}/credits": {"amount": "1"},
        "/v1/mandates/{mandate}/check": {"estimate": "1"},
        "/v1/mandates/{mandate}/estimate": {
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": 1,
            "max_output_tokens": 1,
        },
        "/v1/mandates/{mandate}/holds": {"amount": "1"},
        "/v1/mandates/{mandate}/usage": {"amount": "1"},
        "/v1/mandates/{mandate}/rules": {
            "role": "viewer",
            "context": "resource",
            "item": "*",
            "permissions": ["view"],
        },
        "/v1/mandates/{mandate}/keys": {"user": "alice"},
        "/v1/mandates/{mandate}/limits": {"amount": "1", "user": "alice"},
        "/v1/mandates/{mandate}/overdraft-limit": {"amount": "1"},
        "/v1/mandates/{mandate}/roles": {"role": "auditor"},
        "/v1/mandates/{mandate}/billing-model": {"billing_model": "prepay_user"},
    }
    checked = 0
    for path, operations in schema["paths"].items():
        if "{mandate}" not in path:
            continue
        for method in operations:
            answers = []
            for mandate in ("acme", "no-such-mandate"):
                url = path.format(mandate=mandate, **fill)
                r = client.request(
                    method.upper(),
                    url,
                    json=bodies.get(path) if method in ("post", "put", "patch") else None,
                    headers=auth(bob, f"k-{mandate}"),
                )
                answers.append(is_problem(r, 403, "permission_denied"))
            assert answers[0] == answers[1], (method, path)
            checked += 1
    assert checked >= 30
    assert client.get("/v1/mandates/acme/entries", headers=auth(alice)).json() == before
    assert client.get("/v1/mandates/acme", headers=auth(alice)).json()["billing_model"] == (
        "prepay_mandate"
    )


def test_every_request_body_has_an_example(billing: Billing) -> None:
    schema = create_app(billing).openapi()
    components = schema["components"]["schemas"]
    missing = []
    checked = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            checked += 1
            ref = body["schema"].get("$ref", "").rsplit("/", 1)[-1]
            if not components.get(ref, {}).get("examples"):
                missing.append(f"{method.upper()} {path}")
    assert missing == [] and checked >= 15


def test_settings_roles_sysadmins_and_platform_keys(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = api
    root, alice = keys["root"], keys["alice"]
    r = client.put("/v1/mandates/acme/overdraft-limit", json={"amount": "20"}, headers=auth(alice))
    assert r.status_code == 200 and r.json()["available"] == "20.000000"
    role = client.post(
        "/v1/mandates/acme/roles", json={"role": "auditor"}, headers=auth(alice)
    ).json()
    assert role["role"] == "auditor"
    assert [
        x["role"] for x in client.get("/v1/mandates/acme/roles", headers=auth(alice)).json()
    ] == ["auditor"]
    client.post("/v1/markups", json={"percent": "10", "mandate": "acme"}, headers=auth(alice))
    assert client.delete("/v1/markups?mandate=acme", headers=auth(alice)).json() == {
        "removed": True
    }
    is_problem(
        client.post("/v1/sysadmins", json={"user": "alice"}, headers=auth(alice)),
        403,
        "permission_denied",
    )
    assert (
        client.post("/v1/sysadmins", json={"user": "alice"}, headers=auth(root)).status_code == 201
    )
    created = client.post(
        "/v1/keys", json={"user": "alice", "scopes": ["billing:admin"]}, headers=auth(root)
    ).json()
    assert created["secret"].startswith("aibill-admin_")
    assert (
        client.post(
            "/v1/mandates", json={"id": "delta"}, headers=auth(created["secret"])
        ).status_code
        == 201
    )
    assert any(
        k["id"] == created["key"]["id"] for k in client.get("/v1/keys", headers=auth(root)).json()
    )
    client.post(f"/v1/keys/{created['key']['id']}/revoke", headers=auth(root))
    is_problem(client.get("/v1/keys", headers=auth(created["secret"])), 401, "invalid_api_key")
    assert client.delete("/v1/sysadmins/alice", headers=auth(root)).status_code == 204
    # root is now the only one: the platform keeps its last system admin.
    last = is_problem(client.delete("/v1/sysadmins/root", headers=auth(root)), 409, "last_sysadmin")
    assert "only system admin" in last["detail"]
    assert client.get("/v1/sysadmins/root", headers=auth(root)).json() == {"sysadmin": True}


def test_expired_holds_are_counted(billing: Billing, clock: ManualClock) -> None:
    billing.create_mandate("acme")
    billing.credit("acme", D("1"), idempotency_key="c")
    billing.hold("acme", amount=D("1"), ttl_s=60, idempotency_key="h")
    clock.advance(61)
    with TestClient(create_app(billing, sweep_interval_s=0.02)) as client:
        deadline = time.monotonic() + 10
        while 'aibill_holds_total{event="expired"} 1.0' not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the sweeper never counted the expired hold"
            time.sleep(0.02)


def test_read_helpers_over_http(api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    root, alice = keys["root"], keys["alice"]
    client.post(
        "/v1/exchange-rates",
        json={"base": "USD", "quote": "CHF", "rate": "0.80", "valid_from": "2020-01-01T00:00:00Z"},
        headers=auth(root),
    )
    assert client.get("/v1/exchange-rates/USD/CHF", headers=auth(alice)).json()["rate"] == "0.80"
    is_problem(
        client.get("/v1/exchange-rates/USD/JPY", headers=auth(alice)), 404, "missing_exchange_rate"
    )
    assert client.get("/v1/markups/effective?mandate=acme", headers=auth(alice)).json() == {
        "percent": "50"
    }
    assert client.get("/v1/sysadmins/root", headers=auth(root)).json() == {"sysadmin": True}
    created = client.post(
        "/v1/mandates/acme/keys", json={"user": "alice"}, headers=auth(alice)
    ).json()
    got = client.get(f"/v1/mandates/acme/keys/{created['key']['id']}", headers=auth(alice)).json()
    assert got["id"] == created["key"]["id"] and created["secret"] not in str(got)
    assert client.get("/v1/verify", headers=auth(root)).json() == []
    is_problem(client.get("/v1/verify", headers=auth(alice)), 403, "permission_denied")


def test_every_operation_has_an_example(billing: Billing) -> None:
    """A request body example, or the response it gave in a recorded session."""
    schema = create_app(billing).openapi()
    missing = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {})
            if body:
                continue  # checked by test_every_request_body_has_an_example
            shown = [
                media
                for response in operation.get("responses", {}).values()
                for media in response.get("content", {}).values()
                if "example" in media
            ]
            if not shown and not (method == "delete" and "204" in operation["responses"]):
                missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_mandates_members_users_accounts_and_holds_over_http(
    api: tuple[TestClient, dict[str, str]], billing: Billing, clock: ManualClock
) -> None:
    client, keys = api
    root, alice = keys["root"], keys["alice"]
    billing.add_user("carol")
    billing.add_member("acme", "carol")
    assert [m["id"] for m in client.get("/v1/mandates", headers=auth(root)).json()] == [
        "acme",
        "beta",
    ]
    assert [m["id"] for m in client.get("/v1/mandates", headers=auth(alice)).json()] == ["acme"]
    assert client.get("/v1/users", headers=auth(root)).json() == ["alice", "bob", "carol", "root"]
    is_problem(client.get("/v1/users", headers=auth(alice)), 403, "permission_denied")
    members = client.get("/v1/mandates/acme/members", headers=auth(alice)).json()
    assert [(m["user"], m["roles"]) for m in members] == [
        ("alice", ["admin"]),
        ("carol", ["member"]),
    ]
    assert members[0]["joined_at"].startswith("2026-03-01T12:00:00")

    client.post("/v1/mandates/acme/credits", json={"amount": "10"}, headers=auth(alice, "c"))
    held = []
    for amount in ("1", "2", "3"):
        clock.advance(1)
        held.append(
            client.post(
                "/v1/mandates/acme/holds", json={"amount": amount}, headers=auth(alice, amount)
            ).json()
        )
    listed = client.get("/v1/mandates/acme/holds?limit=2", headers=auth(alice)).json()
    assert [h["id"] for h in listed] == [held[2]["id"], held[1]["id"]]
    assert [h["amount"] for h in listed] == ["3.000000", "2.000000"]
    is_problem(
        client.get("/v1/mandates/acme/holds?limit=0", headers=auth(alice)), 422, "invalid_request"
    )
    pool = client.get("/v1/mandates/acme/accounts", headers=auth(alice)).json()
    assert [(a["account"], a["balance"], a["pending"], a["available"]) for a in pool] == [
        ("pool", "10.000000", "6.000000", "4.000000")
    ]

    wallets = {"billing_model": "prepay_user"}
    busy = client.put("/v1/mandates/acme/billing-model", json=wallets, headers=auth(alice))
    assert is_problem(busy, 409, "holds_in_flight")["details"]["holds"] == 3
    for h in held:
        client.post(f"/v1/holds/{h['id']}/release", headers=auth(alice))
    changed = client.put("/v1/mandates/acme/billing-model", json=wallets, headers=auth(alice))
    assert changed.status_code == 200 and changed.json()["billing_model"] == "prepay_user"
    accounts = client.get("/v1/mandates/acme/accounts", headers=auth(alice)).json()
    assert [(a["account"], a["user"], a["balance"]) for a in accounts] == [
        ("pool", None, "10.000000"),
        ("user:alice", "alice", "0.000000"),
        ("user:carol", "carol", "0.000000"),
    ]
    is_problem(
        client.put(
            "/v1/mandates/acme/billing-model", json={"billing_model": "x"}, headers=auth(alice)
        ),
        422,
        "invalid_request",
    )


def test_provider_permission_and_platform_key_reads(
    api: tuple[TestClient, dict[str, str]], billing: Billing
) -> None:
    client, keys = api
    root, alice = keys["root"], keys["alice"]
    billing.access.register_provider("openai")
    billing.access.register_provider("mistral", enabled=False)
    for provider, allowed in (("openai", True), ("mistral", False), ("nope", False)):
        r = client.get(f"/v1/mandates/acme/users/alice/providers/{provider}", headers=auth(alice))
        assert r.json() == {"allowed": allowed}, provider
    created = billing.keys.create_key(user="root", mandate=None, scopes=["billing:read"])
    got = client.get(f"/v1/keys/{created.key_id}", headers=auth(root)).json()
    assert (got["id"], got["scopes"], got["mandate"]) == (created.key_id, ["billing:read"], None)
    is_problem(client.get("/v1/keys/0123456789ab", headers=auth(root)), 404, "unknown_api_key")
    is_problem(
        client.get(f"/v1/keys/{created.key_id}", headers=auth(alice)), 403, "permission_denied"
    )


def test_reports_take_the_librarys_filters(
    api: tuple[TestClient, dict[str, str]], billing: Billing
) -> None:
    client, keys = api
    alice = keys["alice"]
    billing.credit("acme", D("10"), idempotency_key="c", description="=SUM(A1)")
    billing.record_usage(
        "acme", amount=D("1"), user="alice", feature_code="chat", idempotency_key="u"
    )
    debits = client.get("/v1/mandates/acme/entries.csv?kind=debit", headers=auth(alice)).text
    assert len(debits.splitlines()) == 2 and ",debit," in debits
    safe = client.get(
        "/v1/mandates/acme/entries.csv?kind=credit&spreadsheet_safe=true", headers=auth(alice)
    ).text
    assert "'=SUM(A1)" in safe
    assert (
        len(
            client.get(
                "/v1/mandates/acme/entries.csv?page_size=1", headers=auth(alice)
            ).text.splitlines()
        )
        == 3
    )
    report = client.get(
        "/v1/mandates/acme/usage-report?group_by=feature_code&user=alice", headers=auth(alice)
    ).json()
    assert [(r["keys"], r["amount"]) for r in report] == [({"feature_code": "chat"}, "1.000000")]
    nobody = client.get("/v1/mandates/acme/usage-report?user=bob", headers=auth(alice)).json()
    assert nobody == []
    csv_report = client.get(
        "/v1/mandates/acme/usage-report.csv?group_by=feature_code&feature_code=chat",
        headers=auth(alice),
    ).text
    assert csv_report.splitlines()[1].startswith("chat,1,")


def test_an_import_without_a_length_is_still_limited(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = api

    def chunks() -> Iterator[bytes]:
        yield b"base,quote,rate,valid_from\n"
        for _ in range(3000):
            yield b"EUR,CHF,0.95,2020-01-01\n"

    r = client.post("/v1/exchange-rates/import", content=chunks(), headers=auth(keys["root"]))
    is_problem(r, 413, "request_too_large")
    assert client.get("/v1/exchange-rates", headers=auth(keys["root"])).json() == []


def test_the_price_of_one_model_over_http(
    api: tuple[TestClient, dict[str, str]], billing: Billing
) -> None:
    client, keys = api
    alice, bob = keys["alice"], keys["bob"]
    catalog = client.get("/v1/prices/openai/gpt-4o-2024-08-06", headers=auth(alice)).json()
    assert (catalog["scope"], catalog["model_matched"], catalog["source"]) == (
        "catalog",
        "gpt-4o",
        "genai-prices 0.2.3",
    )
    assert (catalog["input_mtok"], catalog["output_mtok"], catalog["cache_read_mtok"]) == (
        "2.5",
        "10",
        "1.25",
    )
    billing.pricing.set_custom_price(
        "openrouter",
        "meta/llama-9",
        input_mtok=D("0.2"),
        output_mtok=D("0.6"),
        mandate="acme",
    )
    custom = client.get("/v1/prices/openrouter/meta/llama-9?mandate=acme", headers=auth(alice))
    assert custom.status_code == 200, custom.text
    assert (custom.json()["scope"], custom.json()["input_mtok"]) == ("mandate", "0.2")
    is_problem(
        client.get("/v1/prices/openrouter/meta/llama-9", headers=auth(alice)), 404, "unknown_model"
    )
    is_problem(
        client.get("/v1/prices/openai/gpt-4o?at=2026-03-01T12:00:00", headers=auth(alice)),
        422,
        "invalid_request",
    )
    # Another mandate's prices and markups are its own.
    for url in ("/v1/prices/openai/gpt-4o?mandate=acme", "/v1/markups/effective?mandate=acme"):
        is_problem(client.get(url, headers=auth(bob)), 403, "permission_denied")


def test_settings_that_name_a_mandate_outside_the_path_are_isolated_too(
    api: tuple[TestClient, dict[str, str]], billing: Billing
) -> None:
    """The pricing routes take the mandate in the query or the body: beta's key
    gets the same 403 for acme as for a mandate that does not exist."""
    client, keys = api
    billing.pricing.set_markup(D("20"), mandate="acme")
    price = {"provider": "p", "model": "m", "input_mtok": "1", "output_mtok": "1"}
    for method, url, body in (
        ("get", "/v1/markups?mandate={m}", None),
        ("get", "/v1/markups/effective?mandate={m}", None),
        ("post", "/v1/markups", {"percent": "0", "mandate": "{m}"}),
        ("delete", "/v1/markups?mandate={m}", None),
        ("get", "/v1/prices?mandate={m}", None),
        ("post", "/v1/prices", {**price, "mandate": "{m}"}),
        ("get", "/v1/prices/openai/gpt-4o?mandate={m}", None),
    ):
        answers = []
        for mandate in ("acme", "no-such-mandate"):
            sent = None if body is None else {k: v.format(m=mandate) for k, v in body.items()}
            r = client.request(
                method.upper(), url.format(m=mandate), json=sent, headers=auth(keys["bob"])
            )
            answers.append(is_problem(r, 403, "permission_denied"))
        assert answers[0] == answers[1], (method, url)
    assert billing.pricing.markup_for("acme", None, None) == D("20")
    assert billing.pricing.custom_prices("acme") == []
