"""Who may spend on which AI provider, and who may administer a mandate.

Three kinds of data, all in the store:

* the **provider registry**, platform-wide: the providers the platform has
  configured, each enabled or disabled. A provider that is not registered,
  or is disabled, is usable by nobody, system admins included; disabling
  one refuses the next decision at once.
* **system admins**, platform-wide: may do everything in every mandate.
* per mandate: the **roles** of each member (built-in ``admin``, ``member``,
  ``viewer``, or a custom role the mandate defined), and the mandate's own
  **permission rules**, which add to the built-in defaults (see
  :mod:`aibill.domain.permissions` and ``docs/access.md``).

Every decision fails closed: an unknown mandate or user, a user who is not a
member, a member without roles, an unregistered or disabled provider, no
granting rule, broken rule data or any error while deciding means "not
allowed", and the reason is logged on the ``aibill.access`` logger.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from aibill.domain import errors as e
from aibill.domain.access import ProviderInfo, RoleInfo, RuleInfo
from aibill.domain.model import check_name
from aibill.domain.permissions import (
    ADMIN,
    BUILTIN_RULES,
    MANDATE_ROLES,
    PROVIDER_ITEM_PREFIX,
    SPEND_ITEM,
    SYSADMIN,
    Context,
    Decision,
    Permission,
    Rule,
    check_item,
    check_provider,
    check_role,
    decide,
    parse_context,
    parse_permission,
    provider_item,
)
from aibill.domain.principal import Scope
from aibill.domain.text import check_line, check_prose
from aibill.service.hooks import SettingsService
from aibill.store import fast
from aibill.store.schema import (
    custom_roles,
    mandates,
    member_roles,
    memberships,
    permission_rules,
    platform_admins,
    providers,
    users,
)

__all__ = ["Access", "BrokenRuleData", "ProviderInfo", "RoleInfo", "RuleInfo"]

T = TypeVar("T")
log = logging.getLogger("aibill.access")

MAX_DISPLAY_NAME = 128
MAX_ROLE_DESCRIPTION = 500
MAX_RULES_PER_MANDATE = 1000
MAX_RULE_ID = 64

_PERMISSION_COLUMNS = (
    (Permission.VIEW, "can_view"),
    (Permission.CREATE, "can_create"),
    (Permission.UPDATE, "can_update"),
    (Permission.DELETE, "can_delete"),
)


# ------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class _Facts:
    mandate_known: bool
    user_known: bool
    member: bool
    sysadmin: bool
    enabled: bool | None  # None: the provider is not registered (or none was asked)


# ------------------------------------------------------------- statements

_FACTS = fast.Statement(
    "SELECT (SELECT 1 FROM mandates WHERE mandate_id = :mandate) AS mandate_known,"
    " (SELECT 1 FROM users WHERE user_id = :user) AS user_known,"
    " (SELECT 1 FROM memberships WHERE mandate_id = :mandate AND user_id = :user) AS member,"
    " (SELECT 1 FROM platform_admins WHERE user_id = :user) AS sysadmin,"
    " (SELECT enabled FROM providers WHERE provider = :provider) AS enabled"
)
_GRANTS = fast.Statement(
    "SELECT r.role, p.rule_id, p.context, p.item,"
    " p.can_view, p.can_create, p.can_update, p.can_delete"
    " FROM member_roles r LEFT JOIN permission_rules p"
    " ON p.mandate_id = r.mandate_id AND p.role = r.role AND p.context = :context"
    " WHERE r.mandate_id = :mandate AND r.user_id = :user"
    " ORDER BY r.role, p.rule_id"
)
_ADMIN_FACTS = fast.Statement(
    "SELECT (SELECT 1 FROM platform_admins WHERE user_id = :user) AS sysadmin,"
    " (SELECT 1 FROM member_roles"
    "  WHERE mandate_id = :mandate AND user_id = :user AND role = :admin) AS admin"
)
_ENABLED_PROVIDERS = fast.Statement(
    "SELECT provider FROM providers WHERE enabled = :yes ORDER BY provider"
)


class Access(SettingsService):
    """The provider registry, system admins, roles and rules, and the decisions.

    Create it on the ledger's engine: ``Access(billing.engine)``. It is safe
    to share between threads.
    """

    # --------------------------------------------------------- provider registry

    def register_provider(
        self, provider: str, *, display_name: str | None = None, enabled: bool = True
    ) -> ProviderInfo:
        """Add a provider to the platform's registry, or update it: registering
        again sets ``enabled`` as given, and the display name when one is given
        (a new provider is displayed by its name unless one is given)."""
        name = check_provider(provider)
        shown = _check_display_name(display_name)
        _check_bool(enabled, "enabled")

        def work(conn: Connection) -> ProviderInfo:
            self._authorize(conn, None, Scope.ADMIN)
            row = conn.execute(select(providers).where(providers.c.provider == name)).first()
            now = self._now()
            if row is None:
                info = ProviderInfo(name, shown or name, enabled, now, now)
                self._auditor(
                    conn,
                    None,
                    "provider.register",
                    name,
                    None,
                    {"enabled": enabled, "display_name": info.display_name},
                )
                conn.execute(
                    insert(providers).values(
                        provider=name,
                        display_name=info.display_name,
                        enabled=enabled,
                        created_at=now,
                        updated_at=now,
                    )
                )
                return info
            after = (shown or row.display_name, enabled)
            if after == (row.display_name, bool(row.enabled)):
                return _provider_info(row)  # unchanged: nothing to record
            self._auditor(
                conn,
                None,
                "provider.register",
                name,
                {"enabled": bool(row.enabled), "display_name": row.display_name},
                {"enabled": after[1], "display_name": after[0]},
            )
            conn.execute(
                update(providers)
                .where(providers.c.provider == name)
                .values(display_name=after[0], enabled=after[1], updated_at=now)
            )
            return ProviderInfo(name, after[0], after[1], row.created_at, now)

        return self._write(work)

    def set_provider_enabled(self, provider: str, enabled: bool) -> ProviderInfo:
        """Enable or disable a registered provider for every mandate. A disabled
        provider is refused from the next decision on; calls already running
        finish and are billed."""
        name = check_provider(provider)
        _check_bool(enabled, "enabled")

        def work(conn: Connection) -> ProviderInfo:
            self._authorize(conn, None, Scope.ADMIN)
            row = conn.execute(select(providers).where(providers.c.provider == name)).first()
            if row is None:
                raise _unknown_provider(name)
            if bool(row.enabled) == enabled:
                return _provider_info(row)
            self._auditor(
                conn,
                None,
                "provider.enable" if enabled else "provider.disable",
                name,
                {"enabled": bool(row.enabled)},
                {"enabled": enabled},
            )
            now = self._now()
            conn.execute(
                update(providers)
                .where(providers.c.provider == name)
                .values(enabled=enabled, updated_at=now)
            )
            return ProviderInfo(name, row.display_name, enabled, row.created_at, now)

        return self._write(work)

    def providers(self) -> list[ProviderInfo]:
        """Every registered provider, enabled or not, by name."""

        def work(conn: Connection) -> list[ProviderInfo]:
            rows = conn.execute(select(providers).order_by(providers.c.provider)).all()
            return [_provider_info(r) for r in rows]

        return self._read(work)

    # ---------------------------------------------------------------- sysadmins

    def add_sysadmin(self, user: str) -> None:
        """Make an existing user a system admin (idempotent)."""
        check_name(user, "user")

        def work(conn: Connection) -> None:
            self._authorize(conn, None, Scope.ADMIN)
            _require_user(conn, user)
            if not _is_sysadmin(conn, user):
                self._auditor(conn, None, "sysadmin.add", user, None, None)
                conn.execute(insert(platform_admins).values(user_id=user, created_at=self._now()))

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
            if not _is_sysadmin(conn, user):
                return
            # Every admin row locked (SQLite: the write lock taken at BEGIN), so two
            # admins removing each other at once cannot both see the other remain.
            admins = (
                conn.execute(select(platform_admins.c.user_id).with_for_update()).scalars().all()
            )
            if set(admins) <= {user}:
                raise e.LastSystemAdmin(
                    f"{user!r} is the only system admin; make another user a system admin "
                    "before removing this one.",
                    user=user,
                )
            self._auditor(conn, None, "sysadmin.remove", user, None, None)
            conn.execute(delete(platform_admins).where(platform_admins.c.user_id == user))

        self._write(work)

    def is_sysadmin(self, user: str) -> bool:
        """Whether ``user`` is a system admin: a platform question, for the
        system or a system admin."""
        check_name(user, "user")

        def work(conn: Connection) -> bool:
            self._authorize(conn, None, Scope.READ)
            _require_user(conn, user)
            return _is_sysadmin(conn, user)

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
                conn.execute(
                    insert(member_roles).values(
                        mandate_id=mandate, user_id=user, role=role, created_at=self._now()
                    )
                )
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
            r = member_roles.c
            conn.execute(
                delete(member_roles).where(
                    r.mandate_id == mandate, r.user_id == user, r.role == role
                )
            )
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
            c = custom_roles.c
            row = conn.execute(
                select(custom_roles).where(c.mandate_id == mandate, c.role == role)
            ).first()
            if row is None:
                now = self._now()
                self._auditor(
                    conn, mandate, "role.define", role, None, {"description": description}
                )
                conn.execute(
                    insert(custom_roles).values(
                        mandate_id=mandate, role=role, description=description, created_at=now
                    )
                )
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
                conn.execute(
                    update(custom_roles)
                    .where(c.mandate_id == mandate, c.role == role)
                    .values(description=description)
                )
                return RoleInfo(mandate, role, description, row.created_at)
            return RoleInfo(mandate, role, row.description, row.created_at)

        return self._write(work)

    def custom_roles(self, mandate: str) -> list[RoleInfo]:
        """The mandate's custom roles, by name."""
        check_name(mandate, "mandate")

        def work(conn: Connection) -> list[RoleInfo]:
            self._authorize(conn, mandate, Scope.READ)
            _require_mandate(conn, mandate)
            c = custom_roles.c
            rows = conn.execute(
                select(custom_roles).where(c.mandate_id == mandate).order_by(c.role)
            ).all()
            return [RoleInfo(mandate, r.role, r.description, r.created_at) for r in rows]

        return self._read(work)

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
            c = permission_rules.c
            same = conn.execute(
                select(permission_rules).where(
                    c.mandate_id == mandate,
                    c.role == rule.role,
                    c.context == rule.context.value,
                    c.item == rule.item,
                )
            ).all()
            for row in same:
                if _row_permissions(row._mapping) == rule.permissions:
                    return _rule_info(row._mapping)
            count = conn.execute(
                select(func.count()).select_from(permission_rules).where(c.mandate_id == mandate)
            ).scalar_one()
            if count >= MAX_RULES_PER_MANDATE:
                raise e.InvalidRequest(
                    f"Mandate {mandate!r} has {MAX_RULES_PER_MANDATE} rules, the most it may have.",
                    field="rule",
                )
            self._auditor(
                conn,
                mandate,
                "rule.add",
                role,
                None,
                {
                    "context": rule.context,
                    "item": rule.item,
                    "permissions": sorted(p.value for p in rule.permissions),
                },
            )
            info = RuleInfo(
                f"rule_{secrets.token_hex(8)}",
                mandate,
                rule.role,
                rule.context,
                rule.item,
                rule.permissions,
                self._now(),
            )
            conn.execute(
                insert(permission_rules).values(
                    mandate_id=mandate,
                    rule_id=info.rule_id,
                    role=info.role,
                    context=info.context.value,
                    item=info.item,
                    created_at=info.created_at,
                    **{col: p in info.permissions for p, col in _PERMISSION_COLUMNS},
                )
            )
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
            c = permission_rules.c
            gone = conn.execute(
                delete(permission_rules)
                .where(c.mandate_id == mandate, c.rule_id == rule_id)
                .returning(
                    c.role, c.context, c.item, c.can_view, c.can_create, c.can_update, c.can_delete
                )
            ).all()
            if gone:
                self._auditor(conn, mandate, "rule.remove", rule_id, dict(gone[0]._mapping), None)
            if not gone:
                raise e.NotFound(
                    f"Mandate {mandate!r} has no rule {rule_id!r}.",
                    mandate=mandate,
                    rule_id=rule_id,
                )

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
            return _rule_infos(conn, mandate)

        return self._read(work)

    @staticmethod
    def builtin_rules() -> tuple[Rule, ...]:
        """The default rules of the built-in roles, the same in every mandate."""
        return BUILTIN_RULES

    # ---------------------------------------------------------------- decisions

    def provider_decision(
        self, conn: Connection, mandate: str, user: str, provider: str
    ) -> Decision:
        """May ``user`` use ``provider`` in ``mandate``? Runs in the caller's
        transaction, in two small queries.

        Allowed when the provider is registered and enabled, the user is a
        member (or a system admin), and one of their roles grants ``view`` on
        ``resource.aicore.<provider>``. Anything else, including an error while
        deciding, is "not allowed" with the reason, logged. A database error
        is logged and raised instead: the transaction cannot go on, and the
        caller's unit of work retries it or reports the store unavailable
        (nothing is allowed either way).
        """
        return self._guard(
            mandate,
            user,
            f"use provider {provider!r}",
            lambda: self._decide(
                conn,
                mandate,
                user,
                Context.RESOURCE,
                provider_item(provider),
                Permission.VIEW,
                provider=check_provider(provider),
            ),
        )

    def permission_decision(
        self,
        conn: Connection,
        mandate: str,
        user: str,
        context: str,
        item: str,
        permission: str,
    ) -> Decision:
        """May ``user`` have ``permission`` on ``item`` in ``context`` in
        ``mandate``? Fails closed like :meth:`provider_decision`; ``view`` on
        ``resource.aicore.<provider>`` is exactly :meth:`provider_decision`
        (the provider registry is checked too)."""

        def work() -> Decision:
            ctx = parse_context(context)
            key = check_item(item)
            perm = parse_permission(permission)
            provider = None
            if (
                ctx is Context.RESOURCE
                and perm is Permission.VIEW
                and key.startswith(PROVIDER_ITEM_PREFIX)
            ):
                provider = check_provider(key[len(PROVIDER_ITEM_PREFIX) :])
            return self._decide(conn, mandate, user, ctx, key, perm, provider=provider)

        return self._guard(mandate, user, f"{permission} on {item!r} in {context}", work)

    def admin_decision(self, conn: Connection, mandate: str, user: str) -> Decision:
        """May ``user`` administer ``mandate``: the ``admin`` role there, or system
        admin. Fails closed like :meth:`provider_decision`."""

        def work() -> Decision:
            row = _ADMIN_FACTS.one(conn, {"mandate": mandate, "user": user, "admin": ADMIN})
            if row.sysadmin is not None:
                return Decision(True, f"{user} is a system admin", (SYSADMIN,))
            if row.admin is not None:
                return Decision(True, f"{user} is an admin of {mandate}", (ADMIN,))
            return Decision(False, f"{user} is neither an admin of {mandate} nor a system admin")

        return self._guard(mandate, user, "administer the mandate", work)

    def spend_decision(
        self, conn: Connection, mandate: str, user: str, provider: str | None = None
    ) -> Decision:
        """May ``user`` make ``mandate`` pay: ``view`` on ``resource.billing.spend``
        (``member`` and ``admin`` by default, a custom role by a rule), or, for
        a call that names ``provider``, the right to use that provider (see
        :meth:`provider_decision`). Fails closed like :meth:`provider_decision`;
        a viewer or a member without a role may never spend."""
        decision = self._guard(
            mandate,
            user,
            "spend the mandate's money",
            lambda: self._decide(
                conn, mandate, user, Context.RESOURCE, SPEND_ITEM, Permission.VIEW, provider=None
            ),
        )
        if decision.allowed or provider is None:
            return decision
        by_provider = self.provider_decision(conn, mandate, user, provider)
        return by_provider if by_provider.allowed else decision

    def is_mandate_admin(self, conn: Connection, mandate: str, user: str) -> bool:
        """:meth:`admin_decision`, as a yes or no."""
        return self.admin_decision(conn, mandate, user).allowed

    def is_provider_allowed(self, mandate: str, user: str, provider: str) -> bool:
        """:meth:`provider_decision` in its own transaction, as a yes or no; any
        failure, the store's included, is "no"; so is a principal that may not
        check calls in ``mandate`` (``billing:use``)."""
        try:  # a name no database could hold names nobody: "no", without asking one
            check_name(mandate, "mandate")
            check_name(user, "user")
            check_provider(provider)
        except e.InvalidRequest as exc:
            log.info("not allowed: %s", exc.message)
            return False

        def work(conn: Connection) -> bool:
            self._authorize(conn, mandate, Scope.USE)
            return self.provider_decision(conn, mandate, user, provider).allowed

        try:
            return self._read(work)
        except e.PermissionDenied:
            return False
        except Exception as exc:
            log.error(
                "not allowed: %r may not use provider %r in %r: the decision failed: %s",
                user,
                provider,
                mandate,
                exc,
                exc_info=True,
            )
            return False

    def allowed_providers(self, mandate: str, user: str) -> list[str]:
        """The enabled, registered providers ``user`` may use in ``mandate``, sorted.
        Fails closed: any failure gives an empty list, logged. A principal that
        may not check calls in ``mandate`` (``billing:use``) is refused
        (``PermissionDenied``)."""
        check_name(user, "user")
        self._read(lambda conn: self._authorize(conn, mandate, Scope.USE))

        def work(conn: Connection) -> list[str]:
            facts = self._facts(conn, mandate, user, None)
            roles, rules = self._load_grants(conn, mandate, user, Context.RESOURCE)
            roles = _with_sysadmin(roles, facts)
            refusal = _refusal(facts, mandate, user, roles, None)
            if refusal is not None:
                log.info("no provider allowed: %s", refusal.reason)
                return []
            enabled = [r.provider for r in _ENABLED_PROVIDERS.run(conn, {"yes": True})]
            return [
                p
                for p in enabled
                if decide(rules, roles, Context.RESOURCE, provider_item(p), Permission.VIEW)
            ]

        try:
            return self._read(work)
        except Exception as exc:
            log.error(
                "no provider allowed: listing the providers %r may use in %r failed: %s",
                user,
                mandate,
                exc,
                exc_info=True,
            )
            return []

    # ------------------------------------------------------- decision internals

    def _require_member(self, conn: Connection, mandate: str, user: str) -> None:
        """``user`` is a member of ``mandate``. A principal that may not see the
        platform's users (a mandate's key) is told ``NotAMember`` whether or not
        the name exists elsewhere; the system and system admins are told
        ``UnknownUser`` for a name that exists nowhere."""
        _require_member(conn, mandate, user, name_unknown=self._sees_all_users(conn))

    def _guard(self, mandate: str, user: str, what: str, work: Callable[[], Decision]) -> Decision:
        """Run a decision; log a refusal; turn any error but the database's into one."""
        try:
            decision = work()
        except DBAPIError as exc:
            log.error(
                "not allowed: %r may not %s in %r: the database failed while deciding: %s",
                user,
                what,
                mandate,
                exc.orig,
            )
            raise
        except e.InvalidRequest as exc:
            decision = Decision(False, f"{user!r} may not {what} in {mandate!r}: {exc.message}")
        except Exception as exc:
            reason = (
                f"{user!r} may not {what} in {mandate!r}: error while deciding: "
                f"{type(exc).__name__}: {exc}"
            )
            log.error("not allowed: %s", reason, exc_info=True)
            return Decision(False, reason)
        if decision.allowed:
            log.debug("allowed: %s", decision.reason)
        else:
            log.info("not allowed: %s", decision.reason)
        return decision

    def _decide(
        self,
        conn: Connection,
        mandate: str,
        user: str,
        context: Context,
        item: str,
        permission: Permission,
        *,
        provider: str | None,
    ) -> Decision:
        facts = self._facts(conn, mandate, user, provider)
        if not facts.mandate_known or not facts.user_known:
            refusal = _refusal(facts, mandate, user, (), provider)
            assert refusal is not None
            return refusal
        roles, rules = self._load_grants(conn, mandate, user, context)
        roles = _with_sysadmin(roles, facts)
        refusal = _refusal(facts, mandate, user, roles, provider)
        if refusal is not None:
            return refusal
        return decide(rules, roles, context, item, permission, user=user, mandate=mandate)

    def _facts(self, conn: Connection, mandate: str, user: str, provider: str | None) -> _Facts:
        row = _FACTS.one(conn, {"mandate": mandate, "user": user, "provider": provider})
        return _Facts(
            mandate_known=row.mandate_known is not None,
            user_known=row.user_known is not None,
            member=row.member is not None,
            sysadmin=row.sysadmin is not None,
            enabled=None if row.enabled is None else bool(row.enabled),
        )

    def _load_grants(
        self, conn: Connection, mandate: str, user: str, context: Context
    ) -> tuple[tuple[str, ...], tuple[Rule, ...]]:
        """The member's roles in the mandate, and the mandate's rules for those
        roles in ``context``. A stored rule that is not valid raises: the
        decision is then "not allowed"."""
        rows = _GRANTS.run(conn, {"mandate": mandate, "user": user, "context": context.value})
        roles = tuple(sorted({r.role for r in rows}))
        rules = tuple(_rule_from_row(r._mapping) for r in rows if r.rule_id is not None)
        return roles, rules


