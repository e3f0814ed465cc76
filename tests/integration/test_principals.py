"""Who may do what: a principal of one mandate cannot touch another, admin
changes need the admin role, a key's scopes bound what it may do, and every
administrative change is audited in its own transaction. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import insert

import aibill
from aibill import Billing, ManualClock
from aibill.domain.principal import Principal, PrincipalKind, Scope
from aibill.store.schema import platform_admins


def grant(billing: Billing, mandate: str, user: str, role: str) -> None:
    billing.access.grant_role(mandate, user, role)


def member(mandate: str, user: str, *scopes: Scope) -> Principal:
    return Principal(
        PrincipalKind.USER, user=user, mandate=mandate, scopes=frozenset(scopes or Scope)
    )


@pytest.fixture
def two(billing: Billing) -> Billing:
    """Mandates a (alice, admin) and b (bob, admin), both funded, a hold open in a."""
    for mandate, user in (("a", "alice"), ("b", "bob")):
        billing.create_mandate(mandate)
        billing.add_user(user)
        billing.add_member(mandate, user)
        grant(billing, mandate, user, "admin")
        billing.credit(mandate, D("10"), idempotency_key="fund")
    billing.hold("a", amount=D("1"), user="alice", idempotency_key="open")
    return billing


def a_hold_id(billing: Billing) -> str:
    return billing.history("a", limit=1).entries[0].mandate + ":" + "x"


OPERATIONS: dict[str, Callable[[Billing, str], Any]] = {
    "get_mandate": lambda b, m: b.get_mandate(m),
    "add_member": lambda b, m: b.add_member(m, "bob"),
    "set_overdraft_limit": lambda b, m: b.set_overdraft_limit(m, D("5")),
    "credit": lambda b, m: b.credit(m, D("1"), idempotency_key="x"),
    "hold": lambda b, m: b.hold(m, amount=D("1"), idempotency_key="x"),
    "estimate": lambda b, m: b.estimate(
        m, provider="openai", model="gpt-4o", input_tokens=1, max_output_tokens=1
    ),
    "check": lambda b, m: b.check(m, estimate=D("1")),
    "record_usage": lambda b, m: b.record_usage(m, amount=D("1"), idempotency_key="x"),
    "capture": lambda b, m: b.capture(f"{m}:hold_0", amount=D("1")),
    "release": lambda b, m: b.release(f"{m}:hold_0"),
    "get_hold": lambda b, m: b.get_hold(f"{m}:hold_0"),
    "balance": lambda b, m: b.balance(m),
    "history": lambda b, m: b.history(m),
    "verify": lambda b, m: b.verify(m),
    "set_spending_limit": lambda b, m: b.set_spending_limit(m, D("1"), user="bob"),
    "spending_limits": lambda b, m: b.spending_limits(m),
    "usage_report": lambda b, m: b.usage_report(m),
    "iter_usage_report_csv": lambda b, m: b.iter_usage_report_csv(m),
    "export_history_csv": lambda b, m: b.iter_history_csv(m),
    "audit_log": lambda b, m: b.audit_log(m),
    "sweep_expired": lambda b, m: b.sweep_expired(m),
    "allowed_providers": lambda b, m: b.allowed_providers(m, "alice"),
    "access.allowed_providers": lambda b, m: b.access.allowed_providers(m, "alice"),
    "pricing.price": lambda b, m: b.pricing.price(
        m, "CHF", "openai", "gpt-4o", aibill.Usage(input_tokens=1)
    ),
    "set_markup": lambda b, m: b.pricing.set_markup(D("1"), mandate=m),
    "clear_markup": lambda b, m: b.pricing.clear_markup(mandate=m),
    "markups": lambda b, m: b.pricing.markups(m),
    "set_custom_price": lambda b, m: b.pricing.set_custom_price(
        "openai", "x", input_mtok=D("1"), output_mtok=D("1"), mandate=m
    ),
    "custom_prices": lambda b, m: b.pricing.custom_prices(m),
    "grant_role": lambda b, m: b.access.grant_role(m, "alice", "viewer"),
    "revoke_role": lambda b, m: b.access.revoke_role(m, "alice", "admin"),
    "roles_of": lambda b, m: b.access.roles_of(m, "alice"),
    "define_role": lambda b, m: b.access.define_role(m, "auditor"),
    "custom_roles": lambda b, m: b.access.custom_roles(m),
    "add_rule": lambda b, m: b.access.add_rule(m, "viewer", "resource", "*", ["view"]),
    "remove_rule": lambda b, m: b.access.remove_rule(m, "rule_0000000000000000"),
    "rules": lambda b, m: b.access.rules(m),
    "create_key": lambda b, m: b.keys.create_key(user="alice", mandate=m),
    "list_keys": lambda b, m: b.keys.list_keys(m),
    "get_key": lambda b, m: b.keys.get_key("0123456789ab", mandate=m),
    "revoke_key": lambda b, m: b.keys.revoke_key("0123456789ab", mandate=m),
    "set_billing_model": lambda b, m: b.set_billing_model(m, "unlimited"),
    "members": lambda b, m: b.members(m),
    "accounts": lambda b, m: b.accounts(m),
    "open_holds": lambda b, m: b.open_holds(m),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_principal_of_b_cannot_touch_a(two: Billing, operation: str) -> None:
    """Every operation as bob (admin of b, every scope) against mandate a is
    refused, writes nothing, and reads the same as for a mandate that does not
    exist."""
    bob = two.as_principal(member("b", "bob"))
    before = (two.balance("a"), two.history("a").entries, two.audit_log("a").records)
    with pytest.raises(aibill.PermissionDenied) as real:
        OPERATIONS[operation](bob, "a")
    with pytest.raises(aibill.PermissionDenied) as missing:
        OPERATIONS[operation](bob, "no-such-mandate")
    assert real.value.code == missing.value.code == "permission_denied"
    assert real.value.message == missing.value.message
    assert (two.balance("a"), two.history("a").entries, two.audit_log("a").records) == before
    assert not bob.is_provider_allowed("a", "alice", "openai")
    assert not bob.access.is_provider_allowed("a", "alice", "openai")


def test_platform_settings_need_a_system_admin(two: Billing) -> None:
    bob = two.as_principal(member("b", "bob"))
    for call in (
        lambda: bob.pricing.set_exchange_rate("USD", "CHF", D("0.8")),
        lambda: bob.pricing.set_markup(D("1")),
        lambda: bob.access.register_provider("openai"),
        lambda: bob.access.set_provider_enabled("openai", False),
        lambda: bob.access.add_sysadmin("bob"),
        lambda: bob.keys.create_key(user="bob", mandate=None),
        lambda: bob.keys.list_keys(None),
    ):
        with pytest.raises(aibill.PermissionDenied):
            call()
    assert two.audit_log().records[0].action == "user.add"


def test_the_real_hold_id_of_a_is_refused_to_b(two: Billing) -> None:
    hold_id = two.history("a", limit=1).entries[0].id  # any id of a's
    bob = two.as_principal(member("b", "bob"))
    open_hold = two.hold("a", amount=D("1"), idempotency_key="h2")
    for call in (
        lambda: bob.capture(open_hold.id, amount=D("1")),
        lambda: bob.release(open_hold.id),
        lambda: bob.get_hold(open_hold.id),
    ):
        with pytest.raises(aibill.PermissionDenied):
            call()
    assert two.get_hold(open_hold.id).status == aibill.HoldStatus.PENDING
    assert hold_id


def test_a_members_key_works_in_its_own_mandate(two: Billing) -> None:
    alice = two.as_principal(member("a", "alice"))
    hold = alice.hold("a", amount=D("2"), user="alice", idempotency_key="own")
    assert alice.capture(hold.id, amount=D("1.5")).amount == D("1.5")
    assert alice.balance("a").balance == D("8.5")


def test_admin_changes_need_the_admin_role(two: Billing) -> None:
    two.add_user("carol")
    two.add_member("a", "carol")
    carol = two.as_principal(member("a", "carol"))
    with pytest.raises(aibill.PermissionDenied, match="not an admin"):
        carol.credit("a", D("100"), idempotency_key="mine")
    with pytest.raises(aibill.PermissionDenied):
        carol.set_spending_limit("a", D("100"), user="carol")
    # What a member may do: use and read.
    assert carol.hold("a", amount=D("1"), user="carol", idempotency_key="use").amount == D("1")
    assert carol.balance("a").balance == D("10")
    assert [r.action for r in two.audit_log("a").records].count("credit") == 1


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        ((Scope.READ,), {"balance"}),
        ((Scope.USE,), {"balance", "hold"}),
        ((Scope.ADMIN,), {"balance", "hold", "credit"}),
    ],
)
def test_a_keys_scopes_bound_what_it_may_do(
    two: Billing, scopes: tuple[Scope, ...], allowed: set[str]
) -> None:
    alice = two.as_principal(member("a", "alice", *scopes))
    calls = {
        "balance": lambda: alice.balance("a"),
        "hold": lambda: alice.hold("a", amount=D("1"), idempotency_key="s"),
        "credit": lambda: alice.credit("a", D("1"), idempotency_key="s2"),
    }
    for name, call in calls.items():
        if name in allowed:
            call()
        else:
            with pytest.raises(aibill.PermissionDenied, match="scopes"):
                call()


def test_platform_operations_need_a_system_admin(two: Billing) -> None:
    bob = two.as_principal(member("b", "bob"))
    with pytest.raises(aibill.PermissionDenied):
        bob.create_mandate("c")
    with pytest.raises(aibill.PermissionDenied):
        bob.verify()
    with pytest.raises(aibill.PermissionDenied):
        bob.audit_log()
    with two.engine.begin() as conn:
        conn.execute(insert(platform_admins).values(user_id="bob", created_at=datetime.now(UTC)))
    root = two.as_principal(Principal(PrincipalKind.SYSADMIN, user="bob"))
    root.create_mandate("c")
    assert root.credit("a", D("1"), idempotency_key="root").amount == D("1")
    assert root.verify() == []
    assert [r.action for r in root.audit_log().records][:1] == ["user.add"]


def test_administrative_changes_are_audited(two: Billing, clock: ManualClock) -> None:
    alice = two.as_principal(member("a", "alice"))
    alice.credit("a", D("5"), reason="admin", idempotency_key="c1")
    alice.credit("a", D("5"), reason="admin", idempotency_key="c1")  # a replay: no record
    alice.set_overdraft_limit("a", D("2"))
    alice.set_spending_limit("a", D("3"), user="alice", period="day")
    alice.set_spending_limit("a", None, user="alice", period="day")
    with pytest.raises(aibill.InvalidAmount):
        alice.credit("a", D("-1"), idempotency_key="bad")  # refused: no record
    records = alice.audit_log("a").records
    assert [r.action for r in records] == [
        "limit.remove",
        "limit.set",
        "account.overdraft_limit",
        "credit",
        "credit",  # the funding credit, by the system
        "role.grant",
        "member.add",
        "mandate.create",
    ]
    newest_credit = records[3]
    assert newest_credit.actor == "user:alice"
    assert newest_credit.after is not None and newest_credit.after["amount"] == "5.000000"
    assert records[2].before == {"overdraft_limit": "0.000000"}
    assert records[2].after == {"overdraft_limit": "2.000000"}
    assert records[4].actor == "system"
    assert all(r.at == clock() for r in records)
    page = alice.audit_log("a", limit=2)
    rest = alice.audit_log("a", limit=10, cursor=page.cursor)
    assert [r.id for r in page.records + rest.records] == [r.id for r in records]


def test_audit_records_cannot_be_changed(two: Billing) -> None:
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError, match="append-only"), two.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log")
    assert two.audit_log("a").records


def test_as_principal_needs_a_principal(billing: Billing) -> None:
    with pytest.raises(aibill.InvalidRequest):
        billing.as_principal("alice")  # type: ignore[arg-type]


def test_pricing_settings_follow_the_same_rules(two: Billing) -> None:
    alice = two.as_principal(member("a", "alice"))
    bob = two.as_principal(member("b", "bob"))
    alice.pricing.set_markup(D("20"), mandate="a", provider="openai")
    alice.pricing.set_custom_price(
        "private", "tuned-1", input_mtok=D("1"), output_mtok=D("2"), mandate="a"
    )
    with pytest.raises(aibill.PermissionDenied):
        bob.pricing.set_markup(D("0"), mandate="a")
    with pytest.raises(aibill.PermissionDenied):
        bob.pricing.custom_prices("a")
    with pytest.raises(aibill.PermissionDenied):
        alice.pricing.set_exchange_rate("USD", "CHF", D("0.8"))  # platform-wide
    assert [r.action for r in two.audit_log("a").records][:2] == [
        "custom_price.set",
        "markup.set",
    ]
    two.pricing.set_exchange_rate("USD", "CHF", D("0.8"))
    platform = two.audit_log().records
    assert platform[0].action == "exchange_rate.set" and platform[0].actor == "system"
    assert two.pricing.markup_for("a", "openai", "gpt-4o") == D("20")


def test_an_api_key_acts_for_its_holder(two: Billing) -> None:
    alice = two.as_principal(member("a", "alice"))
    created = alice.keys.create_key(user="alice", mandate="a", scopes=["billing:use"])
    gateway = two.authenticate(created.secret)
    assert gateway.principal.user == "alice" and gateway.principal.mandate == "a"
    assert gateway.hold("a", amount=D("1"), idempotency_key="gw").amount == D("1")
    with pytest.raises(aibill.PermissionDenied):
        gateway.credit("a", D("1"), idempotency_key="gw2")  # a use key is not an admin key
    with pytest.raises(aibill.PermissionDenied):
        gateway.hold("b", amount=D("1"), idempotency_key="gw3")
    bob = two.as_principal(member("b", "bob"))
    with pytest.raises(aibill.PermissionDenied):
        bob.keys.create_key(user="alice", mandate="a")
    with pytest.raises(aibill.PermissionDenied):
        bob.keys.list_keys("a")
    alice.keys.revoke_key(created.info.key_id, mandate="a")
    with pytest.raises(aibill.InvalidApiKey) as refused:
        two.authenticate(created.secret)
    assert refused.value.code == "invalid_api_key"
    actions = [r.action for r in two.audit_log("a").records]
    assert actions[:2] == ["api_key.revoke", "api_key.create"]
    assert created.secret not in str(two.audit_log("a").records)


def test_roles_rules_and_the_registry_are_audited(two: Billing) -> None:
    alice = two.as_principal(member("a", "alice"))
    two.add_user("vera")
    two.add_member("a", "vera", role=None)
    alice.access.define_role("a", "auditor", "reads the books")
    alice.access.grant_role("a", "vera", "auditor")
    rule = alice.access.add_rule("a", "auditor", "data", "data.*", ["view"])
    alice.access.remove_rule("a", rule.rule_id)
    alice.access.revoke_role("a", "vera", "auditor")
    actions = [(r.action, r.actor) for r in two.audit_log("a").records[:5]]
    assert actions == [
        ("role.revoke", "user:alice"),
        ("rule.remove", "user:alice"),
        ("rule.add", "user:alice"),
        ("role.grant", "user:alice"),
        ("role.define", "user:alice"),
    ]
    records = two.audit_log("a").records
    assert (records[3].before, records[3].after) == ({"roles": []}, {"roles": ["auditor"]})
    assert records[1].before is not None and records[1].before["item"] == "data.*"
    two.access.register_provider("openai")
    two.access.set_provider_enabled("openai", False)
    two.access.add_sysadmin("bob")
    platform = two.audit_log().records[:3]
    assert [r.action for r in platform] == ["sysadmin.add", "provider.disable", "provider.register"]
    assert (platform[1].before, platform[1].after) == ({"enabled": True}, {"enabled": False})


NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_setting_repeated_unchanged_records_nothing(two: Billing) -> None:
    """Idempotent administrative calls: only a change is audited."""
    two.add_user("vera")
    repeat = [
        lambda: two.access.register_provider("openai", display_name="OpenAI"),
        lambda: two.access.add_sysadmin("vera"),
        lambda: two.access.define_role("a", "auditor", "reads the books"),
        lambda: two.access.add_rule("a", "auditor", "data", "data.*", ["view"]),
        lambda: two.pricing.set_markup(D("30"), mandate="a"),
        lambda: two.pricing.set_markup(D("40")),
        lambda: two.set_spending_limit("a", D("5"), user="alice"),
        lambda: two.pricing.set_exchange_rate("USD", "CHF", D("0.8"), valid_from=NEW_YEAR),
    ]  # fmt: skip
    for call in repeat:
        call()
    counts = (len(two.audit_log("a", limit=1000).records), len(two.audit_log(limit=1000).records))
    for call in repeat:
        call()
    assert (
        len(two.audit_log("a", limit=1000).records),
        len(two.audit_log(limit=1000).records),
    ) == counts
    # A real change is still recorded, with what it was before.
    two.access.register_provider("openai", display_name="OpenAI (EU)")
    latest = two.audit_log().records[0]
    assert latest.before == {"enabled": True, "display_name": "OpenAI"}
    two.add_user("walt")
    two.access.add_sysadmin("walt")  # the platform keeps a system admin
    two.access.remove_sysadmin("vera")
    two.access.remove_sysadmin("vera")
    assert [r.action for r in two.audit_log().records[:4]] == [
        "sysadmin.remove",
        "sysadmin.add",
        "user.add",
        "provider.register",
    ]


def test_the_platforms_own_settings_are_read_by_system_admins_only(two: Billing) -> None:
    two.pricing.set_markup(D("40"), provider="anthropic")
    two.pricing.set_custom_price("selfhosted", "llama", input_mtok=D("1"), output_mtok=D("2"))
    alice = two.as_principal(member("a", "alice"))  # the admin of mandate a
    for read in (
        lambda: alice.pricing.markups(None),
        lambda: alice.pricing.custom_prices(None),
        lambda: alice.access.is_sysadmin("alice"),
        lambda: alice.pricing.import_exchange_rates(["base,quote,rate,valid_from", "broken"]),
    ):
        with pytest.raises(aibill.PermissionDenied):
            read()
    # What applies to alice's own mandate stays readable to her.
    assert alice.pricing.markup_for("a", "anthropic", None) == D("40")
    assert alice.pricing.markups("a") == []
    root = two.as_principal(Principal(PrincipalKind.SYSADMIN, scopes=frozenset(Scope)))
    assert [m.percent for m in root.pricing.markups(None)] == [D("40")]
    assert not root.access.is_sysadmin("alice")
