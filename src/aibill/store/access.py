"""Who is who, and who may do what: the statements over mandates, users and
memberships (existence checks), the provider registry, the system admins,
members' roles, custom roles and permission rules.

SQLAlchemy Core; every statement is built once, its values bound when it
runs. Functions return rows or plain values and run in the caller's unit of
work (``conn``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    Row,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from aibill.store.schema import (
    custom_roles,
    mandates,
    member_roles,
    permission_rules,
    platform_admins,
    providers,
    users,
)

__all__ = [
    "add_role",
    "add_sysadmin",
    "count_rules",
    "count_sysadmins",
    "custom_role",
    "define_role",
    "delete_rule",
    "describe_role",
    "insert_provider",
    "insert_rule",
    "list_custom_roles",
    "list_providers",
    "list_rules",
    "lock_sysadmins",
    "mandate_exists",
    "provider",
    "remove_role",
    "remove_sysadmin",
    "roles_of",
    "rules_like",
    "set_provider",
    "set_provider_enabled",
    "user_exists",
]

# Bound values are named apart from the columns an INSERT or UPDATE sets.
_MANDATE: BindParameter[str] = bindparam("mandate")
_USER: BindParameter[str] = bindparam("user")
_PROVIDER: BindParameter[str] = bindparam("provider_name")
_ROLE: BindParameter[str] = bindparam("role_name")

# ------------------------------------------------------------------ who exists

_MANDATE_EXISTS = select(mandates.c.mandate_id).where(mandates.c.mandate_id == _MANDATE)
_USER_EXISTS = select(users.c.user_id).where(users.c.user_id == _USER)


def mandate_exists(conn: Connection, mandate: str) -> bool:
    return conn.execute(_MANDATE_EXISTS, {"mandate": mandate}).first() is not None


def user_exists(conn: Connection, user: str) -> bool:
    return conn.execute(_USER_EXISTS, {"user": user}).first() is not None


# ------------------------------------------------------------ provider registry

_PROVIDER_ROW = select(providers).where(providers.c.provider == _PROVIDER)
_PROVIDERS = select(providers).order_by(providers.c.provider)
_INSERT_PROVIDER = insert(providers)
_SET_PROVIDER = (
    update(providers)
    .where(providers.c.provider == _PROVIDER)
    .values(
        display_name=bindparam("display_name"),
        enabled=bindparam("enabled"),
        updated_at=bindparam("updated_at"),
    )
)
_SET_PROVIDER_ENABLED = (
    update(providers)
    .where(providers.c.provider == _PROVIDER)
    .values(enabled=bindparam("enabled"), updated_at=bindparam("updated_at"))
)


def provider(conn: Connection, name: str) -> Row[Any] | None:
    """The registry's row for a provider, or None."""
    return conn.execute(_PROVIDER_ROW, {"provider_name": name}).first()


def list_providers(conn: Connection) -> Sequence[Row[Any]]:
    """Every registered provider, by name."""
    return conn.execute(_PROVIDERS).all()


def insert_provider(
    conn: Connection, name: str, *, display_name: str, enabled: bool, at: datetime
) -> None:
    conn.execute(
        _INSERT_PROVIDER,
        {
            "provider": name,
            "display_name": display_name,
            "enabled": enabled,
            "created_at": at,
            "updated_at": at,
        },
    )


def set_provider(
    conn: Connection, name: str, *, display_name: str, enabled: bool, at: datetime
) -> None:
    conn.execute(
        _SET_PROVIDER,
        {"provider_name": name, "display_name": display_name, "enabled": enabled, "updated_at": at},
    )


def set_provider_enabled(conn: Connection, name: str, *, enabled: bool, at: datetime) -> None:
    conn.execute(
        _SET_PROVIDER_ENABLED, {"provider_name": name, "enabled": enabled, "updated_at": at}
    )


# ---------------------------------------------------------------- system admins

_COUNT_SYSADMINS = select(func.count()).select_from(platform_admins)
_LOCK_SYSADMINS = select(platform_admins.c.user_id).with_for_update()
_ADD_SYSADMIN = insert(platform_admins)
_REMOVE_SYSADMIN = delete(platform_admins).where(platform_admins.c.user_id == _USER)


def count_sysadmins(conn: Connection) -> int:
    """How many users are system admins."""
    return int(conn.execute(_COUNT_SYSADMINS).scalar_one())


def lock_sysadmins(conn: Connection) -> list[str]:
    """Every system admin, their rows locked until the unit of work ends
    (SQLite: the write lock taken at BEGIN)."""
    return list(conn.execute(_LOCK_SYSADMINS).scalars().all())


def add_sysadmin(conn: Connection, user: str, *, at: datetime) -> None:
    conn.execute(_ADD_SYSADMIN, {"user_id": user, "created_at": at})


def remove_sysadmin(conn: Connection, user: str) -> None:
    conn.execute(_REMOVE_SYSADMIN, {"user": user})


# ------------------------------------------------------------------ members' roles