# ------------------------------------------------------------------ helpers


def _refusal(
    facts: _Facts, mandate: str, user: str, roles: tuple[str, ...], provider: str | None
) -> Decision | None:
    """The first reason, in the order a person would look, why nothing can be allowed."""
    if not facts.mandate_known:
        return Decision(False, f"mandate {mandate!r} does not exist", roles)
    if not facts.user_known:
        return Decision(False, f"user {user!r} does not exist", roles)
    if not facts.member and not facts.sysadmin:
        return Decision(False, f"{user} is not a member of {mandate}", roles)
    if provider is not None:
        if facts.enabled is None:
            return Decision(False, f"provider {provider} is not registered", roles)
        if not facts.enabled:
            return Decision(False, f"provider {provider} is disabled", roles)
    if not roles:
        return Decision(False, f"{user} has no role in {mandate}", roles)
    return None


def _with_sysadmin(roles: tuple[str, ...], facts: _Facts) -> tuple[str, ...]:
    return tuple(sorted({*roles, SYSADMIN})) if facts.sysadmin else roles


class BrokenRuleData(e.AibillError):
    """A stored permission rule is not valid: decisions that read it are "not
    allowed" until it is removed."""

    code = "broken_rule_data"


def _row_permissions(row: Any) -> frozenset[Permission]:
    return frozenset(p for p, col in _PERMISSION_COLUMNS if bool(row[col]))


