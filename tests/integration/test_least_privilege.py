"""Least privilege for API keys (DESIGN rule 10): ``billing:use`` moves money
and reads what that returns; reading the mandate needs ``billing:read``;
administration ``billing:admin``. The table in docs/api-keys.md is the truth:
every HTTP route of the application has a row, and each route refuses a key
of the scope below the one named there and lets a key of that scope through.
SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import aibill
from aibill import Billing
from aibill.api import create_app
from aibill.domain.principal import Principal, PrincipalKind, Scope
from aibill.web.routing import WebRoute

DOC = Path(__file__).resolve().parents[2] / "docs" / "api-keys.md"
ROW = re.compile(r"^\| `([A-Z]+)` \| `([^`]+)` \| `([^`]+)` \|")
SCOPE_SETS = {
    "use": ["billing:use"],
    "read": ["billing:read"],
    "use+read": ["billing:use", "billing:read"],
    "admin": ["billing:admin"],
}
# Request bodies: the schema's own examples, but for these, which would change
# the world the later routes are called in or name someone who is not a member.
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/v1/mandates/{mandate}/billing-model"): {"billing_model": "prepay_mandate"},
    ("PATCH", "/v1/providers/{provider}"): {"enabled": True},
    ("POST", "/v1/mandates/{mandate}/keys"): {"user": "alice", "scopes": ["billing:use"]},
    ("POST", "/v1/keys"): {"user": "root", "scopes": ["billing:use"]},
    ("POST", "/v1/mandates/{mandate}/holds"): {"amount": "1", "user": "alice"},
    ("POST", "/v1/holds/{hold_id}/capture"): {"amount": "0.5"},
    ("POST", "/v1/mandates/{mandate}/usage"): {"amount": "0.25", "user": "alice"},
}


def documented_scopes() -> dict[tuple[str, str], str]:
    """``(method, route) -> scope`` from the table in docs/api-keys.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        found = ROW.match(line)
        if found:
            method, path, scope = found.groups()
            assert (method, path) not in rows, f"{method} {path} has two rows"
            rows[(method, path)] = scope
    assert len(rows) > 60
    return rows