_ROLES_OF = (
    select(member_roles.c.role)
    .where(member_roles.c.mandate_id == _MANDATE, member_roles.c.user_id == _USER)
    .order_by(member_roles.c.role)
)
_ADD_ROLE = insert(member_roles)
_REMOVE_ROLE = delete(member_roles).where(
    member_roles.c.mandate_id == _MANDATE,
    member_roles.c.user_id == _USER,
    member_roles.c.role == _ROLE,
)


def roles_of(conn: Connection, mandate: str, user: str) -> list[str]:
    """The roles ``user`` holds in ``mandate``, sorted."""
    rows = conn.execute(_ROLES_OF, {"mandate": mandate, "user": user}).all()
    return [row.role for row in rows]


def add_role(conn: Connection, mandate: str, user: str, role: str, *, at: datetime) -> None:
    conn.execute(
        _ADD_ROLE, {"mandate_id": mandate, "user_id": user, "role": role, "created_at": at}
    )


def remove_role(conn: Connection, mandate: str, user: str, role: str) -> None:
    conn.execute(_REMOVE_ROLE, {"mandate": mandate, "user": user, "role_name": role})


# ------------------------------------------------------------------ custom roles

_CUSTOM_ROLE = select(custom_roles).where(
    custom_roles.c.mandate_id == _MANDATE, custom_roles.c.role == _ROLE
)
_CUSTOM_ROLES = (
    select(custom_roles).where(custom_roles.c.mandate_id == _MANDATE).order_by(custom_roles.c.role)
)
_DEFINE_ROLE = insert(custom_roles)
_DESCRIBE_ROLE = (
    update(custom_roles)
    .where(custom_roles.c.mandate_id == _MANDATE, custom_roles.c.role == _ROLE)
    .values(description=bindparam("description"))
)


def custom_role(conn: Connection, mandate: str, role: str) -> Row[Any] | None:
    """The mandate's custom role of that name, or None."""
    return conn.execute(_CUSTOM_ROLE, {"mandate": mandate, "role_name": role}).first()


def list_custom_roles(conn: Connection, mandate: str) -> Sequence[Row[Any]]:
    """The mandate's custom roles, by name."""
    return conn.execute(_CUSTOM_ROLES, {"mandate": mandate}).all()


def define_role(
    conn: Connection, mandate: str, role: str, *, description: str | None, at: datetime
) -> None:
    conn.execute(
        _DEFINE_ROLE,
        {"mandate_id": mandate, "role": role, "description": description, "created_at": at},
    )


def describe_role(conn: Connection, mandate: str, role: str, description: str) -> None:
    conn.execute(
        _DESCRIBE_ROLE, {"mandate": mandate, "role_name": role, "description": description}
    )


# ------------------------------------------------------------- permission rules

_rules = permission_rules.c
_RULES_LIKE = select(permission_rules).where(
    _rules.mandate_id == _MANDATE,
    _rules.role == _ROLE,
    _rules.context == bindparam("context_name"),
    _rules.item == bindparam("item_key"),
)
_COUNT_RULES = (
    select(func.count()).select_from(permission_rules).where(_rules.mandate_id == _MANDATE)
)
_INSERT_RULE = insert(permission_rules)
_DELETE_RULE = (
    delete(permission_rules)
    .where(_rules.mandate_id == _MANDATE, _rules.rule_id == bindparam("rule"))
    .returning(
        _rules.role,
        _rules.context,
        _rules.item,
        _rules.can_view,
        _rules.can_create,
        _rules.can_update,
        _rules.can_delete,
    )
)
_LIST_RULES = (
    select(permission_rules)
    .where(_rules.mandate_id == _MANDATE)
    .order_by(_rules.role, _rules.context, _rules.item, _rules.rule_id)
)


def rules_like(
    conn: Connection, mandate: str, role: str, context: str, item: str
) -> Sequence[Row[Any]]:
    """The mandate's rules for ``role`` on ``item`` in ``context``."""
    params = {"mandate": mandate, "role_name": role, "context_name": context, "item_key": item}
    return conn.execute(_RULES_LIKE, params).all()


def count_rules(conn: Connection, mandate: str) -> int:
    return int(conn.execute(_COUNT_RULES, {"mandate": mandate}).scalar_one())


def insert_rule(conn: Connection, values: Mapping[str, Any]) -> None:
    """Store one rule: ``values`` by column (``mandate_id``, ``rule_id``, ...)."""
    conn.execute(_INSERT_RULE, dict(values))


def delete_rule(conn: Connection, mandate: str, rule_id: str) -> dict[str, Any] | None:
    """Delete one rule; the rule as it was (role, context, item and the
    ``can_*`` columns, by column), or None when the mandate has no such rule."""
    gone = conn.execute(_DELETE_RULE, {"mandate": mandate, "rule": rule_id}).all()
    return dict(gone[0]._mapping) if gone else None


def list_rules(conn: Connection, mandate: str) -> Sequence[Row[Any]]:
    """The mandate's rules, by role, context, item and id."""
    return conn.execute(_LIST_RULES, {"mandate": mandate}).all()