def _rule_from_row(row: Any) -> Rule:
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


def _rule_info(row: Any) -> RuleInfo:
    rule = _rule_from_row(row)
    return RuleInfo(
        row["rule_id"],
        row["mandate_id"],
        rule.role,
        rule.context,
        rule.item,
        rule.permissions,
        row["created_at"],
    )


def _rule_infos(conn: Connection, mandate: str) -> list[RuleInfo]:
    c = permission_rules.c
    rows = conn.execute(
        select(permission_rules)
        .where(c.mandate_id == mandate)
        .order_by(c.role, c.context, c.item, c.rule_id)
    ).all()
    return [_rule_info(row._mapping) for row in rows]


def _provider_info(row: Any) -> ProviderInfo:
    return ProviderInfo(
        row.provider, row.display_name, bool(row.enabled), row.created_at, row.updated_at
    )


def _unknown_provider(provider: str) -> e.NotFound:
    return e.NotFound(f"No provider named {provider!r} is registered.", provider=provider)


def _check_display_name(value: str | None) -> str | None:
    if value is None:
        return None
    return check_line(value, "display_name", max_length=MAX_DISPLAY_NAME)


def _check_bool(value: object, field: str) -> None:
    if not isinstance(value, bool):
        raise e.InvalidRequest(f"{field} must be True or False, not {value!r}.", field=field)


