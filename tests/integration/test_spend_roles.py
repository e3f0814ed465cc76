"""Only a role that may spend makes a mandate pay (DESIGN rule 10).

Table-driven: role (admin, member, viewer, a member with no role, a custom
role given the spend permission, a custom role given only the providers) x
operation (hold, capture, release, record_usage, record_usage of usage that
already happened, check) x (naming a provider, a plain amount) x backend
(the ``billing`` fixture: SQLite and PostgreSQL). Each key is a member's
``billing:use`` key acting for its own user. A refusal is 403
``permission_denied`` (or ``provider_not_allowed``), stored under the
idempotency key like every business refusal, and changes no balance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any

import pytest
from fastapi.testclient import TestClient

import aibill
from aibill import Billing
from aibill.api import create_app
from aibill.compat import gateway
from aibill.domain.principal import Principal, PrincipalKind, Scope

ROLES = ("admin", "member", "viewer", "none", "spender", "caller")
"""``spender``: a custom role with ``view`` on ``resource.billing.spend`` only;
``caller``: a custom role with ``view`` on ``resource.aicore.*`` only."""

OK, DENIED, PROVIDER = "ok", "permission_denied", "provider_not_allowed"
MARKED = "ok, marked provider_not_allowed"

# What each role's own use key gets: (operation, form) -> outcome per role, in
# the order of ROLES.
EXPECTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("hold", "amount"): (OK, OK, DENIED, DENIED, OK, DENIED),
    ("hold", "provider"): (OK, OK, PROVIDER, PROVIDER, PROVIDER, OK),
    ("record_usage", "amount"): (OK, OK, DENIED, DENIED, OK, DENIED),
    ("record_usage", "provider"): (OK, OK, PROVIDER, PROVIDER, PROVIDER, OK),
    ("record_usage_happened", "amount"): (OK, OK, DENIED, DENIED, OK, DENIED),
    ("record_usage_happened", "provider"): (OK, OK, DENIED, DENIED, MARKED, OK),
    ("check", "amount"): (OK, OK, DENIED, DENIED, OK, DENIED),
    ("check", "provider"): (OK, OK, PROVIDER, PROVIDER, PROVIDER, OK),
    # another user's hold (placed for "payer"), as placed: by amount, or naming
    # the provider the caller role may use
    ("capture", "amount"): (OK, OK, DENIED, DENIED, OK, DENIED),
    ("capture", "provider"): (OK, OK, DENIED, DENIED, OK, OK),
    # releasing frees money: billing:use is enough
    ("release", "amount"): (OK,) * 6,
    ("release", "provider"): (OK,) * 6,
}


@dataclass
class World:
    billing: Billing
    keys: dict[str, Billing]  # role -> its user's billing:use principal

    def state(self) -> tuple[Any, ...]:
        """Everything a move of money would change."""
        b = self.billing
        return (b.balance("acme"), len(b.history("acme").entries), len(b.open_holds("acme")))


def use_key(billing: Billing, user: str, mandate: str = "acme") -> Billing:
    return billing.as_principal(
        Principal(PrincipalKind.USER, user, mandate, frozenset({Scope.USE}))
    )


@pytest.fixture
def world(billing: Billing) -> World:
    billing.access.register_provider("openai")
    billing.create_mandate("acme", currency="USD")
    billing.credit("acme", D("100"), idempotency_key="fund")
    billing.access.define_role("acme", "spender")
    billing.access.add_rule("acme", "spender", "resource", "resource.billing.spend", ["view"])
    billing.access.define_role("acme", "caller")
    billing.access.add_rule("acme", "caller", "resource", "resource.aicore.*", ["view"])
    billing.add_member("acme", "payer", role="member")
    for role in ROLES:
        billing.add_member("acme", f"u-{role}", role=None if role == "none" else role)
    return World(billing, {role: use_key(billing, f"u-{role}") for role in ROLES})


def operation(op: str, form: str, hold_id: str | None, key: str) -> Callable[[Billing, str], Any]:
    """The call, as ``(principal, user) -> result``, under idempotency key ``key``."""
    tag = {"provider": "openai"} if form == "provider" else {}
    if op == "hold":
        return lambda b, u: b.hold("acme", amount=D("2"), user=u, idempotency_key=key, **tag)
    if op.startswith("record_usage"):
        happened = op.endswith("happened")
        return lambda b, u: b.record_usage(
            "acme", amount=D("2"), user=u, already_happened=happened, idempotency_key=key, **tag
        )
    if op == "check":
        return lambda b, u: b.check("acme", estimate=D("2"), user=u, **tag)
    assert hold_id is not None
    if op == "capture":
        return lambda b, u: b.capture(hold_id, amount=D("1.5"), idempotency_key=key)
    return lambda b, u: b.release(hold_id, idempotency_key=key)


def outcome(result: Any) -> str:
    if isinstance(result, aibill.CheckResult):
        return OK if result.allowed else result.reason
    if isinstance(result, aibill.Entry) and result.provider_not_allowed:
        return MARKED
    return OK


@pytest.mark.parametrize("form", ["amount", "provider"])
@pytest.mark.parametrize(
    "op", ["hold", "capture", "release", "record_usage", "record_usage_happened", "check"]
)
def test_who_may_make_the_mandate_pay(world: World, op: str, form: str) -> None:
    for role, expected in zip(ROLES, EXPECTED[(op, form)], strict=True):
        hold_id = None
        if op in ("capture", "release"):
            tag = {"provider": "openai"} if form == "provider" else {}
            placed = world.billing.hold(
                "acme", amount=D("2"), user="payer", idempotency_key=f"p-{role}", **tag
            )
            hold_id = placed.id
        call = operation(op, form, hold_id, f"k-{role}")
        key = world.keys[role]
        before = world.state()
        try:
            got = outcome(call(key, f"u-{role}"))
        except aibill.AibillError as exc:
            got = exc.code
            assert isinstance(exc, aibill.PermissionDenied | aibill.ProviderNotAllowed), exc
            assert world.state() == before, f"{role} {op} {form} changed the ledger"
            if op != "capture":
                assert exc.details["user"] == f"u-{role}"
            if op in ("hold", "record_usage", "record_usage_happened"):
                with pytest.raises(aibill.AibillError) as again:  # stored: replayed
                    call(key, f"u-{role}")
                assert (again.value.code, again.value.message) == (exc.code, exc.message)
        assert got == expected, f"{role}: {op} by {form}"
        if op == "check":
            assert world.state() == before  # a check changes nothing
        if hold_id is not None:
            if got != OK:
                assert world.billing.get_hold(hold_id).status is aibill.HoldStatus.PENDING
            if world.billing.get_hold(hold_id).status is aibill.HoldStatus.PENDING:
                world.billing.release(hold_id)  # the next role starts clean
    assert world.billing.verify() == []


# ------------------------------------------------------- naming another user


def test_a_viewers_key_cannot_make_the_mandate_pay_by_naming_a_member(world: World) -> None:
    """The principal's own user must be allowed to spend, whoever the call names,
    with or without a provider, before or after the fact."""
    viewer = world.keys["viewer"]
    calls = {
        "hold": lambda k: viewer.hold("acme", amount=D("2"), user="payer", idempotency_key=k),
        "hold, provider": lambda k: viewer.hold(
            "acme", amount=D("2"), user="payer", provider="openai", idempotency_key=k
        ),
        "usage": lambda k: viewer.record_usage(
            "acme", amount=D("2"), user="payer", idempotency_key=k
        ),
        "usage, happened": lambda k: viewer.record_usage(
            "acme", amount=D("2"), user="payer", already_happened=True, idempotency_key=k
        ),
        "usage, happened, provider": lambda k: viewer.record_usage(
            "acme",
            amount=D("2"),
            user="payer",
            provider="openai",
            already_happened=True,
            idempotency_key=k,
        ),
    }
    before = world.state()
    for name, call in calls.items():
        with pytest.raises(aibill.PermissionDenied) as refused:
            call(name)
        assert refused.value.code == DENIED, name
        assert refused.value.details["user"] == "u-viewer", name
    check = viewer.check("acme", estimate=D("1"), user="payer")
    assert (check.allowed, check.reason) == (False, DENIED)
    assert world.state() == before


def test_the_billed_user_must_be_allowed_to_spend_before_the_fact(world: World) -> None:
    """A member's key (or the library itself) cannot bill a viewer for a call
    about to start; usage that already happened is recorded (rule 5)."""
    before = world.state()
    for who, principal in (("member's key", world.keys["member"]), ("system", world.billing)):
        with pytest.raises(aibill.PermissionDenied) as refused:
            principal.hold("acme", amount=D("2"), user="u-viewer", idempotency_key=f"h {who}")
        assert refused.value.details["user"] == "u-viewer"
        with pytest.raises(aibill.ProviderNotAllowed):
            principal.hold(
                "acme",
                amount=D("2"),
                user="u-viewer",
                provider="openai",
                idempotency_key=f"hp {who}",
            )
        assert principal.check("acme", estimate=D("1"), user="u-none").reason == DENIED
    assert world.state() == before
    entry = world.keys["member"].record_usage(
        "acme", amount=D("2"), user="u-viewer", already_happened=True, idempotency_key="after"
    )
    assert entry.amount == D("2") and entry.user == "u-viewer"
    assert world.billing.balance("acme").balance == D("98")


def test_a_hold_of_ones_own_is_captured_even_without_the_spend_permission(
    world: World,
) -> None:
    """A caller (providers, no spend permission) places its own hold naming the
    provider it may use, and captures it; the call happened. A viewer cannot
    capture that hold."""
    caller = world.keys["caller"]
    hold = caller.hold("acme", amount=D("2"), provider="openai", idempotency_key="own")
    with pytest.raises(aibill.PermissionDenied):
        world.keys["viewer"].capture(hold.id, amount=D("1"))
    assert caller.capture(hold.id, amount=D("1.25")).amount == D("1.25")
    own = caller.hold(
        "acme", amount=D("2"), user="u-caller", provider="openai", idempotency_key="2"
    )
    world.billing.access.revoke_role("acme", "u-caller", "caller")
    assert caller.capture(own.id, amount=D("2")).amount == D("2")  # its own user's hold


def test_trusted_principals_and_granting_the_permission(world: World, billing: Billing) -> None:
    """The library itself and a system admin spend without a user; a custom
    role given the spend permission may spend from the next call on, while a
    refusal already stored under a key is replayed (the first outcome stands)."""
    assert billing.hold("acme", amount=D("1"), idempotency_key="sys").amount == D("1")
    billing.add_user("root")
    billing.access.add_sysadmin("root")
    root = billing.as_principal(Principal(PrincipalKind.SYSADMIN, "root", None, frozenset(Scope)))
    assert root.hold("acme", amount=D("1"), idempotency_key="root").amount == D("1")
    none = world.keys["none"]
    with pytest.raises(aibill.PermissionDenied):
        none.hold("acme", amount=D("1"), idempotency_key="before")
    billing.access.define_role("acme", "gateway")
    billing.access.add_rule("acme", "gateway", "resource", "resource.billing.*", ["view"])
    billing.access.grant_role("acme", "u-none", "gateway")
    with pytest.raises(aibill.PermissionDenied):
        none.hold("acme", amount=D("1"), idempotency_key="before")
    assert none.hold("acme", amount=D("1"), idempotency_key="after").amount == D("1")


def test_the_compat_gateway_keeps_working(world: World, billing: Billing) -> None:
    """The seed's callers: usage that happened is recorded for any member (the
    library is trusted); a viewer's balance check answers "not allowed"."""
    gateway.configure(billing)
    try:
        viewer = gateway.getService(type("U", (), {"id": "u-viewer"})(), "acme")
        member = gateway.getService(type("U", (), {"id": "u-member"})(), "acme")
        assert member.checkBalance(1).allowed
        result = viewer.checkBalance(1)
        assert (result.allowed, result.reasonCode) == (False, DENIED)
        recorded = viewer.recordUsage(1)
        assert recorded is not None and recorded.exact.user == "u-viewer"
        assert member.recordUsage(1) is not None
    finally:
        gateway.configure(None)


def test_over_http_a_viewers_hold_is_403_and_replayed(world: World, billing: Billing) -> None:
    key = billing.keys.create_key(user="u-viewer", mandate="acme", scopes=["billing:use"])
    headers = {"Authorization": f"Bearer {key.secret}", "Idempotency-Key": "h1"}
    before = world.state()
    with TestClient(create_app(billing, sweep_interval_s=0)) as client:
        for _ in range(2):
            r = client.post("/v1/mandates/acme/holds", json={"amount": "2"}, headers=headers)
            assert r.status_code == 403, r.text
            body = r.json()
            assert body["code"] == DENIED and "u-viewer" in body["detail"]
            assert r.headers["content-type"].startswith("application/problem+json")
    assert world.state() == before
