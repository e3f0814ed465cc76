"""The audit log: who changed what, when, from what to what.

Every administrative change writes one record in the same transaction as the
change itself, so a change without its record (or the reverse) cannot exist.
Records are append-only (database triggers refuse UPDATE and DELETE). A
mandate's changes are kept with the mandate; platform-wide changes (exchange
rates, platform prices and markups, the provider registry, system admins,
their keys) in the platform's own log.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain.audit import AuditPage, AuditRecord
from aibill.domain.principal import Principal
from aibill.domain.times import check_time
from aibill.store import audit as audit_store

__all__ = ["MAX_PAGE", "AuditPage", "AuditRecord", "jsonable", "read", "record"]

MAX_PAGE = 1000


def jsonable(value: Any) -> Any:
    """Money and times as strings, enums by value: what an audit record stores."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f: jsonable(getattr(value, f)) for f in value.__dataclass_fields__}
    return value


def record(
    conn: Connection,
    *,
    mandate: str | None,
    actor: Principal,
    action: str,
    at: datetime,
    target: str | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    """Write one audit record inside the caller's transaction."""
    values = {
        "audit_id": f"a{time.time_ns() // 1000:014x}{secrets.token_hex(5)}",
        "at": at,
        "actor": actor.name,
        "action": action,
        "target": target,
        "before": None if before is None else jsonable(before),
        "after": None if after is None else jsonable(after),
    }
    audit_store.insert_record(conn, mandate, values)


def read(
    conn: Connection, mandate: str | None, *, limit: int = 100, cursor: str | None = None
) -> AuditPage:
    """A page of a mandate's audit log (or the platform's), newest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise e.InvalidRequest(f"limit must be from 1 to {MAX_PAGE}.", field="limit")
    after = _decode(cursor) if cursor else None
    rows = audit_store.newest(conn, mandate, rows=limit + 1, after=after)
    records = [
        AuditRecord(
            id=r.audit_id,
            mandate=mandate,
            at=r.at,
            actor=r.actor,
            action=r.action,
            target=r.target,
            before=r.before,
            after=r.after,
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit and records
    return AuditPage(records, _encode(records[-1]) if more else None)


def _encode(rec: AuditRecord) -> str:
    raw = f"{rec.at.isoformat()}|{rec.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, audit_id = raw.split("|", 1)
        when = check_time(datetime.fromisoformat(at), "cursor")
        if "\x00" in audit_id or len(audit_id) > 64:
            raise ValueError
        return when, audit_id
    except (ValueError, UnicodeDecodeError, e.InvalidRequest):
        raise e.InvalidRequest(
            "cursor is not one that the audit log returned.", field="cursor"
        ) from None
