"""Web sessions: a mandate's (``web_sessions``) and the platform's
(``platform_web_sessions``). ``mandate`` None names the platform's table, so
a lookup never crosses mandates.

SQLAlchemy Core; the statements of each table are built once, their values
bound when they run, in the caller's unit of work (``conn``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Delete,
    Insert,
    Row,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    or_,
    select,
    update,
)

from aibill.store.schema import (
    api_keys,
    memberships,
    platform_admins,
    platform_api_keys,
    platform_web_sessions,
    web_sessions,
)

__all__ = ["delete_ended", "delete_session", "insert_session", "record_use", "session"]


@dataclass(frozen=True, slots=True)
class _Statements:
    delete_ended: Delete
    insert: Insert
    session: Select[Any]
    delete: Delete
    record_use: Update


def _statements(
    table: Table, scope: list[ColumnElement[bool]], keys: Table, joined: Any, holder: Any
) -> _Statements:
    """``scope`` names the sessions of one owner, ``keys`` is the table of the
    keys they were opened with, ``joined`` the sessions joined with their keys
    and who may hold them, ``holder`` NULL when nobody may."""
    s, k = table.c, keys.c
    one = [*scope, s.session_id == bindparam("session")]
    ended = or_(s.expires_at <= bindparam("now"), s.last_seen_at <= bindparam("idle_since"))
    found = select(
        s.key_id,
        s.secret_hash,
        s.created_at,
        s.expires_at,
        s.last_seen_at,
        k.user_id,
        k.scopes,
        k.expires_at.label("key_expires_at"),
        k.revoked_at,
        holder.is_not(None).label("holder"),
    )
    return _Statements(
        delete_ended=delete(table).where(*scope, ended),
        insert=table.insert(),
        session=found.select_from(joined).where(*one),
        delete=delete(table).where(*one),
        record_use=update(table)
        .where(*one, s.last_seen_at <= bindparam("stale_at"))
        .values(last_seen_at=bindparam("last_seen_at")),
    )


_MEMBER = _statements(
    web_sessions,
    [web_sessions.c.mandate_id == bindparam("mandate")],
    api_keys,
    web_sessions.join(
        api_keys,
        and_(
            api_keys.c.mandate_id == web_sessions.c.mandate_id,
            api_keys.c.key_id == web_sessions.c.key_id,
        ),
    ).outerjoin(
        memberships,
        and_(
            memberships.c.mandate_id == api_keys.c.mandate_id,
            memberships.c.user_id == api_keys.c.user_id,
        ),
    ),
    memberships.c.user_id,
)
_PLATFORM = _statements(
    platform_web_sessions,
    [],
    platform_api_keys,
    platform_web_sessions.join(
        platform_api_keys, platform_api_keys.c.key_id == platform_web_sessions.c.key_id
    ).outerjoin(platform_admins, platform_admins.c.user_id == platform_api_keys.c.user_id),
    platform_admins.c.user_id,
)


def _of(mandate: str | None) -> _Statements:
    return _PLATFORM if mandate is None else _MEMBER


def _naming(mandate: str | None, session_id: str | None = None) -> dict[str, Any]:
    named: dict[str, Any] = {} if session_id is None else {"session": session_id}
    if mandate is not None:
        named["mandate"] = mandate
    return named


def delete_ended(
    conn: Connection, mandate: str | None, *, now: datetime, idle_since: datetime
) -> None:
    """Delete the sessions of ``mandate`` (None: the platform's) that expired by
    ``now`` or were last seen no later than ``idle_since``."""
    conn.execute(
        _of(mandate).delete_ended, {**_naming(mandate), "now": now, "idle_since": idle_since}
    )


def insert_session(conn: Connection, mandate: str | None, values: Mapping[str, Any]) -> None:
    """Store a new session: ``values`` by column, ``mandate_id`` left out."""
    row = dict(values) if mandate is None else {**values, "mandate_id": mandate}
    conn.execute(_of(mandate).insert, row)


def session(conn: Connection, mandate: str | None, session_id: str) -> Row[Any] | None:
    """The session's row, its key's user, scopes, expiry (``key_expires_at``) and
    revocation, and ``holder``: whether the key's user still holds the right to
    it; one statement. None if there is no such session."""
    return conn.execute(_of(mandate).session, _naming(mandate, session_id)).first()


def delete_session(conn: Connection, mandate: str | None, session_id: str) -> None:
    conn.execute(_of(mandate).delete, _naming(mandate, session_id))


def record_use(
    conn: Connection, mandate: str | None, session_id: str, *, at: datetime, stale_at: datetime
) -> None:
    """Set the session's last request to ``at`` when the one recorded is not after
    ``stale_at`` (conditional, so racing requests write it once)."""
    params = {**_naming(mandate, session_id), "last_seen_at": at, "stale_at": stale_at}
    conn.execute(_of(mandate).record_use, params)
