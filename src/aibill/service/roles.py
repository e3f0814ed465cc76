"""Who holds which role, and what the roles grant: the platform's system
admins, each member's roles in a mandate (built-in ``admin``, ``member``,
``viewer``, or a custom role the mandate defined), and the mandate's own
permission rules, which add to the built-in defaults (see
:mod:`aibill.domain.permissions` and ``docs/access.md``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine

from aibill.domain import errors as e
from aibill.domain.access import RoleInfo, RuleInfo
from aibill.domain.clock import Clock, system_clock
from aibill.domain.model import check_name
from aibill.domain.permissions import (
    BUILTIN_RULES,
    MANDATE_ROLES,
    SYSADMIN,
    Permission,
    Rule,
    check_role,
    parse_context,
)
from aibill.domain.principal import Scope
from aibill.domain.text import check_line, check_prose
from aibill.service.hooks import Auditor, Guard, SettingsService
from aibill.store import access as access_store
from aibill.store import decisions

__all__ = [
    "MAX_ROLE_DESCRIPTION",
    "MAX_RULES_PER_MANDATE",
    "MAX_RULE_ID",
    "BrokenRuleData",
    "RoleInfo",
    "Roles",
    "RuleInfo",
    "require_role",
    "roles_of",
    "rule_from_row",
]

MAX_ROLE_DESCRIPTION = 500
MAX_RULES_PER_MANDATE = 1000
MAX_RULE_ID = 64

_PERMISSION_COLUMNS = (
    (Permission.VIEW, "can_view"),
    (Permission.CREATE, "can_create"),
    (Permission.UPDATE, "can_update"),
    (Permission.DELETE, "can_delete"),
)
"""Each permission and the column of a stored rule that grants it."""


class BrokenRuleData(e.AibillError):
    """A stored permission rule is not valid: decisions that read it are "not
    allowed" until it is removed."""

    code = "broken_rule_data"


