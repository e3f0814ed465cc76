"""Access control on SQLite and PostgreSQL: the provider registry, system
admins, roles, custom roles and rules, and decisions that fail closed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, insert
from sqlalchemy.exc import OperationalError

import aibill
from aibill import (
    Billing,
    InvalidRequest,
    ManualClock,
    NotAMember,
    NotFound,
    UnknownMandate,
    UnknownUser,
)
from aibill.domain.permissions import BUILTIN_RULES, Context, Decision, Permission, Rule
from aibill.service.access import Access, BrokenRuleData, ProviderInfo
from aibill.store import fast
from aibill.store.schema import permission_rules

PROVIDERS = ("anthropic", "mistral", "openai")


@pytest.fixture
def access(billing: Billing, clock: ManualClock) -> Access:
    return Access(billing.engine, clock=clock)


@pytest.fixture
def acme(billing: Billing, access: Access) -> str:
    """Mandate acme with members alice, bob and carol (no roles yet), user dave
    who is no member, and three enabled providers."""
    billing.create_mandate("acme")
    for user in ("alice", "bob", "carol", "dave"):
        billing.add_user(user)
    for user in ("alice", "bob", "carol"):
        billing.add_member("acme", user, role=None)
    for provider in PROVIDERS:
        access.register_provider(provider)
    return "acme"


def decide_provider(access: Access, mandate: str, user: str, provider: str) -> Decision:
    """A provider decision inside a transaction, as the billing service makes it."""
    with access._engine.begin() as conn:
        return access.provider_decision(conn, mandate, user, provider)


def in_tx(access: Access, work: Any) -> Any:
    with access._engine.begin() as conn:
        return work(conn)


# --------------------------------------------------------- provider registry


def test_provider_registry_lifecycle(access: Access, clock: ManualClock) -> None:
    start = clock()
    openai = access.register_provider("openai", display_name="OpenAI")
    assert openai == ProviderInfo("openai", "OpenAI", True, start, start)
    assert access.register_provider("openai") == openai  # again: nothing changes
    access.register_provider("mistral")  # displayed by its name
    clock.advance(60)
    off = access.set_provider_enabled("openai", False)
    assert (off.enabled, off.display_name, off.created_at, off.updated_at) == (
        False,
        "OpenAI",
        start,
        clock(),
    )
    assert access.set_provider_enabled("openai", False) == off
    renamed = access.register_provider("openai", display_name="OpenAI (EU)", enabled=False)
    assert (renamed.display_name, renamed.enabled) == ("OpenAI (EU)", False)
    assert [(p.provider, p.display_name, p.enabled) for p in access.providers()] == [
        ("mistral", "mistral", True),
        ("openai", "OpenAI (EU)", False),
    ]
    assert access.register_provider("openai").enabled is True  # an upsert sets it as given


@pytest.mark.parametrize("bad", ["OpenAI", "", "open ai", "-x", "a" * 65])
def test_provider_names_are_checked(access: Access, bad: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        access.register_provider(bad)
    assert info.value.details["field"] == "provider"


def test_provider_registry_refusals(access: Access) -> None:
    with pytest.raises(NotFound, match="No provider named 'openai'"):
        access.set_provider_enabled("openai", True)
    with pytest.raises(InvalidRequest) as info:
        access.register_provider("openai", enabled=1)  # type: ignore[arg-type]
    assert info.value.details["field"] == "enabled"
    with pytest.raises(InvalidRequest) as info:
        access.register_provider("openai", display_name=" ")
    assert info.value.details["field"] == "display_name"
    assert access.providers() == []


def test_disabling_a_provider_refuses_it_at_once(access: Access, acme: str) -> None:
    access.grant_role(acme, "alice", "member")
    assert access.is_provider_allowed(acme, "alice", "openai")
    access.set_provider_enabled("openai", False)
    assert not access.is_provider_allowed(acme, "alice", "openai")
    decision = decide_provider(access, acme, "alice", "openai")
    assert (decision.allowed, decision.reason, decision.roles) == (
        False,
        "provider openai is disabled",
        ("member",),
    )
    assert access.allowed_providers(acme, "alice") == ["anthropic", "mistral"]
    access.set_provider_enabled("openai", True)
    assert access.is_provider_allowed(acme, "alice", "openai")


# ---------------------------------------------------------------- sysadmins


def test_sysadmin_is_allowed_everywhere(billing: Billing, access: Access, acme: str) -> None:
    billing.add_user("root")  # a member of no mandate
    assert not access.is_sysadmin("root")
    assert not access.is_provider_allowed(acme, "root", "openai")
    access.add_sysadmin("root")
    access.add_sysadmin("root")
    assert access.is_sysadmin("root")
    assert access.is_provider_allowed(acme, "root", "openai")
    assert access.allowed_providers(acme, "root") == list(PROVIDERS)
    decision = decide_provider(access, acme, "root", "mistral")
    assert decision.roles == ("sysadmin",)
    assert decision.rule is not None and decision.rule.role == "sysadmin"
    for ctx in ("resource", "data", "ui"):
        for perm in ("view", "create", "update", "delete"):
            assert in_tx(
                access,
                lambda c, ctx=ctx, perm=perm: access.permission_decision(
                    c, acme, "root", ctx, f"{ctx}.anything", perm
                ),
            ).allowed
    assert in_tx(access, lambda c: access.is_mandate_admin(c, acme, "root"))
    # the registry binds system admins too
    access.set_provider_enabled("openai", False)
    assert not access.is_provider_allowed(acme, "root", "openai")
    assert not access.is_provider_allowed(acme, "root", "unregistered")
    # and an unknown mandate is still unknown
    assert not access.is_provider_allowed("nowhere", "root", "mistral")
    billing.add_user("ops")
    access.add_sysadmin("ops")  # the platform keeps a system admin
    access.remove_sysadmin("root")
    access.remove_sysadmin("root")
    assert not access.is_sysadmin("root")
    assert not access.is_provider_allowed(acme, "root", "mistral")


def test_the_last_system_admin_cannot_be_removed(billing: Billing, access: Access) -> None:
    """The platform always has someone to run it: the successor comes first."""
    for user in ("root", "ops"):
        billing.add_user(user)
    access.add_sysadmin("root")
    before = billing.audit_log(limit=100).records
    with pytest.raises(aibill.LastSystemAdmin) as refused:
        access.remove_sysadmin("root")
    assert refused.value.code == "last_sysadmin"
    assert "only system admin" in refused.value.message
    assert access.is_sysadmin("root")
    assert billing.audit_log(limit=100).records == before  # nothing written
    access.add_sysadmin("ops")
    access.remove_sysadmin("root")
    assert not access.is_sysadmin("root")
    with pytest.raises(aibill.LastSystemAdmin):
        access.remove_sysadmin("ops")
    access.remove_sysadmin("root")  # not one: nothing to remove, nothing refused
    assert access.is_sysadmin("ops")


def test_two_admins_removing_each_other_at_once_leave_one(db_url: str) -> None:
    """Real threads on real connections: one removal wins, the other is refused."""
    setup = aibill.connect(db_url)
    for user in ("root", "ops"):
        setup.add_user(user)
        setup.access.add_sysadmin(user)
    setup.close()
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def remove(user: str) -> None:
        ledger = aibill.connect(db_url, migrate=False)
        try:
            start.wait(timeout=30)
            ledger.access.remove_sysadmin(user)
            outcomes.append("removed")
        except aibill.LastSystemAdmin:
            outcomes.append("refused")
        finally:
            ledger.close()

    threads = [threading.Thread(target=remove, args=(u,)) for u in ("root", "ops")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["refused", "removed"]
    check = aibill.connect(db_url, migrate=False)
    assert [check.access.is_sysadmin(u) for u in ("root", "ops")].count(True) == 1
    check.close()


def test_sysadmin_needs_an_existing_user(access: Access) -> None:
    for call in (access.add_sysadmin, access.remove_sysadmin, access.is_sysadmin):
        with pytest.raises(UnknownUser):
            call("ghost")
    with pytest.raises(InvalidRequest):
        access.add_sysadmin("not a name")


# -------------------------------------------------------------------- roles


def test_granting_and_revoking_roles(access: Access, acme: str) -> None:
    assert access.roles_of(acme, "alice") == []
    assert access.grant_role(acme, "alice", "viewer") == ["viewer"]
    assert access.grant_role(acme, "alice", "member") == ["member", "viewer"]
    assert access.grant_role(acme, "alice", "member") == ["member", "viewer"]
    assert access.roles_of(acme, "alice") == ["member", "viewer"]
    assert access.revoke_role(acme, "alice", "member") == ["viewer"]
    assert access.revoke_role(acme, "alice", "member") == ["viewer"]
    assert access.roles_of(acme, "bob") == []


def test_role_refusals(billing: Billing, access: Access, acme: str) -> None:
    with pytest.raises(NotAMember):
        access.grant_role(acme, "dave", "member")
    with pytest.raises(UnknownUser):
        access.grant_role(acme, "ghost", "member")
    with pytest.raises(UnknownMandate):
        access.grant_role("nowhere", "alice", "member")
    with pytest.raises(NotAMember):
        access.roles_of(acme, "dave")
    for role, says in (
        ("sysadmin", "add_sysadmin"),
        ("auditor", "define_role"),
        ("Admin", "lowercase"),
    ):
        with pytest.raises(InvalidRequest, match=says) as info:
            access.grant_role(acme, "alice", role)
        assert info.value.details["field"] == "role"
    billing.create_mandate("beta")
    access.define_role("beta", "auditor")
    with pytest.raises(InvalidRequest):  # beta's custom role is not acme's
        access.grant_role(acme, "alice", "auditor")
    assert access.roles_of(acme, "alice") == []


def test_custom_roles_and_rules(access: Access, acme: str, clock: ManualClock) -> None:
    auditor = access.define_role(acme, "auditor", "reads the books")
    assert access.define_role(acme, "auditor") == auditor
    changed = access.define_role(acme, "auditor", "reads the books, uses mistral")
    assert changed.description == "reads the books, uses mistral"
    assert [r.role for r in access.custom_roles(acme)] == ["auditor"]
    for builtin in ("admin", "member", "viewer", "sysadmin"):
        with pytest.raises(InvalidRequest):
            access.define_role(acme, builtin)

    access.grant_role(acme, "carol", "auditor")
    assert not access.is_provider_allowed(acme, "carol", "mistral")  # no rule yet
    data = in_tx(
        access, lambda c: access.permission_decision(c, acme, "carol", "data", "data.x", "view")
    )
    assert not data.allowed
    assert data.reason == "no role of carol in acme grants view on data.x (roles: auditor)"

    use = access.add_rule(acme, "auditor", "resource", "resource.aicore.mistral", ["view"])
    assert (use.role, use.context, use.item, use.permissions, use.created_at) == (
        "auditor",
        Context.RESOURCE,
        "resource.aicore.mistral",
        frozenset({Permission.VIEW}),
        clock(),
    )
    assert access.add_rule(acme, "auditor", "resource", "resource.aicore.mistral", {"view"}) == use
    read = access.add_rule(acme, "auditor", "data", "*", ["view"])
    assert access.rules(acme) == [read, use]
    assert access.is_provider_allowed(acme, "carol", "mistral")
    assert not access.is_provider_allowed(acme, "carol", "openai")
    assert access.allowed_providers(acme, "carol") == ["mistral"]
    data = in_tx(
        access, lambda c: access.permission_decision(c, acme, "carol", "data", "data.x", "view")
    )
    assert data.allowed and data.rule == read.rule

    access.remove_rule(acme, use.rule_id)
    assert access.rules(acme) == [read]
    assert not access.is_provider_allowed(acme, "carol", "mistral")
    with pytest.raises(NotFound):
        access.remove_rule(acme, use.rule_id)


def test_rule_refusals(access: Access, acme: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        access.add_rule(acme, "auditor", "data", "*", ["view"])  # not defined
    assert info.value.details["field"] == "role"
    with pytest.raises(InvalidRequest) as info:
        access.add_rule(acme, "sysadmin", "data", "*", ["view"])
    assert info.value.details["field"] == "role"
    for item in ("resource.*.openai", "resource.aicore*", "*.x"):
        with pytest.raises(InvalidRequest) as info:
            access.add_rule(acme, "viewer", "resource", item, ["view"])
        assert info.value.details["field"] == "item"
    with pytest.raises(InvalidRequest) as info:
        access.add_rule(acme, "viewer", "resource", "resource.aicore.mistral", ["use"])
    assert info.value.details["field"] == "permissions"
    with pytest.raises(InvalidRequest) as info:
        access.add_rule(acme, "viewer", "network", "*", ["view"])
    assert info.value.details["field"] == "context"
    with pytest.raises(UnknownMandate):
        access.add_rule("nowhere", "viewer", "data", "*", ["view"])
    assert access.rules(acme) == []
    assert access.builtin_rules() == BUILTIN_RULES


def test_a_mandate_widens_a_builtin_role(access: Access, acme: str) -> None:
    access.grant_role(acme, "bob", "viewer")
    assert access.allowed_providers(acme, "bob") == []
    denied = decide_provider(access, acme, "bob", "mistral")
    assert denied.reason == (
        "no role of bob in acme grants view on resource.aicore.mistral (roles: viewer)"
    )
    access.add_rule(acme, "viewer", "resource", "resource.aicore.mistral", ["view"])
    assert access.allowed_providers(acme, "bob") == ["mistral"]
    assert decide_provider(access, acme, "bob", "mistral").allowed


def test_roles_and_rules_stay_in_their_mandate(billing: Billing, access: Access, acme: str) -> None:
    billing.create_mandate("beta")
    billing.add_member("beta", "bob", role=None)
    access.grant_role("beta", "bob", "admin")
    access.add_rule("beta", "viewer", "resource", "*", ["view"])
    access.grant_role(acme, "bob", "viewer")
    assert access.allowed_providers("beta", "bob") == list(PROVIDERS)
    assert access.allowed_providers(acme, "bob") == []
    assert not in_tx(access, lambda c: access.is_mandate_admin(c, acme, "bob"))
    assert in_tx(access, lambda c: access.is_mandate_admin(c, "beta", "bob"))


# ---------------------------------------------------------------- decisions


def test_allowed_providers(access: Access, acme: str) -> None:
    access.grant_role(acme, "alice", "member")
    access.grant_role(acme, "bob", "admin")
    access.register_provider("groq", enabled=False)
    assert access.allowed_providers(acme, "alice") == list(PROVIDERS)
    assert access.allowed_providers(acme, "bob") == list(PROVIDERS)
    assert access.allowed_providers(acme, "carol") == []  # no role
    assert access.allowed_providers(acme, "dave") == []  # not a member
    assert access.allowed_providers(acme, "ghost") == []
    assert access.allowed_providers("nowhere", "alice") == []


def test_member_admin_viewer_decisions(access: Access, acme: str) -> None:
    access.grant_role(acme, "alice", "member")
    access.grant_role(acme, "bob", "admin")
    access.grant_role(acme, "carol", "viewer")

    def may(user: str, context: str, item: str, permission: str) -> bool:
        return bool(
            in_tx(
                access,
                lambda c: access.permission_decision(c, acme, user, context, item, permission),
            )
        )

    assert may("alice", "data", "data.billing.history", "view")
    assert not may("alice", "data", "data.billing.history", "update")
    assert may("alice", "resource", "resource.aicore.openai", "view")
    assert not may("carol", "resource", "resource.aicore.openai", "view")
    assert may("carol", "ui", "ui.dashboard", "view")
    assert may("bob", "data", "data.billing.settings", "delete")
    # view on a provider's item checks the registry too
    access.set_provider_enabled("openai", False)
    assert not may("alice", "resource", "resource.aicore.openai", "view")
    assert not may("alice", "resource", "resource.aicore.unregistered", "view")
    # malformed questions are not allowed
    assert not may("bob", "resource", "resource.aicore.*", "view")
    assert not may("bob", "network", "x", "view")
    assert [
        in_tx(access, lambda c, u=u: access.is_mandate_admin(c, acme, u))
        for u in ("alice", "bob", "carol", "dave", "ghost")
    ] == [False, True, False, False, False]


@pytest.mark.parametrize(
    ("mandate", "user", "provider", "reason"),
    [
        ("acme", "ghost", "openai", "user 'ghost' does not exist"),
        ("acme", "dave", "openai", "dave is not a member of acme"),
        ("acme", "carol", "openai", "carol has no role in acme"),
        ("acme", "alice", "groq", "provider groq is not registered"),
        ("nowhere", "alice", "openai", "mandate 'nowhere' does not exist"),
        ("acme", "alice", "OpenAI", "provider must be 1-64 lowercase"),
    ],
)
def test_fails_closed_with_the_reason_logged(
    access: Access,
    acme: str,
    caplog: pytest.LogCaptureFixture,
    mandate: str,
    user: str,
    provider: str,
    reason: str,
) -> None:
    access.grant_role(acme, "alice", "member")
    access.grant_role(acme, "bob", "member")
    with caplog.at_level(logging.INFO, logger="aibill.access"):
        decision = decide_provider(access, mandate, user, provider)
        assert not access.is_provider_allowed(mandate, user, provider)
    assert not decision.allowed and reason in decision.reason
    logged = [r for r in caplog.records if r.name == "aibill.access"]
    assert len(logged) == 2 and all(reason in r.getMessage() for r in logged)
    assert access.is_provider_allowed(acme, "bob", "openai")  # the same setup allows bob


@pytest.fixture
def broken_loader(access: Access, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("rule store corrupted")

    monkeypatch.setattr(access, "_load_grants", boom)


@pytest.mark.usefixtures("broken_loader")
def test_a_decision_that_raises_is_not_allowed(
    access: Access, acme: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aibill.access"):
        decision = decide_provider(access, acme, "alice", "openai")
        assert not access.is_provider_allowed(acme, "alice", "openai")
        assert access.allowed_providers(acme, "alice") == []
        assert not in_tx(
            access,
            lambda c: access.permission_decision(c, acme, "alice", "data", "data.x", "view"),
        )
    assert not decision.allowed and decision.rule is None
    assert "error while deciding: RuntimeError: rule store corrupted" in decision.reason
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4
    assert all("rule store corrupted" in r.getMessage() for r in errors)
    assert all(r.exc_info is not None for r in errors)


def test_a_database_error_is_raised_in_the_callers_transaction(
    access: Access, acme: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Inside a caller's transaction a database error is not turned into a
    refusal (which the caller would store and replay): it is raised, so the
    unit of work retries or fails; on its own, the answer is still "no"."""
    access.grant_role(acme, "alice", "admin")

    def db_down(*_: object) -> None:
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(access, "_load_grants", db_down)
    with pytest.raises(OperationalError):
        decide_provider(access, acme, "alice", "openai")
    with caplog.at_level(logging.INFO, logger="aibill.access"):
        assert not access.is_provider_allowed(acme, "alice", "openai")
    assert any("server closed the connection" in r.getMessage() for r in caplog.records)


