"""A mandate's principals learn nothing about users outside their mandate.

Users are bare identities: adding a member who is not yet a platform user
registers the identity, so the answer is the same whether the name existed;
an operation on a user who is not a member answers ``not_a_member`` whether
or not the name exists elsewhere. Only the system and system admins are told
``unknown_user``. For every operation that takes a user, a mandate admin's key
and a use key get the same status, code and message (the name aside) for a
member of another mandate and for a name nobody registered. SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal as D
from typing import Any

import pytest
from fastapi.testclient import TestClient

import aibill
from aibill import Billing
from aibill.api import create_app
from aibill.domain.principal import Principal, PrincipalKind, Scope

STRANGER, GHOST = "stranger", "ghost"  # a user of another mandate; a name nobody registered


@pytest.fixture
def acme(billing: Billing) -> Billing:
    billing.access.register_provider("openai")
    billing.create_mandate("acme")
    billing.add_member("acme", "alice", role="admin")
    billing.add_member("acme", "gw", role="member")
    billing.credit("acme", D("10"), idempotency_key="fund")
    billing.create_mandate("other")
    billing.add_member("other", STRANGER)
    return billing


def principal(billing: Billing, user: str, *scopes: Scope) -> Billing:
    return billing.as_principal(Principal(PrincipalKind.USER, user, "acme", frozenset(scopes)))


OPERATIONS: dict[str, Callable[[Billing, str], Any]] = {
    "hold": lambda b, u: b.hold("acme", amount=D("1"), user=u, idempotency_key=f"h-{u}"),
    "record_usage": lambda b, u: b.record_usage(
        "acme", amount=D("1"), user=u, idempotency_key=f"r-{u}"
    ),
    "record_usage happened": lambda b, u: b.record_usage(
        "acme", amount=D("1"), user=u, already_happened=True, idempotency_key=f"a-{u}"
    ),
    "check": lambda b, u: b.check("acme", estimate=D("1"), user=u),
    "check provider": lambda b, u: b.check("acme", estimate=D("1"), user=u, provider="openai"),
    "balance": lambda b, u: b.balance("acme", user=u),
    "credit": lambda b, u: b.credit("acme", D("1"), user=u, idempotency_key=f"c-{u}"),
    "set_overdraft_limit": lambda b, u: b.set_overdraft_limit("acme", D("1"), user=u),
    "set_spending_limit": lambda b, u: b.set_spending_limit("acme", D("1"), user=u),
    "grant_role": lambda b, u: b.access.grant_role("acme", u, "viewer"),
    "revoke_role": lambda b, u: b.access.revoke_role("acme", u, "viewer"),
    "roles_of": lambda b, u: b.access.roles_of("acme", u),
    "create_key": lambda b, u: b.keys.create_key(user=u, mandate="acme"),
    "allowed_providers": lambda b, u: b.allowed_providers("acme", u),
    "is_provider_allowed": lambda b, u: b.is_provider_allowed("acme", u, "openai"),
    "balances_for_user": lambda b, u: b.balances_for_user(u),
    "is_sysadmin": lambda b, u: b.access.is_sysadmin(u),
    "history": lambda b, u: b.history("acme", user=u).entries,
    "usage_report": lambda b, u: b.usage_report("acme", user=u),
}


def answer(call: Callable[[Billing, str], Any], who: Billing, user: str) -> tuple[Any, ...]:
    """What the caller sees, with the name it asked about taken out."""
    try:
        result = call(who, user)
    except aibill.AibillError as exc:
        return ("error", exc.code, exc.message.replace(repr(user), "<user>"))
    return ("ok", repr(result).replace(user, "<user>"))


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_a_mandates_keys_cannot_tell_a_stranger_from_a_ghost(acme: Billing, name: str) -> None:
    call = OPERATIONS[name]
    for who in (principal(acme, "alice", *Scope), principal(acme, "gw", Scope.USE, Scope.READ)):
        before = (acme.balance("acme"), acme.history("acme").entries)
        stranger, ghost = answer(call, who, STRANGER), answer(call, who, GHOST)
        assert stranger == ghost, (name, who.principal.user)
        assert "unknown_user" not in stranger
        assert (acme.balance("acme"), acme.history("acme").entries) == before
    assert acme.users() == sorted(["alice", "gw", STRANGER])  # nothing was registered


def test_the_system_and_system_admins_are_told_unknown_user(acme: Billing) -> None:
    acme.add_user("root")
    acme.access.add_sysadmin("root")
    root = acme.as_principal(Principal(PrincipalKind.SYSADMIN, "root", None, frozenset(Scope)))
    for who in (acme, root):
        with pytest.raises(aibill.UnknownUser):
            who.hold("acme", amount=D("1"), user=GHOST, idempotency_key="g")
        with pytest.raises(aibill.NotAMember):
            who.hold("acme", amount=D("1"), user=STRANGER, idempotency_key="s")
        with pytest.raises(aibill.UnknownUser):
            who.access.grant_role("acme", GHOST, "viewer")
        with pytest.raises(aibill.UnknownUser):
            who.keys.create_key(user=GHOST, mandate="acme")


def test_adding_a_member_registers_the_identity_the_same_way(acme: Billing) -> None:
    """``add_member`` of a name nobody registered registers it: the admin's
    answer is the same, the mandate's audit log says "member.add" for both, and
    only the platform's audit log records the new identity."""
    admin = principal(acme, "alice", *Scope)
    assert admin.add_member("acme", STRANGER, role="viewer") == ["viewer"]
    assert admin.add_member("acme", GHOST, role="viewer") == ["viewer"]
    members = {m.user: m.roles for m in acme.members("acme")}
    assert members[STRANGER] == members[GHOST] == ("viewer",)
    mandate_log = [(r.action, r.target) for r in acme.audit_log("acme").records]
    assert ("member.add", STRANGER) in mandate_log and ("member.add", GHOST) in mandate_log
    assert ("user.add", GHOST) not in mandate_log
    assert ("user.add", GHOST) in [(r.action, r.target) for r in acme.audit_log(None).records]
    with pytest.raises(aibill.InvalidRequest):  # a bad role: nothing registered
        admin.add_member("acme", "nobody-yet", role="no-such-role")
    assert "nobody-yet" not in acme.users()


