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
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from aibill.domain import errors as e
from aibill.domain.access import ProviderInfo, RoleInfo, RuleInfo
from aibill.domain.model import check_name
from aibill.domain.permissions import (
    ADMIN,
    PROVIDER_ITEM_PREFIX,
    SPEND_ITEM,
    SYSADMIN,
    Context,
    Decision,
    Permission,
    Rule,
    check_item,
    check_provider,
    decide,
    parse_context,
    parse_permission,
    provider_item,
)
from aibill.domain.principal import Scope
from aibill.service.providers import MAX_DISPLAY_NAME, ProviderRegistry
from aibill.service.roles import (
    MAX_ROLE_DESCRIPTION,
    MAX_RULE_ID,
    MAX_RULES_PER_MANDATE,
    BrokenRuleData,
    Roles,
    require_role,
    roles_of,
    rule_from_row,
)
from aibill.store import decisions as decisions_store

__all__ = [
    "MAX_DISPLAY_NAME",
    "MAX_ROLE_DESCRIPTION",
    "MAX_RULES_PER_MANDATE",
    "MAX_RULE_ID",
    "Access",
    "BrokenRuleData",
    "ProviderInfo",
    "RoleInfo",
    "RuleInfo",
    "require_role",
    "roles_of",
]

log = logging.getLogger("aibill.access")


@dataclass(frozen=True, slots=True)
class _Facts:
    mandate_known: bool
    user_known: bool
    member: bool
    sysadmin: bool
    enabled: bool | None  # None: the provider is not registered (or none was asked)


class Access(ProviderRegistry, Roles):
    """The provider registry, system admins, roles and rules, and the decisions.

    Create it on the ledger's engine: ``Access(billing.engine)``. It is safe
    to share between threads. Registering providers is
    :class:`~aibill.service.providers.ProviderRegistry`'s part, roles and rules
    :class:`~aibill.service.roles.Roles`'; the decisions are made here.
    """

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
            row = decisions_store.admin_facts(conn, mandate, user, ADMIN)
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
            enabled = decisions_store.enabled_providers(conn)
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
        row = decisions_store.facts(conn, mandate, user, provider)
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
        rows = decisions_store.grants(conn, mandate, user, context.value)
        roles = tuple(sorted({r.role for r in rows}))
        rules = tuple(rule_from_row(r._mapping) for r in rows if r.rule_id is not None)
        return roles, rules


# ------------------------------------------------------------- why not


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
