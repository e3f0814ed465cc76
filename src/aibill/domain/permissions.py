"""Who may do what in a mandate: roles, permission rules, and the decision.

A *rule* grants one role some permissions (``view``, ``create``, ``update``,
``delete``) on an *item* in a *context* (``resource``, ``data``, ``ui``).
Items are dotted keys such as ``resource.aicore.openai``; a rule's item may
end in a wildcard: ``*`` alone matches every item of its context, and
``resource.aicore.*`` matches every key below ``resource.aicore``
(``resource.aicore.openai``, ``resource.aicore.azure.gpt``), not
``resource.aicore`` itself. No other wildcard form exists.

Using an AI provider is ``view`` on ``resource.aicore.<provider>`` in the
``resource`` context, as in the seed. Spending the mandate's money (placing
a hold or recording usage by a plain amount, capturing another user's hold)
is ``view`` on ``resource.billing.spend``: the mandate's credit is a resource
its members may use or not (``SPEND_ITEM``).

Rules only grant: there are no deny rules, so adding a rule can only widen
what a role may do, and a rule that cannot be read can only narrow it. The
built-in roles carry default rules (``BUILTIN_RULES``); a mandate adds its
own rules, for built-in roles or for its custom roles.

``decide`` fails closed: no role, no granting rule, a malformed question or
broken rule data all mean "not allowed", with the reason in words.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from aibill.domain.errors import InvalidRequest

__all__ = [
    "ADMIN",
    "ALL_PERMISSIONS",
    "BUILTIN_RULES",
    "MANDATE_ROLES",
    "MEMBER",
    "PROVIDER_ITEM_PREFIX",
    "SPEND_ITEM",
    "SYSADMIN",
    "VIEWER",
    "Context",
    "Decision",
    "Permission",
    "Rule",
    "check_item",
    "check_item_pattern",
    "check_provider",
    "check_role",
    "decide",
    "item_matches",
    "parse_context",
    "parse_permission",
    "parse_permissions",
    "provider_item",
]


class Permission(StrEnum):
    VIEW = "view"  # for a resource: may use it
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class Context(StrEnum):
    RESOURCE = "resource"  # things that are used, such as AI providers
    DATA = "data"  # records: balances, history, reports
    UI = "ui"  # screens and controls of the product


SYSADMIN: Final = "sysadmin"
"""Platform-wide: may do everything in every mandate."""
ADMIN: Final = "admin"
MEMBER: Final = "member"
VIEWER: Final = "viewer"
MANDATE_ROLES: Final = (ADMIN, MEMBER, VIEWER)
"""The built-in roles a member of a mandate can be granted."""

ALL_PERMISSIONS: Final = frozenset(Permission)
WILDCARD: Final = "*"
PROVIDER_ITEM_PREFIX: Final = "resource.aicore."
SPEND_ITEM: Final = "resource.billing.spend"
"""``view`` on this item (in ``resource``) lets a user make the mandate pay."""
MAX_ITEM_LENGTH: Final = 200
MAX_ROLE_LENGTH: Final = 64
MAX_PROVIDER_LENGTH: Final = 64

_CONTEXTS: Final = tuple(c.value for c in Context)
_PERMISSIONS: Final = tuple(p.value for p in Permission)
_ROLE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_KEY = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$")
_PROVIDER = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


# ------------------------------------------------------------------ checks


def check_role(value: object, field: str = "role") -> str:
    """Role names: 1-64 lowercase letters, digits and ``_ . -``, starting with a letter."""
    if not isinstance(value, str) or not _ROLE.fullmatch(value):
        raise InvalidRequest(
            f"{field} must be 1-{MAX_ROLE_LENGTH} lowercase letters, digits, '_', '.' or '-' "
            f"starting with a letter, not {value!r}.",
            field=field,
        )
    return value


def check_provider(value: object, field: str = "provider") -> str:
    """Provider names: 1-64 lowercase letters, digits and ``_ . -``, starting with a
    letter or digit (``openai``, ``azure.openai``, ``x-ai``)."""
    if not isinstance(value, str) or not _PROVIDER.fullmatch(value):
        raise InvalidRequest(
            f"{field} must be 1-{MAX_PROVIDER_LENGTH} lowercase letters, digits, '_', '.' "
            f"or '-' starting with a letter or digit, not {value!r}.",
            field=field,
        )
    return value


def check_item(value: object, field: str = "item") -> str:
    """A concrete item key, the subject of a question: dotted lowercase segments
    of letters, digits, ``_`` and ``-``; no wildcard."""
    if not isinstance(value, str) or len(value) > MAX_ITEM_LENGTH or not _KEY.fullmatch(value):
        raise InvalidRequest(
            f"{field} must be a dotted key of lowercase letters, digits, '_' and '-' "
            f"(such as 'resource.aicore.openai'), at most {MAX_ITEM_LENGTH} characters, "
            f"not {value!r}.",
            field=field,
        )
    return value


def check_item_pattern(value: object, field: str = "item") -> str:
    """A rule's item: ``*`` alone, a concrete key, or a concrete key followed by ``.*``."""
    if value == WILDCARD:
        return WILDCARD
    if isinstance(value, str) and value.endswith(".*") and len(value) <= MAX_ITEM_LENGTH:
        stem = value[:-2]
        if _KEY.fullmatch(stem):
            return value
    elif isinstance(value, str) and WILDCARD not in value:
        return check_item(value, field)
    raise InvalidRequest(
        f"{field} must be '*', a dotted key such as 'resource.aicore.openai', or a key "
        f"followed by '.*' such as 'resource.aicore.*' (lowercase letters, digits, '_' "
        f"and '-'; at most {MAX_ITEM_LENGTH} characters), not {value!r}.",
        field=field,
    )