def test_broken_rule_data_in_the_store_is_not_allowed(
    access: Access, acme: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored rule that is not valid (written around the library) makes
    every decision that reads it 'not allowed', even ones another rule grants."""
    access.grant_role(acme, "alice", "member")
    assert access.is_provider_allowed(acme, "alice", "openai")
    with access._engine.begin() as conn:
        conn.execute(
            insert(permission_rules).values(
                mandate_id=acme,
                rule_id="forged",
                role="member",
                context="resource",
                item="resource.*.openai",
                can_view=True,
                can_create=False,
                can_update=False,
                can_delete=False,
                created_at=clock(),
            )
        )
    with caplog.at_level(logging.INFO, logger="aibill.access"):
        decision = decide_provider(access, acme, "alice", "openai")
    assert not decision.allowed
    assert "error while deciding: BrokenRuleData: stored rule 'forged' is broken" in (
        decision.reason
    )
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert access.allowed_providers(acme, "alice") == []
    with pytest.raises(BrokenRuleData, match="forged"):
        access.rules(acme)
    access.remove_rule(acme, "forged")
    assert access.is_provider_allowed(acme, "alice", "openai")


# ------------------------------------------------------------------ the cost


@pytest.fixture
def statements(access: Access, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement run: through the driver's cursor (store.fast) or SQLAlchemy."""
    seen: list[str] = []
    original = fast.Statement.run

    def counting(self: fast.Statement, conn: Connection, params: Any) -> list[fast.Row]:
        seen.append(self._sqlite)
        return original(self, conn, params)

    def core(*args: Any) -> None:
        seen.append(str(args[2]))

    monkeypatch.setattr(fast.Statement, "run", counting)
    event.listen(access._engine, "before_cursor_execute", core)
    yield seen
    event.remove(access._engine, "before_cursor_execute", core)


def test_a_provider_decision_is_two_statements(
    access: Access, acme: str, statements: list[str]
) -> None:
    access.grant_role(acme, "alice", "member")
    access.add_rule(acme, "member", "resource", "resource.aicore.openai", ["create"])
    with access._engine.begin() as conn:
        statements.clear()
        assert access.provider_decision(conn, acme, "alice", "openai").allowed
        assert access.is_mandate_admin(conn, acme, "alice") is False
    assert len(statements) == 3  # two for the provider, one for the admin check


def test_times_come_from_the_clock(access: Access, acme: str, clock: ManualClock) -> None:
    clock.advance(timedelta(days=2).total_seconds())
    role = access.define_role(acme, "ops")
    rule = access.add_rule(acme, "ops", "ui", "ui.*", ["view", "update"])
    assert role.created_at == rule.created_at == clock()
    assert rule.rule == Rule.of("ops", "ui", "ui.*", ["update", "view"])
