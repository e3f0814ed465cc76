"""The audit logs: a mandate's (``audit_log``) and the platform's
(``platform_audit_log``), append-only. ``mandate`` None names the platform's.

SQLAlchemy Core; each statement is built once (the pages by a cached
builder), its values bound when it runs, in the caller's unit of work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import BindParameter, Connection, Integer, Row, Select, and_, bindparam, or_, select

from aibill.store.schema import audit_log, platform_audit_log

__all__ = ["insert_record", "newest"]

_INSERT = {True: platform_audit_log.insert(), False: audit_log.insert()}


def insert_record(conn: Connection, mandate: str | None, values: Mapping[str, Any]) -> None:
    """Append one record: ``values`` by column, ``mandate_id`` left out."""
    if mandate is None:
        conn.execute(_INSERT[True], dict(values))
    else:
        conn.execute(_INSERT[False], {"mandate_id": mandate, **values})


@cache
def _page(platform: bool, after: bool) -> Select[Any]:
    """Newest first; ``after``: only records older than a (time, id) position."""
    table = platform_audit_log if platform else audit_log
    c = table.c
    conds = [] if platform else [c.mandate_id == bindparam("mandate")]
    if after:
        at: BindParameter[datetime] = bindparam("after_at")
        audit_id: BindParameter[str] = bindparam("after_id")
        conds.append(or_(c.at < at, and_(c.at == at, c.audit_id < audit_id)))
    return (
        select(table)
        .where(*conds)
        .order_by(c.at.desc(), c.audit_id.desc())
        .limit(bindparam("rows", type_=Integer))
    )


def newest(
    conn: Connection,
    mandate: str | None,
    *,
    rows: int,
    after: tuple[datetime, str] | None = None,
) -> Sequence[Row[Any]]:
    """Up to ``rows`` records of ``mandate``'s log (None: the platform's), newest
    first; ``after`` (a record's time and id): only the records older than it."""
    params: dict[str, Any] = {"rows": rows}
    if mandate is not None:
        params["mandate"] = mandate
    if after is not None:
        params["after_at"], params["after_id"] = after
    return conn.execute(_page(mandate is None, after is not None), params).all()
