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

from sqlalchemy import BindParameter, Connection, Integer, Row, Select, bindparam, select, tuple_

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
        # Typed as their columns: inside a row comparison a parameter takes no
        # type from the column it is compared with.
        at: BindParameter[datetime] = bindparam("after_at", type_=c.at.type)
        audit_id: BindParameter[str] = bindparam("after_id", type_=c.audit_id.type)
        conds.append(tuple_(c.at, c.audit_id) < tuple_(at, audit_id))  # an index condition
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