def _check_names(mandate: str, user: str) -> None:
    check_name(mandate, "mandate")
    check_name(user, "user")


def _require_mandate(conn: Connection, mandate: str) -> None:
    found = conn.execute(
        select(mandates.c.mandate_id).where(mandates.c.mandate_id == mandate)
    ).first()
    if found is None:
        raise e.UnknownMandate(mandate)


def _require_user(conn: Connection, user: str) -> None:
    if conn.execute(select(users.c.user_id).where(users.c.user_id == user)).first() is None:
        raise e.UnknownUser(user)


def _require_member(
    conn: Connection, mandate: str, user: str, *, name_unknown: bool = True
) -> None:
    """``user`` is a member of ``mandate``; else ``NotAMember``, or, when
    ``name_unknown``, ``UnknownUser`` for a name that exists nowhere."""
    _require_mandate(conn, mandate)
    if name_unknown:
        _require_user(conn, user)
    m = memberships.c
    found = conn.execute(
        select(m.user_id).where(m.mandate_id == mandate, m.user_id == user)
    ).first()
    if found is None:
        raise e.NotAMember(mandate, user)


def require_role(conn: Connection, mandate: str, role: str) -> None:
    """The role is a built-in role of a mandate, or a custom role of this one."""
    if role in MANDATE_ROLES:
        return
    if role == SYSADMIN:
        raise e.InvalidRequest(
            "sysadmin is a platform-wide role, not a mandate's: use add_sysadmin.", field="role"
        )
    c = custom_roles.c
    found = conn.execute(select(c.role).where(c.mandate_id == mandate, c.role == role)).first()
    if found is None:
        raise e.InvalidRequest(
            f"Mandate {mandate!r} has no role {role!r}: the built-in roles are "
            f"{', '.join(MANDATE_ROLES)}; define a custom role with define_role first.",
            field="role",
        )


def roles_of(conn: Connection, mandate: str, user: str) -> list[str]:
    """The roles ``user`` holds in ``mandate``, sorted."""
    r = member_roles.c
    rows = conn.execute(
        select(r.role).where(r.mandate_id == mandate, r.user_id == user).order_by(r.role)
    ).all()
    return [row.role for row in rows]


def _is_sysadmin(conn: Connection, user: str) -> bool:
    found = conn.execute(
        select(platform_admins.c.user_id).where(platform_admins.c.user_id == user)
    ).first()
    return found is not None