class Roles(SettingsService):
    """System admins, members' roles, custom roles and permission rules (a part
    of :class:`aibill.service.access.Access`).

    ``on_sysadmin_removed(user)`` is called when a system admin was removed
    (the ledger's key cache forgets that user's platform keys)."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = system_clock,
        guard: Guard | None = None,
        auditor: Auditor | None = None,
        on_sysadmin_removed: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(engine, clock=clock, guard=guard, auditor=auditor)
        self._on_sysadmin_removed = on_sysadmin_removed

    # ---------------------------------------------------------------- sysadmins

    def add_sysadmin(self, user: str) -> None:
        """Make an existing user a system admin (idempotent)."""
        check_name(user, "user")

        def work(conn: Connection) -> None:
            self._authorize(conn, None, Scope.ADMIN)
            _require_user(conn, user)
            if not decisions.is_sysadmin(conn, user):
                self._auditor(conn, None, "sysadmin.add", user, None, None)
                access_store.add_sysadmin(conn, user, at=self._now())

        self._write(work)

    def remove_sysadmin(self, user: str) -> None:
        """Take the system-admin role from a user (idempotent).

        Refused with ``LastSystemAdmin`` when the user is the only system admin:
        the platform would have nobody to run it (add the successor first).
        """
        check_name(user, "user")

        def work(conn: Connection) -> None:
            self._authorize(conn, None, Scope.ADMIN)
            _require_user(conn, user)
            if not decisions.is_sysadmin(conn, user):
                return
            # Every admin row locked, so two admins removing each other at once
            # cannot both see the other remain.
            admins = access_store.lock_sysadmins(conn)
            if set(admins) <= {user}:
                raise e.LastSystemAdmin(
                    f"{user!r} is the only system admin; make another user a system admin "
                    "before removing this one.",
                    user=user,
                )
            self._auditor(conn, None, "sysadmin.remove", user, None, None)
            access_store.remove_sysadmin(conn, user)

        try:
            self._write(work)
        finally:  # committed (or not): forgetting a verified key is always safe
            if self._on_sysadmin_removed is not None:
                self._on_sysadmin_removed(user)

    def is_sysadmin(self, user: str) -> bool:
        """Whether ``user`` is a system admin: a platform question, for the
        system or a system admin."""
        check_name(user, "user")

        def work(conn: Connection) -> bool:
            self._authorize(conn, None, Scope.READ)
            _require_user(conn, user)
            return decisions.is_sysadmin(conn, user)

        return self._read(work)

    # -------------------------------------------------------------------- roles

    def grant_role(self, mandate: str, user: str, role: str) -> list[str]:
        """Give a member a role in the mandate (idempotent); returns their roles.

        The role is a built-in one (``admin``, ``member``, ``viewer``) or a
        custom role the mandate defined. ``sysadmin`` is platform-wide: see
        :meth:`add_sysadmin`.
        """
        _check_names(mandate, user)
        check_role(role)

        def work(conn: Connection) -> list[str]:
            self._authorize(conn, mandate, Scope.ADMIN)
            self._require_member(conn, mandate, user)
            require_role(conn, mandate, role)
            held = roles_of(conn, mandate, user)
            if role not in held:
                access_store.add_role(conn, mandate, user, role, at=self._now())
                before, held = held, sorted([*held, role])
                self._auditor(conn, mandate, "role.grant", user, {"roles": before}, {"roles": held})
            return held

        return self._write(work)

    def revoke_role(self, mandate: str, user: str, role: str) -> list[str]:
        """Take a role from a member (revoking a role they lack changes nothing);
        returns their roles."""
        _check_names(mandate, user)
        check_role(role)

        def work(conn: Connection) -> list[str]:
            self._authorize(conn, mandate, Scope.ADMIN)
            self._require_member(conn, mandate, user)
            before = roles_of(conn, mandate, user)
            access_store.remove_role(conn, mandate, user, role)
            after = roles_of(conn, mandate, user)
            if after != before:
                self._auditor(
                    conn, mandate, "role.revoke", user, {"roles": before}, {"roles": after}
                )
            return after

        return self._write(work)

    def roles_of(self, mandate: str, user: str) -> list[str]:
        """The member's roles in the mandate, sorted (``sysadmin`` is not one of them:
        see :meth:`is_sysadmin`)."""
        _check_names(mandate, user)

        def work(conn: Connection) -> list[str]:
            self._authorize(conn, mandate, Scope.READ)
            self._require_member(conn, mandate, user)
            return roles_of(conn, mandate, user)

        return self._read(work)

    def define_role(self, mandate: str, role: str, description: str | None = None) -> RoleInfo:
        """Define a custom role in the mandate. It grants nothing until rules are
        added for it. Defining it again returns it; a description given replaces
        the old one."""
        check_name(mandate, "mandate")
        check_role(role)
        if role in (SYSADMIN, *MANDATE_ROLES):
            raise e.InvalidRequest(
                f"{role!r} is a built-in role; a custom role needs another name.", field="role"
            )
        if description is not None:
            check_prose(description, "description", max_length=MAX_ROLE_DESCRIPTION)

        def work(conn: Connection) -> RoleInfo:
            self._authorize(conn, mandate, Scope.ADMIN)
            _require_mandate(conn, mandate)
            row = access_store.custom_role(conn, mandate, role)
            if row is None:
                now = self._now()
                self._auditor(
                    conn, mandate, "role.define", role, None, {"description": description}
                )
                access_store.define_role(conn, mandate, role, description=description, at=now)
                return RoleInfo(mandate, role, description, now)
            if description is not None and description != row.description:
                self._auditor(
                    conn,
                    mandate,
                    "role.define",
                    role,
                    {"description": row.description},
                    {"description": description},
                )
                access_store.describe_role(conn, mandate, role, description)
                return RoleInfo(mandate, role, description, row.created_at)
            return RoleInfo(mandate, role, row.description, row.created_at)

        return self._write(work)

    def custom_roles(self, mandate: str) -> list[RoleInfo]:
        """The mandate's custom roles, by name."""
        check_name(mandate, "mandate")

        def work(conn: Connection) -> list[RoleInfo]:
            self._authorize(conn, mandate, Scope.READ)
            _require_mandate(conn, mandate)
            rows = access_store.list_custom_roles(conn, mandate)
            return [RoleInfo(mandate, r.role, r.description, r.created_at) for r in rows]

        return self._read(work)

    def _require_member(self, conn: Connection, mandate: str, user: str) -> None:
        """``user`` is a member of ``mandate``. A principal that may not see the
        platform's users (a mandate's key) is told ``NotAMember`` whether or not
        the name exists elsewhere; the system and system admins are told
        ``UnknownUser`` for a name that exists nowhere."""
        _require_member(conn, mandate, user, name_unknown=self._sees_all_users(conn))

    # -------------------------------------------------------------------- rules

    def add_rule(
        self, mandate: str, role: str, context: str, item: str, permissions: Iterable[str]
    ) -> RuleInfo:
        """Grant ``role`` in the mandate ``permissions`` on ``item`` in ``context``.

        ``item`` is ``*``, a dotted key, or a key followed by ``.*``; for
        example ``add_rule("acme", "viewer", "resource", "resource.aicore.mistral",
        ["view"])`` lets viewers of acme use Mistral. The role is built-in
        (not ``sysadmin``) or a custom role of the mandate. Adding a rule equal
        to one the mandate has returns that rule.
        """
        check_name(mandate, "mandate")
        rule = Rule.of(role, context, item, permissions)
        if rule.role == SYSADMIN:
            raise e.InvalidRequest(
                "sysadmin is platform-wide and may already do everything; "
                "rules are for a mandate's roles.",
                field="role",
            )

        def work(conn: Connection) -> RuleInfo:
            self._authorize(conn, mandate, Scope.ADMIN)
            _require_mandate(conn, mandate)
            require_role(conn, mandate, rule.role)
            same = _same_rule(conn, mandate, rule)
            if same is not None:
                return same
            if access_store.count_rules(conn, mandate) >= MAX_RULES_PER_MANDATE:
                raise e.InvalidRequest(
                    f"Mandate {mandate!r} has {MAX_RULES_PER_MANDATE} rules, the most it may have.",
                    field="rule",
                )
            self._auditor(conn, mandate, "rule.add", role, None, _rule_record(rule))
            info = RuleInfo(
                f"rule_{secrets.token_hex(8)}",
                mandate,
                rule.role,
                rule.context,
                rule.item,
                rule.permissions,
                self._now(),
            )
            access_store.insert_rule(conn, _rule_row(info))
            return info

        return self._write(work)

    def remove_rule(self, mandate: str, rule_id: str) -> None:
        """Remove one of the mandate's rules (a broken one too). What it granted
        is no longer granted from the next decision on."""
        check_name(mandate, "mandate")
        check_line(rule_id, "rule_id", max_length=MAX_RULE_ID)

        def work(conn: Connection) -> None:
            self._authorize(conn, mandate, Scope.ADMIN)
            _require_mandate(conn, mandate)
            gone = access_store.delete_rule(conn, mandate, rule_id)
            if gone is None:
                raise e.NotFound(
                    f"Mandate {mandate!r} has no rule {rule_id!r}.",
                    mandate=mandate,
                    rule_id=rule_id,
                )
            self._auditor(conn, mandate, "rule.remove", rule_id, gone, None)

        self._write(work)

    def rules(self, mandate: str) -> list[RuleInfo]:
        """The rules the mandate added, by role, context and item (the built-in
        defaults are :meth:`builtin_rules`). A stored rule that is not valid
        (written around this library) raises :class:`BrokenRuleData` naming it;
        :meth:`remove_rule` removes it."""
        check_name(mandate, "mandate")

        def work(conn: Connection) -> list[RuleInfo]:
            self._authorize(conn, mandate, Scope.READ)
            _require_mandate(conn, mandate)
            return [_rule_info(row._mapping) for row in access_store.list_rules(conn, mandate)]

        return self._read(work)

    @staticmethod
    def builtin_rules() -> tuple[Rule, ...]:
        """The default rules of the built-in roles, the same in every mandate."""
        return BUILTIN_RULES


