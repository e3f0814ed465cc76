"""Permission decisions as tables: roles x rules x providers x wildcards x
contexts x permissions, and the ways a decision fails closed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from aibill import InvalidRequest
from aibill.domain.permissions import (
    ADMIN,
    BUILTIN_RULES,
    MEMBER,
    SYSADMIN,
    VIEWER,
    Context,
    Decision,
    Permission,
    Rule,
    check_item_pattern,
    check_provider,
    decide,
    item_matches,
    provider_item,
)

R, D, U = Context.RESOURCE, Context.DATA, Context.UI
V, C, UP, DEL = Permission.VIEW, Permission.CREATE, Permission.UPDATE, Permission.DELETE


def rule(role: str, context: str, item: str, *perms: str) -> Rule:
    return Rule.of(role, context, item, perms or ["view"])


def use(provider: str) -> str:
    return f"resource.aicore.{provider}"


# ----------------------------------------------------------- built-in roles

PROVIDERS = ("openai", "anthropic", "mistral", "azure.openai", "x-ai")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("role", "may_use"),
    [(SYSADMIN, True), (ADMIN, True), (MEMBER, True), (VIEWER, False), ("auditor", False)],
)
def test_builtin_roles_and_provider_use(role: str, may_use: bool, provider: str) -> None:
    decision = decide((), [role], "resource", use(provider), "view")
    assert decision.allowed is may_use, decision.reason


@pytest.mark.parametrize(
    ("role", "context", "item", "permission", "allowed"),
    [
        # admin and sysadmin: everything, everywhere
        *[
            (role, ctx, item, perm, True)
            for role in (ADMIN, SYSADMIN)
            for ctx, item in ((R, use("openai")), (R, "resource.other"), (D, "data.x"), (U, "ui"))
            for perm in Permission
        ],
        # member: use providers, view data and screens, nothing more
        (MEMBER, R, use("openai"), V, True),
        (MEMBER, R, use("openai"), C, False),
        (MEMBER, R, use("openai"), DEL, False),
        (MEMBER, R, "resource.aicore", V, False),  # the stem itself is not below it
        (MEMBER, R, "resource.storage.s3", V, False),
        (MEMBER, D, "data.billing.history", V, True),
        (MEMBER, D, "data.billing.history", UP, False),
        (MEMBER, U, "ui.dashboard", V, True),
        (MEMBER, U, "ui.dashboard", C, False),
        # viewer: view data and screens only
        (VIEWER, R, use("openai"), V, False),
        (VIEWER, D, "data.billing.history", V, True),
        (VIEWER, D, "data.billing.history", DEL, False),
        (VIEWER, U, "ui.settings", V, True),
        (VIEWER, U, "ui.settings", UP, False),
    ],
)
def test_builtin_defaults(
    role: str, context: Context, item: str, permission: Permission, allowed: bool
) -> None:
    decision = decide((), [role], context, item, permission, user="alice", mandate="acme")
    assert decision.allowed is allowed, decision.reason
    assert decision.roles == (role,)
    assert (decision.rule is not None) is allowed


# ------------------------------------------------- the mandate's own rules

MANDATE_RULES = (
    rule(VIEWER, "resource", use("mistral")),
    rule("auditor", "data", "*"),
    rule("auditor", "ui", "ui.reports.*"),
    rule("ops", "resource", "resource.aicore.*", "create", "update"),
    rule("ops", "data", "data.limits", "view", "update", "delete"),
    rule("tester", "resource", "*", "view"),
    rule("narrow", "resource", use("openai")),
    rule("misplaced", "data", "resource.aicore.*"),  # the data context, not resource
)


@pytest.mark.parametrize(
    ("roles", "context", "item", "permission", "allowed"),
    [
        # a mandate widens a built-in role for one provider
        ([VIEWER], R, use("mistral"), V, True),
        ([VIEWER], R, use("openai"), V, False),
        ([VIEWER], R, use("mistral"), C, False),
        # a custom role gets only its own rules
        (["auditor"], D, "data.billing.history", V, True),
        (["auditor"], D, "data.billing.history", UP, False),
        (["auditor"], U, "ui.reports.usage", V, True),
        (["auditor"], U, "ui.reports", V, False),
        (["auditor"], U, "ui.settings", V, False),
        (["auditor"], R, use("openai"), V, False),
        (["ops"], R, use("openai"), C, True),
        (["ops"], R, use("openai"), UP, True),
        (["ops"], R, use("openai"), V, False),  # create is not use
        (["ops"], D, "data.limits", DEL, True),
        (["ops"], D, "data.limits.user", DEL, False),  # an exact item has no children
        (["ops"], D, "data.limitsx", V, False),
        (["tester"], R, use("openai"), V, True),
        (["tester"], R, "resource.anything.at.all", V, True),
        (["tester"], D, "data.x", V, False),  # '*' covers its own context only
        # exact items match exactly
        (["narrow"], R, use("openai"), V, True),
        (["narrow"], R, use("openai2"), V, False),
        (["narrow"], R, use("openai.mini"), V, False),
        (["narrow"], R, use("anthropic"), V, False),
        # a rule in another context grants nothing here
        (["misplaced"], R, use("openai"), V, False),
        (["misplaced"], D, use("openai"), V, True),
        # several roles: any one that grants is enough
        ([VIEWER, "narrow"], R, use("openai"), V, True),
        (["auditor", "ops"], D, "data.limits", UP, True),
        # unknown roles and rules of roles not held grant nothing
        (["ghost"], R, use("openai"), V, False),
        (["ghost"], D, "data.x", V, False),
        ([], D, "data.x", V, False),
    ],
)
def test_mandate_rules(
    roles: list[str], context: Context, item: str, permission: Permission, allowed: bool
) -> None:
    decision = decide(MANDATE_RULES, roles, context, item, permission)
    assert decision.allowed is allowed, decision.reason
    assert bool(decision) is allowed


def test_rules_only_grant() -> None:
    """A rule for a built-in role adds to its defaults and never takes away."""
    extra = [rule(MEMBER, "resource", use("openai"), "delete")]
    assert decide(extra, [MEMBER], R, use("openai"), DEL).allowed
    assert decide(extra, [MEMBER], R, use("anthropic"), V).allowed


@pytest.mark.parametrize(
    ("pattern", "item", "matches"),
    [
        ("*", "resource.aicore.openai", True),
        ("*", "x", True),
        ("resource.aicore.*", "resource.aicore.openai", True),
        ("resource.aicore.*", "resource.aicore.azure.openai", True),
        ("resource.aicore.*", "resource.aicore", False),
        ("resource.aicore.*", "resource.aicorex.openai", False),
        ("resource.aicore.*", "resource", False),
        ("resource.*", "resource.aicore.openai", True),
        ("resource.aicore.openai", "resource.aicore.openai", True),
        ("resource.aicore.openai", "resource.aicore.openai.x", False),
        ("resource.aicore.openai", "resource.aicore.open", False),
    ],
)
def test_item_matching(pattern: str, item: str, matches: bool) -> None:
    assert item_matches(check_item_pattern(pattern), item) is matches


# ---------------------------------------------------------- refused rules


@pytest.mark.parametrize(
    "item",
    [
        "resource.*.openai",
        "resource.aicore*",
        "resource.ai*.x",
        "*.openai",
        "**",
        ".*",
        "*.*",
        "resource.aicore.*.*",
        "resource.aicore.**",
        "resource..openai",
        ".resource",
        "resource.",
        "Resource.aicore.*",
        "resource.aicore.open ai",
        "",
        "a" * 199 + ".*",
        "a." * 100 + "b",
    ],
)
def test_other_wildcard_forms_and_bad_items_are_refused(item: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Rule.of(MEMBER, "resource", item, ["view"])
    assert info.value.details["field"] == "item"


@pytest.mark.parametrize(
    ("role", "context", "permissions", "field"),
    [
        ("Admin", "resource", ["view"], "role"),
        ("", "resource", ["view"], "role"),
        ("-x", "resource", ["view"], "role"),
        ("r" * 65, "resource", ["view"], "role"),
        (MEMBER, "resources", ["view"], "context"),
        (MEMBER, "", ["view"], "context"),
        (MEMBER, "resource", ["read"], "permissions"),
        (MEMBER, "resource", [], "permissions"),
        (MEMBER, "resource", "view", "permissions"),  # a bare string, not a collection
        (MEMBER, "resource", [None], "permissions"),
    ],
)
def test_malformed_rules_are_refused_naming_the_field(
    role: str, context: str, permissions: Iterable[str], field: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        Rule.of(role, context, "resource.aicore.*", permissions)
    assert info.value.details["field"] == field


def test_rule_refuses_untyped_fields() -> None:
    with pytest.raises(InvalidRequest):
        Rule(MEMBER, "resource", "*", frozenset({V}))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        Rule(MEMBER, R, "*", frozenset({"view"}))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        Rule(MEMBER, R, "*", frozenset())


@pytest.mark.parametrize("name", ["openai", "azure.openai", "x-ai", "mistral_ai", "01-ai"])
def test_provider_names(name: str) -> None:
    assert provider_item(name) == f"resource.aicore.{check_provider(name)}"


@pytest.mark.parametrize("name", ["OpenAI", "", "-x", ".x", "open ai", "a" * 65, None])
def test_bad_provider_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_provider(name)
    assert info.value.details["field"] == "provider"


# ------------------------------------------------------------- fail closed


def forged(**fields: object) -> Rule:
    """A rule as broken stored data could make it: valid, then altered."""
    r = rule(MEMBER, "resource", "*")
    for name, value in fields.items():
        object.__setattr__(r, name, value)
    return r


BROKEN_RULES = [
    pytest.param(None, id="none"),
    pytest.param({"role": MEMBER, "item": "*"}, id="dict"),
    pytest.param(forged(item="resource.*.openai"), id="inner-wildcard"),
    pytest.param(forged(item=None), id="no-item"),
    pytest.param(forged(context="resource"), id="context-str"),
    pytest.param(forged(permissions=frozenset({"view"})), id="permission-str"),
    pytest.param(forged(permissions=frozenset()), id="no-permissions"),
    pytest.param(forged(permissions=["view"]), id="permissions-list"),
    pytest.param(forged(role=None), id="no-role"),
]


@pytest.mark.parametrize("broken", BROKEN_RULES)
def test_broken_rule_data_is_not_allowed(broken: object) -> None:
    """One broken rule makes the whole decision 'not allowed', even when a
    valid rule would grant: the data cannot be trusted."""
    rules: list[Any] = [rule(VIEWER, "resource", use("openai")), broken]
    decision = decide(rules, [VIEWER], R, use("openai"), V, user="alice", mandate="acme")
    assert not decision.allowed
    assert decision.rule is None
    assert "error while deciding" in decision.reason
    assert decision.roles == (VIEWER,)


@pytest.mark.parametrize(
    ("roles", "context", "item", "permission"),
    [
        pytest.param([MEMBER], "resources", use("openai"), "view", id="unknown-context"),
        pytest.param([MEMBER], "resource", use("openai"), "use", id="unknown-permission"),
        pytest.param([MEMBER], "resource", "resource.aicore.*", "view", id="wildcard-question"),
        pytest.param([MEMBER], "resource", "*", "view", id="star-question"),
        pytest.param([MEMBER], "resource", None, "view", id="no-item"),
        pytest.param([MEMBER], "resource", "Resource.AICore.OpenAI", "view", id="mixed-case"),
        pytest.param([None], "resource", use("openai"), "view", id="role-none"),
        pytest.param(None, "resource", use("openai"), "view", id="roles-none"),
    ],
)
def test_malformed_questions_are_not_allowed(
    roles: object, context: object, item: object, permission: object
) -> None:
    decision = decide((), roles, context, item, permission)  # type: ignore[arg-type]
    assert not decision.allowed
    assert "error while deciding" in decision.reason


def test_rules_that_raise_are_not_allowed() -> None:
    def rules() -> Iterable[Rule]:
        yield rule(MEMBER, "resource", "*")
        raise RuntimeError("the rule store went away")

    decision = decide(rules(), [ADMIN], R, use("openai"), V)
    assert not decision.allowed
    assert "RuntimeError: the rule store went away" in decision.reason


# ----------------------------------------------------------------- reasons


def test_reasons_name_user_mandate_question_and_roles() -> None:
    denied = decide((), [VIEWER], R, use("mistral"), V, user="alice", mandate="acme")
    assert denied.reason == (
        "no role of alice in acme grants view on resource.aicore.mistral (roles: viewer)"
    )
    nobody = decide((), [], D, "data.history", V, user="bob", mandate="acme")
    assert nobody.reason == "bob has no role in acme, so may not view on data.history"
    other_context = decide((), [VIEWER], U, "reports", UP, user="carol")
    assert other_context.reason == (
        "no role of carol grants update on reports in ui (roles: viewer)"
    )
    granted = decide((), [VIEWER, MEMBER], R, use("openai"), V, user="alice", mandate="acme")
    assert granted == Decision(
        True,
        "role member of alice in acme grants view on resource.aicore.openai "
        "(rule: resource.aicore.* in resource)",
        (VIEWER, MEMBER),
        rule(MEMBER, "resource", "resource.aicore.*"),
    )


def test_builtin_defaults_table() -> None:
    """The defaults as docs/access.md shows them."""
    table = {(r.role, r.context.value, r.item, tuple(sorted(r.permissions))) for r in BUILTIN_RULES}
    everything = tuple(sorted(Permission))
    assert table == {
        *((role, ctx.value, "*", everything) for role in (SYSADMIN, ADMIN) for ctx in Context),
        (MEMBER, "resource", "resource.aicore.*", (V,)),
        (MEMBER, "resource", "resource.billing.spend", (V,)),
        (MEMBER, "data", "*", (V,)),
        (MEMBER, "ui", "*", (V,)),
        (VIEWER, "data", "*", (V,)),
        (VIEWER, "ui", "*", (V,)),
    }
