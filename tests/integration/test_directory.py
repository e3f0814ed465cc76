"""What a principal can list (mandates, members, users, accounts, holds in
flight) and changing a mandate's billing model. SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

import aibill
from aibill import Billing, BillingModel, HoldStatus, ManualClock
from aibill.domain.principal import Principal, PrincipalKind, Scope


def member(mandate: str, user: str) -> Principal:
    return Principal(PrincipalKind.USER, user=user, mandate=mandate, scopes=frozenset(Scope))


@pytest.fixture
def world(billing: Billing) -> Billing:
    """acme (pool, CHF) with alice (admin) and bob (viewer); globex (wallets,
    EUR) with carol (member) and bob (member); dave registered, member of none."""
    billing.create_mandate("acme", billing_model="prepay_mandate", currency="CHF")
    billing.create_mandate("globex", billing_model="prepay_user", currency="EUR")
    for user in ("alice", "bob", "carol", "dave"):
        billing.add_user(user)
    billing.add_member("acme", "alice", role="admin")
    billing.add_member("acme", "bob", role="viewer")
    billing.add_member("globex", "carol")
    billing.add_member("globex", "bob")
    return billing


def test_the_system_sees_every_mandate_a_member_only_its_own(world: Billing) -> None:
    assert [(m.id, m.billing_model, m.currency) for m in world.mandates()] == [
        ("acme", BillingModel.PREPAY_MANDATE, "CHF"),
        ("globex", BillingModel.PREPAY_USER, "EUR"),
    ]
    alice = world.as_principal(member("acme", "alice"))
    assert [m.id for m in alice.mandates()] == ["acme"]
    sysadmin = world.as_principal(Principal(PrincipalKind.SYSADMIN, scopes=frozenset(Scope)))
    assert [m.id for m in sysadmin.mandates()] == ["acme", "globex"]


def test_members_come_with_their_roles(world: Billing) -> None:
    world.access.grant_role("acme", "bob", "member")
    got = {m.user: m.roles for m in world.members("acme")}
    assert got == {"alice": ("admin",), "bob": ("member", "viewer")}
    viewer = world.as_principal(member("acme", "bob"))
    assert [m.user for m in viewer.members("acme")] == ["alice", "bob"]
    with pytest.raises(aibill.UnknownMandate):
        world.members("nope")


def test_users_are_listed_for_the_platform_only(world: Billing) -> None:
    assert world.users() == ["alice", "bob", "carol", "dave"]
    with pytest.raises(aibill.PermissionDenied):
        world.as_principal(member("acme", "alice")).users()


def test_accounts_list_the_pool_or_every_wallet(world: Billing, clock: ManualClock) -> None:
    world.credit("globex", D("5"), user="carol", idempotency_key="c")
    world.credit("globex", D("2"), user="bob", idempotency_key="b")
    world.hold("globex", amount=D("1.5"), user="carol", ttl_s=60, idempotency_key="h")
    got = {
        (a.account, a.user): (a.balance, a.available, a.pending) for a in world.accounts("globex")
    }
    assert got == {
        ("user:bob", "bob"): (D("2"), D("2"), D("0")),
        ("user:carol", "carol"): (D("5"), D("3.5"), D("1.5")),
    }
    assert [a.account for a in world.accounts("acme")] == ["pool"]
    clock.advance(61)
    # The overdue hold no longer reserves anything, and it is expired on the way.
    carol = next(a for a in world.accounts("globex") if a.user == "carol")
    assert (carol.available, carol.pending) == (D("5"), D("0"))
    assert world.verify() == []


def test_open_holds_lists_what_is_in_flight_newest_first(
    world: Billing, clock: ManualClock
) -> None:
    world.credit("acme", D("10"), idempotency_key="fund")
    first = world.hold("acme", amount=D("1"), user="alice", ttl_s=60, idempotency_key="1")
    clock.advance(1)
    # alice: bob is a viewer of acme, who may not make it pay
    second = world.hold("acme", amount=D("2"), user="alice", ttl_s=600, idempotency_key="2")
    third = world.hold("acme", amount=D("3"), ttl_s=600, idempotency_key="3")
    world.release(third.id)
    assert [h.id for h in world.open_holds("acme")] == [second.id, first.id]
    assert [h.id for h in world.open_holds("acme", limit=1)] == [second.id]
    clock.advance(60)
    assert [h.id for h in world.open_holds("acme")] == [second.id]
    with pytest.raises(aibill.InvalidRequest) as err:
        world.open_holds("acme", limit=0)
    assert err.value.details["field"] == "limit"


def test_billing_model_change_opens_the_new_accounts_and_keeps_the_money(
    world: Billing,
) -> None:
    world.credit("acme", D("10"), idempotency_key="fund")
    changed = world.set_billing_model("acme", "prepay_user")
    assert changed.billing_model is BillingModel.PREPAY_USER
    assert world.get_mandate("acme").billing_model is BillingModel.PREPAY_USER
    accounts = {a.account: a.balance for a in world.accounts("acme")}
    assert accounts == {"pool": D("10"), "user:alice": D("0"), "user:bob": D("0")}
    # New operations follow the new model: alice's wallet is empty.
    with pytest.raises(aibill.InsufficientBalance):
        world.hold("acme", amount=D("1"), user="alice", idempotency_key="h")
    world.credit("acme", D("3"), user="alice", idempotency_key="w")
    assert world.balance("acme", user="alice").balance == D("3")
    # Back to the pool: it still holds its 10.
    world.set_billing_model("acme", BillingModel.UNLIMITED)
    assert world.balance("acme").balance == D("10")
    assert world.verify() == []
    actions = [r.action for r in world.audit_log("acme").records]
    assert actions.count("mandate.billing_model") == 2


def test_billing_model_change_is_refused_while_holds_are_in_flight(
    world: Billing, clock: ManualClock
) -> None:
    world.credit("acme", D("10"), idempotency_key="fund")
    hold = world.hold("acme", amount=D("1"), ttl_s=60, idempotency_key="h")
    with pytest.raises(aibill.HoldsInFlight) as err:
        world.set_billing_model("acme", "prepay_user")
    assert err.value.code == "holds_in_flight"
    assert "1 hold" in err.value.message
    assert world.get_mandate("acme").billing_model is BillingModel.PREPAY_MANDATE
    # Once the hold has expired, the change goes through (and expires it).
    clock.advance(60)
    world.set_billing_model("acme", "prepay_user")
    assert world.get_hold(hold.id).status is HoldStatus.EXPIRED
    assert world.verify() == []


def test_billing_model_change_needs_an_admin_and_a_known_model(world: Billing) -> None:
    viewer = world.as_principal(member("acme", "bob"))
    with pytest.raises(aibill.PermissionDenied):
        viewer.set_billing_model("acme", "unlimited")
    with pytest.raises(aibill.InvalidRequest) as err:
        world.set_billing_model("acme", "postpaid")
    assert err.value.details["field"] == "billing_model"
    admin = world.as_principal(member("acme", "alice"))
    before = len(world.audit_log("acme").records)
    assert admin.set_billing_model("acme", "prepay_mandate").billing_model is (
        BillingModel.PREPAY_MANDATE
    )
    assert len(world.audit_log("acme").records) == before  # unchanged: nothing audited
    admin.set_billing_model("acme", "unlimited")
    assert world.audit_log("acme").records[0].actor == "user:alice"


def test_a_member_is_added_only_with_a_role_that_exists(world: Billing) -> None:
    world.add_user("erin")
    for role, why in (
        ("no-such-role", "has no role"),
        ("sysadmin", "platform-wide"),
        ("Bad Role", "lowercase"),
    ):
        with pytest.raises(aibill.InvalidRequest) as err:
            world.add_member("acme", "erin", role=role)
        assert why in err.value.message
    assert "erin" not in [m.user for m in world.members("acme")]
    world.access.define_role("acme", "auditor")
    world.add_member("acme", "erin", role="auditor")
    assert [m.roles for m in world.members("acme") if m.user == "erin"] == [("auditor",)]


def test_adding_an_existing_member_with_a_role_grants_it_once(world: Billing) -> None:
    """``add_member`` of someone already a member never claims a change it did not
    make: the role they lack is granted (and audited as a grant); asked again,
    nothing changes and nothing is audited."""
    alice = world.as_principal(member("acme", "alice"))

    def grants() -> list[tuple[str | None, object]]:
        records = world.audit_log("acme", limit=1000).records
        return [(r.target, r.after) for r in records if r.action == "role.grant"]

    assert alice.add_member("acme", "bob", role="admin") == ["admin", "viewer"]
    assert next(m for m in world.members("acme") if m.user == "bob").roles == ("admin", "viewer")
    assert grants() == [("bob", {"roles": ["admin", "viewer"]})]
    assert alice.add_member("acme", "bob", role="admin") == ["admin", "viewer"]
    assert alice.add_member("acme", "bob", role=None) == ["admin", "viewer"]
    assert len(grants()) == 1
    with pytest.raises(aibill.InvalidRequest):
        alice.add_member("acme", "bob", role="no-such-role")
    assert alice.add_member("acme", "erin", role="viewer") == ["viewer"]