def parse_context(value: object, field: str = "context") -> Context:
    if isinstance(value, Context):
        return value
    if isinstance(value, str) and value in _CONTEXTS:
        return Context(value)
    raise InvalidRequest(
        f"{field} must be one of {', '.join(_CONTEXTS)}, not {value!r}.", field=field
    )


def parse_permission(value: object, field: str = "permission") -> Permission:
    if isinstance(value, Permission):
        return value
    if isinstance(value, str) and value in _PERMISSIONS:
        return Permission(value)
    raise InvalidRequest(
        f"{field} must be one of {', '.join(_PERMISSIONS)}, not {value!r}.", field=field
    )


def parse_permissions(values: Iterable[str], field: str = "permissions") -> frozenset[Permission]:
    """A non-empty collection of permission names (``["view", "create"]``)."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidRequest(
            f"{field} must be a collection of permission names such as ['view'], not {values!r}.",
            field=field,
        )
    out = frozenset(parse_permission(v, field) for v in values)
    if not out:
        raise InvalidRequest(f"{field} must name at least one permission.", field=field)
    return out


def provider_item(provider: str) -> str:
    """The item whose ``view`` permission means "may use this provider"."""
    return PROVIDER_ITEM_PREFIX + check_provider(provider)


def item_matches(pattern: str, item: str) -> bool:
    """Does a rule's item pattern cover a concrete item?"""
    if pattern == WILDCARD:
        return True
    if pattern.endswith(".*"):
        return item.startswith(pattern[:-1])  # the stem and its dot: deeper keys only
    return pattern == item


# ------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class Rule:
    """Role ``role`` has ``permissions`` on the items ``item`` matches in ``context``.

    Checked when it is created: a malformed role, context, item pattern or an
    empty permission set is ``InvalidRequest`` naming the field.
    """

    role: str
    context: Context
    item: str
    permissions: frozenset[Permission]

    def __post_init__(self) -> None:
        _check_rule(self)

    @classmethod
    def of(cls, role: str, context: str, item: str, permissions: Iterable[str]) -> Rule:
        """Build a rule from plain names (``Rule.of("member", "resource", "resource.aicore.*",
        ["view"])``)."""
        return cls(check_role(role), parse_context(context), item, parse_permissions(permissions))

    def grants(self, context: Context, item: str, permission: Permission) -> bool:
        return (
            self.context is context
            and permission in self.permissions
            and item_matches(self.item, item)
        )

    def describe(self) -> str:
        perms = ", ".join(p.value for p in Permission if p in self.permissions)
        return f"{self.role}: {perms} on {self.item} in {self.context.value}"