# ------------------------------------------------------------ stored rules


def _row_permissions(row: Mapping[Any, Any]) -> frozenset[Permission]:
    return frozenset(p for p, col in _PERMISSION_COLUMNS if bool(row[col]))


def rule_from_row(row: Mapping[Any, Any]) -> Rule:
    """A stored rule (its row, by column) as a :class:`Rule`; ``BrokenRuleData``
    when the row is not a valid rule."""
    try:
        return Rule(
            check_role(row["role"]),
            parse_context(row["context"]),
            row["item"],
            _row_permissions(row),
        )
    except e.InvalidRequest as exc:
        raise BrokenRuleData(
            f"stored rule {row['rule_id']!r} is broken: {exc.message}", rule_id=row["rule_id"]
        ) from exc


def _rule_info(row: Mapping[Any, Any]) -> RuleInfo:
    rule = rule_from_row(row)
    return RuleInfo(
        row["rule_id"],
        row["mandate_id"],
        rule.role,
        rule.context,
        rule.item,
        rule.permissions,
        row["created_at"],
    )


def _rule_row(info: RuleInfo) -> dict[str, Any]:
    """A new rule's row, by column."""
    return {
        "mandate_id": info.mandate,
        "rule_id": info.rule_id,
        "role": info.role,
        "context": info.context.value,
        "item": info.item,
        "created_at": info.created_at,
        **{col: p in info.permissions for p, col in _PERMISSION_COLUMNS},
    }