@pytest.fixture
def http(acme: Billing) -> Iterator[tuple[TestClient, dict[str, str]]]:
    keys = {  # the use key first: the admin's last call makes both names members
        "use": acme.keys.create_key(
            user="gw", mandate="acme", scopes=["billing:use", "billing:read"]
        ),
        "admin": acme.keys.create_key(user="alice", mandate="acme", scopes=["billing:admin"]),
    }
    with TestClient(create_app(acme, sweep_interval_s=0)) as client:
        yield client, {k: v.secret for k, v in keys.items()}


ROUTES: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
    ("POST", "/v1/mandates/acme/holds", {"amount": "1", "user": "{u}"}),
    ("POST", "/v1/mandates/acme/usage", {"amount": "1", "user": "{u}"}),
    ("POST", "/v1/mandates/acme/check", {"estimate": "1", "user": "{u}"}),
    ("POST", "/v1/mandates/acme/credits", {"amount": "1", "user": "{u}"}),
    ("PUT", "/v1/mandates/acme/limits", {"amount": "1", "user": "{u}"}),
    ("PUT", "/v1/mandates/acme/overdraft-limit", {"amount": "1", "user": "{u}"}),
    ("POST", "/v1/mandates/acme/keys", {"user": "{u}"}),
    ("GET", "/v1/mandates/acme/balance?user={u}", None),
    ("GET", "/v1/mandates/acme/entries?user={u}", None),
    ("GET", "/v1/mandates/acme/users/{u}/roles", None),
    ("PUT", "/v1/mandates/acme/users/{u}/roles/viewer", None),
    ("DELETE", "/v1/mandates/acme/users/{u}/roles/viewer", None),
    ("GET", "/v1/mandates/acme/users/{u}/providers", None),
    ("GET", "/v1/mandates/acme/users/{u}/providers/openai", None),
    ("GET", "/v1/users/{u}/balances", None),
    ("GET", "/v1/sysadmins/{u}", None),
    # last: it makes both members (201 either way)
    ("POST", "/v1/mandates/acme/members", {"user": "{u}", "role": "viewer"}),
)


def _http_answer(client: TestClient, key: str, method: str, path: str, body: Any, user: str) -> Any:
    filled = None if body is None else {k: v.replace("{u}", user) for k, v in body.items()}
    r = client.request(
        method,
        path.replace("{u}", user),
        json=filled,
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"{method}{path}{user}"},
    )
    return r.status_code, r.text.replace(user, "<user>")


def test_over_http_every_route_that_takes_a_user_answers_alike(
    http: tuple[TestClient, dict[str, str]], acme: Billing
) -> None:
    client, keys = http
    for who, key in keys.items():
        for method, path, body in ROUTES:
            stranger = _http_answer(client, key, method, path, body, STRANGER)
            ghost = _http_answer(client, key, method, path, body, GHOST)
            assert stranger == ghost, (who, method, path)
            assert "unknown_user" not in stranger[1], (who, method, path)
            if path.endswith("/members"):
                assert stranger[0] == (201 if who == "admin" else 403)
    assert acme.verify() == []