def _check_rule(rule: object) -> None:
    """Every field of a rule, checked again (a rule may come from stored data)."""
    if not isinstance(rule, Rule):
        raise InvalidRequest(f"not a rule: {rule!r}", field="rule")
    check_role(rule.role)
    if not isinstance(rule.context, Context):
        raise InvalidRequest(f"context {rule.context!r} is not a Context.", field="context")
    check_item_pattern(rule.item)
    if (
        not isinstance(rule.permissions, frozenset)
        or not rule.permissions
        or not all(isinstance(p, Permission) for p in rule.permissions)
    ):
        raise InvalidRequest(
            f"permissions must be a non-empty frozenset of Permission, not {rule.permissions!r}.",
            field="permissions",
        )


def _everything(role: str) -> tuple[Rule, ...]:
    return tuple(Rule(role, c, WILDCARD, ALL_PERMISSIONS) for c in Context)


_VIEW = frozenset({Permission.VIEW})

BUILTIN_RULES: Final[tuple[Rule, ...]] = (
    *_everything(SYSADMIN),
    *_everything(ADMIN),
    Rule(MEMBER, Context.RESOURCE, PROVIDER_ITEM_PREFIX + WILDCARD, _VIEW),
    Rule(MEMBER, Context.RESOURCE, SPEND_ITEM, _VIEW),
    Rule(MEMBER, Context.DATA, WILDCARD, _VIEW),
    Rule(MEMBER, Context.UI, WILDCARD, _VIEW),
    Rule(VIEWER, Context.DATA, WILDCARD, _VIEW),
    Rule(VIEWER, Context.UI, WILDCARD, _VIEW),
)
"""The defaults of the built-in roles, in every mandate. ``sysadmin`` and
``admin``: everything. ``member``: may use every enabled provider, spend the
mandate's money, and view data and screens. ``viewer``: may view data and
screens, use no provider and spend nothing."""


# ---------------------------------------------------------------- decision


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may this user do this?", with the reason in words, the
    roles that were considered and the rule that granted (if any).

    Its truth value is ``allowed``.
    """

    allowed: bool
    reason: str
    roles: tuple[str, ...] = ()
    rule: Rule | None = None

    def __bool__(self) -> bool:
        return self.allowed


def describe_question(context: Context, item: str, permission: Permission) -> str:
    """``view on resource.aicore.openai``; the context is named when the item does not."""
    where = "" if item.startswith(f"{context.value}.") else f" in {context.value}"
    return f"{permission.value} on {item}{where}"


def decide(
    rules: Iterable[Rule],
    roles: Iterable[str],
    context: Context | str,
    item: str,
    permission: Permission | str,
    *,
    user: str | None = None,
    mandate: str | None = None,
) -> Decision:
    """Allowed iff a rule of one of ``roles`` grants ``permission`` on an item
    pattern matching ``item`` in ``context``. ``rules`` are the mandate's own;
    the built-in defaults (``BUILTIN_RULES``) always apply as well.

    Fails closed: a malformed question, a broken rule (any of them, granting
    or not) or any other error gives "not allowed" with the reason.
    ``user`` and ``mandate`` only name the subject in the reason.
    """
    who = user if user is not None else "the user"
    where = f" in {mandate}" if mandate is not None else ""
    held: tuple[str, ...] = ()
    try:
        held = tuple(roles)
        for role in held:
            if not isinstance(role, str):
                raise InvalidRequest(f"role {role!r} is not a name.", field="roles")
        ctx = parse_context(context)
        perm = parse_permission(permission)
        key = check_item(item)
        every = (*BUILTIN_RULES, *rules)
        for rule in every:
            _check_rule(rule)
        question = describe_question(ctx, key, perm)
        if not held:
            return Decision(False, f"{who} has no role{where}, so may not {question}", held)
        holding = set(held)
        for rule in every:
            if rule.role in holding and rule.grants(ctx, key, perm):
                return Decision(
                    True,
                    f"role {rule.role} of {who}{where} grants {question} "
                    f"(rule: {rule.item} in {rule.context.value})",
                    held,
                    rule,
                )
        return Decision(
            False,
            f"no role of {who}{where} grants {question} (roles: {', '.join(held)})",
            held,
        )
    except Exception as exc:
        safe = tuple(r for r in held if isinstance(r, str))
        return Decision(
            False,
            f"not allowed: error while deciding for {who}{where}: {type(exc).__name__}: {exc}",
            safe,
        )
