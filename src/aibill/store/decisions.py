"""What an access decision reads, on the driver's cursor (``store.fast``): a
provider decision is two statements in the caller's transaction, an admin
decision one; and the questions every authorization asks (is the user a
member, do they hold a role, are they a system admin), which run before each
operation.
"""

from __future__ import annotations

from sqlalchemy import Connection

from aibill.store import fast

__all__ = [
    "admin_facts",
    "enabled_providers",
    "facts",
    "grants",
    "has_role",
    "is_member",
    "is_sysadmin",
]

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
_ROLE = fast.Statement(
    "SELECT role FROM member_roles WHERE mandate_id = :mandate AND user_id = :user AND role = :role"
)
_MEMBER = fast.Statement(
    "SELECT user_id FROM memberships WHERE mandate_id = :mandate AND user_id = :user"
)
_SYSADMIN = fast.Statement("SELECT user_id FROM platform_admins WHERE user_id = :user")
_ENABLED_PROVIDERS = fast.Statement(
    "SELECT provider FROM providers WHERE enabled = :yes ORDER BY provider"
)


def facts(conn: Connection, mandate: str, user: str, provider: str | None) -> fast.Row:
    """One row: ``mandate_known``, ``user_known``, ``member``, ``sysadmin`` (each
    1 or NULL) and the provider's ``enabled`` (NULL: not registered, or no
    provider asked)."""
    return _FACTS.one(conn, {"mandate": mandate, "user": user, "provider": provider})


def grants(conn: Connection, mandate: str, user: str, context: str) -> list[fast.Row]:
    """A row per role the member holds, joined with each of the mandate's rules
    for that role in ``context`` (``rule_id`` NULL: a role without rules)."""
    return _GRANTS.run(conn, {"mandate": mandate, "user": user, "context": context})


def admin_facts(conn: Connection, mandate: str, user: str, admin_role: str) -> fast.Row:
    """One row: ``sysadmin`` and ``admin`` (the member holds ``admin_role``), each 1 or NULL."""
    return _ADMIN_FACTS.one(conn, {"mandate": mandate, "user": user, "admin": admin_role})


def enabled_providers(conn: Connection) -> list[str]:
    """The registered providers that are enabled, by name."""
    return [row.provider for row in _ENABLED_PROVIDERS.run(conn, {"yes": True})]


def has_role(conn: Connection, mandate: str, user: str, role: str) -> bool:
    """Whether ``user`` holds ``role`` in ``mandate`` itself (not as a system admin)."""
    return _ROLE.first(conn, {"mandate": mandate, "user": user, "role": role}) is not None


def is_member(conn: Connection, mandate: str, user: str) -> bool:
    return _MEMBER.first(conn, {"mandate": mandate, "user": user}) is not None


def is_sysadmin(conn: Connection, user: str) -> bool:
    return _SYSADMIN.first(conn, {"user": user}) is not None