def _rule_record(rule: Rule) -> dict[str, Any]:
    """What the audit log keeps of a new rule (its role is the record's target)."""
    return {
        "context": rule.context,
        "item": rule.item,
        "permissions": sorted(p.value for p in rule.permissions),
    }


def _same_rule(conn: Connection, mandate: str, rule: Rule) -> RuleInfo | None:
    """The mandate's rule that grants exactly what ``rule`` grants, if it has one."""
    rows = access_store.rules_like(conn, mandate, rule.role, rule.context.value, rule.item)
    for row in rows:
        if _row_permissions(row._mapping) == rule.permissions:
            return _rule_info(row._mapping)
    return None


# ---------------------------------------------------------- names that exist


def _check_names(mandate: str, user: str) -> None:
    check_name(mandate, "mandate")
    check_name(user, "user")


def _require_mandate(conn: Connection, mandate: str) -> None:
    if not access_store.mandate_exists(conn, mandate):
        raise e.UnknownMandate(mandate)


def _require_user(conn: Connection, user: str) -> None:
    if not access_store.user_exists(conn, user):
        raise e.UnknownUser(user)


def _require_member(
    conn: Connection, mandate: str, user: str, *, name_unknown: bool = True
) -> None:
    """``user`` is a member of ``mandate``; else ``NotAMember``, or, when
    ``name_unknown``, ``UnknownUser`` for a name that exists nowhere."""
    _require_mandate(conn, mandate)
    if name_unknown:
        _require_user(conn, user)
    if not decisions.is_member(conn, mandate, user):
        raise e.NotAMember(mandate, user)


def require_role(conn: Connection, mandate: str, role: str) -> None:
    """The role is a built-in role of a mandate, or a custom role of this one."""
    if role in MANDATE_ROLES:
        return
    if role == SYSADMIN:
        raise e.InvalidRequest(
            "sysadmin is a platform-wide role, not a mandate's: use add_sysadmin.", field="role"
        )
    if access_store.custom_role(conn, mandate, role) is None:
        raise e.InvalidRequest(
            f"Mandate {mandate!r} has no role {role!r}: the built-in roles are "
            f"{', '.join(MANDATE_ROLES)}; define a custom role with define_role first.",
            field="role",
        )


def roles_of(conn: Connection, mandate: str, user: str) -> list[str]:
    """The roles ``user`` holds in ``mandate``, sorted."""
    return access_store.roles_of(conn, mandate, user)
