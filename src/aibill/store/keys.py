"""API keys: a mandate's keys (``api_keys``) and the system admins' keys
(``platform_api_keys``). ``mandate`` None names the platform's table, so a
lookup never crosses mandates.

SQLAlchemy Core; the statements of each table are built once, their values
bound when they run, in the caller's unit of work (``conn``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Insert,
    Row,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    or_,
    select,
    update,
)

from aibill.store.schema import api_keys, memberships, platform_admins, platform_api_keys

__all__ = ["credentials", "insert_key", "key", "list_keys", "record_use", "revoke_key"]


@dataclass(frozen=True, slots=True)
class _Statements:
    key: Select[Any]
    listing: Select[Any]
    insert: Insert
    revoke: Update
    record_use: Update
    credentials: Select[Any]


def _visible(table: Table) -> list[Any]:
    """Every column but the hash: what lists and lookups read."""
    return [c for c in table.c if c.name != "secret_hash"]


def _statements(
    table: Table,
    match: ColumnElement[bool],
    scope: list[ColumnElement[bool]],
    credentials: Select[Any],
) -> _Statements:
    """``match`` names one key, ``scope`` the keys of one owner."""
    k = table.c
    last = k.last_used_at
    return _Statements(
        key=select(*_visible(table)).where(match),
        listing=select(*_visible(table)).where(*scope).order_by(k.created_at, k.key_id),
        insert=table.insert(),
        revoke=update(table)
        .where(match, k.revoked_at.is_(None))
        .values(revoked_at=bindparam("revoked_at")),
        record_use=update(table)
        .where(match, or_(last.is_(None), last <= bindparam("stale_at")))
        .values(last_used_at=bindparam("last_used_at")),
        credentials=credentials,
    )


def _credentials(
    table: Table, joined: Any, holder: ColumnElement[bool], match: ColumnElement[bool]
) -> Select[Any]:
    """The key's row with ``holder``: whether its user still holds the right to it."""
    k = table.c
    columns = (k.user_id, k.secret_hash, k.scopes, k.expires_at, k.revoked_at, k.last_used_at)
    return select(*columns, holder.label("holder")).select_from(joined).where(match)


_MEMBER_MATCH = and_(
    api_keys.c.mandate_id == bindparam("mandate"), api_keys.c.key_id == bindparam("key")
)
_MEMBER = _statements(
    api_keys,
    _MEMBER_MATCH,
    [api_keys.c.mandate_id == bindparam("mandate")],
    _credentials(
        api_keys,
        api_keys.outerjoin(
            memberships,
            and_(
                memberships.c.mandate_id == api_keys.c.mandate_id,
                memberships.c.user_id == api_keys.c.user_id,
            ),
        ),
        memberships.c.user_id.is_not(None),
        _MEMBER_MATCH,
    ),
)
_PLATFORM_MATCH = platform_api_keys.c.key_id == bindparam("key")
_PLATFORM = _statements(
    platform_api_keys,
    _PLATFORM_MATCH,
    [],
    _credentials(
        platform_api_keys,
        platform_api_keys.outerjoin(
            platform_admins, platform_admins.c.user_id == platform_api_keys.c.user_id
        ),
        platform_admins.c.user_id.is_not(None),
        _PLATFORM_MATCH,
    ),
)


def _of(mandate: str | None) -> _Statements:
    return _PLATFORM if mandate is None else _MEMBER


def _naming(mandate: str | None, key_id: str | None = None) -> dict[str, Any]:
    named: dict[str, Any] = {} if key_id is None else {"key": key_id}
    if mandate is not None:
        named["mandate"] = mandate
    return named


def key(conn: Connection, mandate: str | None, key_id: str) -> Row[Any] | None:
    """One key of ``mandate`` (None: the platform's), without its hash; None if unknown."""
    return conn.execute(_of(mandate).key, _naming(mandate, key_id)).first()


def list_keys(conn: Connection, mandate: str | None) -> Sequence[Row[Any]]:
    """Every key of ``mandate`` (None: the platform's), without hashes, oldest first."""
    return conn.execute(_of(mandate).listing, _naming(mandate)).all()


def insert_key(conn: Connection, mandate: str | None, values: Mapping[str, Any]) -> None:
    """Store a new key: ``values`` by column, ``mandate_id`` left out."""
    row = dict(values) if mandate is None else {"mandate_id": mandate, **values}
    conn.execute(_of(mandate).insert, row)


def revoke_key(conn: Connection, mandate: str | None, key_id: str, *, at: datetime) -> None:
    """Mark the key revoked at ``at``, unless it already is."""
    conn.execute(_of(mandate).revoke, {**_naming(mandate, key_id), "revoked_at": at})


def credentials(conn: Connection, mandate: str | None, key_id: str) -> Row[Any] | None:
    """What authenticating the key needs: its user, hash, scopes, expiry,
    revocation and last use, and ``holder``: whether its user still holds the
    right to it (a member of the mandate; for the platform, a system admin)."""
    return conn.execute(_of(mandate).credentials, _naming(mandate, key_id)).first()


def record_use(
    conn: Connection, mandate: str | None, key_id: str, *, at: datetime, stale_at: datetime
) -> None:
    """Set the key's last use to ``at`` when it is unset or not after ``stale_at``
    (conditional, so racing requests write it once)."""
    params = {**_naming(mandate, key_id), "last_used_at": at, "stale_at": stale_at}
    conn.execute(_of(mandate).record_use, params)