def app_routes(app: Any) -> Iterator[tuple[str, str, Any]]:
    """Every ``(method, path, route)`` the application answers, included routers
    flattened (``HEAD`` beside ``GET`` is the same route)."""

    def walk(routes: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for route in routes:
            if hasattr(route, "original_router"):  # an included router, resolved lazily
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            else:
                yield prefix + route.path, route

    for path, route in walk(app.routes, ""):
        methods = sorted(set(getattr(route, "methods", None) or {"GET"}) - {"HEAD"})
        for method in methods:
            yield method, path, route


@dataclass
class World:
    client: TestClient
    billing: Billing
    keys: dict[tuple[str, str], str]  # (who, scope set) -> secret
    hold_id: str


@pytest.fixture
def world(billing: Billing) -> Iterator[World]:
    """acme (USD) with alice (admin), funded, a hold of alice's open; root is a
    system admin. Each of them has a key of every scope set."""
    billing.add_user("root")
    billing.access.add_sysadmin("root")
    billing.access.register_provider("openai")
    billing.create_mandate("acme", currency="USD")
    billing.add_member("acme", "alice", role="admin")
    billing.credit("acme", D("100"), idempotency_key="fund")
    hold = billing.hold("acme", amount=D("2"), user="alice", idempotency_key="open")
    keys = {}
    for name, scopes in SCOPE_SETS.items():
        keys[("root", name)] = billing.keys.create_key(
            user="root", mandate=None, scopes=scopes
        ).secret
        keys[("alice", name)] = billing.keys.create_key(
            user="alice", mandate="acme", scopes=scopes
        ).secret
    with TestClient(create_app(billing, sweep_interval_s=0)) as client:
        yield World(client, billing, keys, hold.id)


def _url(path: str, hold_id: str) -> str:
    fill = {
        "mandate": "acme",
        "hold_id": hold_id,
        "user": "alice",
        "role": "viewer",
        "rule_id": "rule_0000000000000000",
        "key_id": "0123456789ab",
        "provider": "openai",
        "base": "USD",
        "quote": "CHF",
    }
    return path.replace("{model:path}", "gpt-4o").format(**fill)


def _body(schema: dict[str, Any], method: str, path: str) -> Any:
    if (method, path) in BODIES:
        return BODIES[(method, path)]
    operation = schema["paths"].get(path, {}).get(method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
    return schema["components"]["schemas"][ref]["examples"][0]


class Caller:
    def __init__(self, world: World) -> None:
        self.world = world
        self.schema = world.client.get("/openapi.json").json()
        self.count = 0

    def __call__(self, method: str, path: str, key: str | None) -> Any:
        self.count += 1
        headers = {"Idempotency-Key": f"lp-{self.count}"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        url = _url(path, self.world.hold_id)
        if path == "/static":
            url = "/static/dashboard.css"
        return self.world.client.request(
            method, url, json=_body(self.schema, method, path), headers=headers
        )


def _is_refused(response: Any) -> bool:
    if response.status_code != 403:
        return False
    assert response.json()["code"] == "permission_denied", response.text
    return True


LOWER = {"billing:use": "read", "billing:read": "use", "billing:admin": "use+read"}


def test_every_route_has_a_row_and_keeps_to_it(world: World) -> None:
    """Route by route, from the application's own route list: a key of the
    scope below the one documented gets 403 ``permission_denied``; a key of
    that scope does not. A route without a row fails the test."""
    documented = documented_scopes()
    call = Caller(world)
    missing, wrong = [], []
    seen = set()
    for method, path, route in app_routes(world.client.app):
        if isinstance(route, WebRoute):
            continue  # the dashboard: sessions (test_a_use_only_key_cannot_sign_in_...)
        scope = documented.get((method, path))
        if scope is None:
            missing.append(f"{method} {path}")
            continue
        seen.add((method, path))
        who = "alice" if "{mandate}" in path or "{hold_id}" in path else "root"
        key = world.keys.get
        if scope == "none":
            r = call(method, path, None)
            if r.status_code in (401, 403):
                wrong.append(f"{method} {path}: {r.status_code} without a key")
        elif scope == "any key":
            if call(method, path, None).status_code != 401:
                wrong.append(f"{method} {path}: no 401 without a key")
            for name in ("use", "read"):
                r = call(method, path, key((who, name)))
                if r.status_code in (401, 403):
                    wrong.append(f"{method} {path}: {r.status_code} for a {name} key")
        elif scope == "billing:use or billing:read":
            for name in ("use", "read"):
                r = call(method, path, key((who, name)))
                if _is_refused(r):
                    wrong.append(f"{method} {path}: 403 for a {name} key")
        else:
            lower = LOWER[scope]
            if not _is_refused(call(method, path, key((who, lower)))):
                wrong.append(f"{method} {path}: not refused to a {lower} key")
            name = {"billing:use": "use", "billing:read": "read", "billing:admin": "admin"}[scope]
            r = call(method, path, key((who, name)))
            if r.status_code in (401, 403):
                wrong.append(f"{method} {path}: {r.status_code} for a {name} key: {r.text}")
    assert missing == [], "routes without a row in docs/api-keys.md"
    assert wrong == []
    assert set(documented) - seen == set(), "rows for routes the application does not have"
    assert world.billing.verify() == []


def test_a_use_key_moves_money_and_reads_only_what_it_bills(billing: Billing) -> None:
    """In the library: a billing:use principal places and captures holds and
    reads its balance and holds, and is refused every read of the mandate."""
    billing.create_mandate("acme")
    billing.add_member("acme", "gw", role="member")
    billing.add_member("acme", "ann", role="member")
    billing.credit("acme", D("10"), idempotency_key="fund")
    use = billing.as_principal(Principal(PrincipalKind.USER, "gw", "acme", frozenset({Scope.USE})))
    hold = use.hold("acme", amount=D("3"), user="ann", idempotency_key="h")
    assert use.get_hold(hold.id).status is aibill.HoldStatus.PENDING
    assert use.capture(hold.id, amount=D("2")).amount == D("2")
    assert use.balance("acme").balance == D("8")
    assert use.check("acme", estimate=D("1")).allowed
    before = billing.history("acme").entries
    reads = {
        "history": lambda: use.history("acme"),
        "accounts": lambda: use.accounts("acme"),
        "open_holds": lambda: use.open_holds("acme"),
        "members": lambda: use.members("acme"),
        "usage_report": lambda: use.usage_report("acme"),
        "history_csv": lambda: list(use.iter_history_csv("acme")),
        "usage_csv": lambda: list(use.iter_usage_report_csv("acme")),
        "spending_limits": lambda: use.spending_limits("acme"),
        "verify": lambda: use.verify("acme"),
        "get_mandate": lambda: use.get_mandate("acme"),
        "balances_for_user": lambda: use.balances_for_user("gw"),
        "roles_of": lambda: use.access.roles_of("acme", "ann"),
        "rules": lambda: use.access.rules("acme"),
        "markups": lambda: use.pricing.markups("acme"),
        "audit_log": lambda: use.audit_log("acme"),
    }
    for name, read in reads.items():
        with pytest.raises(aibill.PermissionDenied) as refused:
            read()
        assert refused.value.code == "permission_denied", name
    assert billing.history("acme").entries == before


def test_a_use_key_reads_another_wallet_only_if_it_may_spend(billing: Billing) -> None:
    """Per-user wallets: a use key reads the wallet a hold of its would bill. A
    viewer's use key reads its own wallet, not another's (the same answer for a
    member, a non-member and a name that exists nowhere)."""
    billing.create_mandate("w", billing_model="prepay_user")
    billing.add_member("w", "gw", role="member")
    billing.add_member("w", "vic", role="viewer")
    billing.add_member("w", "ann", role="member")
    billing.add_user("stranger")
    billing.credit("w", D("5"), user="ann", idempotency_key="fund")

    def key(user: str) -> Billing:
        return billing.as_principal(
            Principal(PrincipalKind.USER, user, "w", frozenset({Scope.USE}))
        )

    assert key("gw").balance("w", user="ann").balance == D("5")
    assert key("vic").balance("w", user="vic").balance == D("0")
    answers = set()
    for other in ("ann", "stranger", "nobody-at-all"):
        with pytest.raises(aibill.PermissionDenied) as refused:
            key("vic").balance("w", user=other)
        answers.add((refused.value.code, refused.value.message))
    assert len(answers) == 1 and next(iter(answers))[0] == "permission_denied"


def _sign_in(client: TestClient, key: str) -> Any:
    form = client.get("/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token, form.text
    return client.post(
        "/sign-in", data={"csrf": token.group(1), "api_key": key}, follow_redirects=False
    )


def test_a_use_only_key_cannot_sign_in_to_the_dashboard(world: World) -> None:
    """The dashboard shows balances and history: a use-only key is refused at
    the sign-in form, with words that say why, and no session is opened; the
    same user's key with billing:read signs in."""
    with TestClient(world.client.app) as browser:
        r = _sign_in(browser, world.keys[("alice", "use")])
        assert r.status_code == 403
        assert "billing:use" in r.text and "billing:read" in r.text
        assert "aibill_session" not in r.cookies
        assert browser.get("/", follow_redirects=False).status_code == 303  # to sign-in
    with TestClient(world.client.app) as browser:
        assert _sign_in(browser, world.keys[("alice", "read")]).status_code == 303
        assert browser.get("/m/acme").status_code == 200
