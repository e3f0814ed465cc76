"""Trusted reads of who is on the ledger, for the programs that run it (the
server's first start, the seed's billing interface). They check no principal's
rights: their callers act for the platform itself."""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from aibill.domain.errors import UnknownUser
from aibill.store import access as access_store
from aibill.store import tenants, tx


def has_sysadmin(engine: Engine) -> bool:
    """Whether any user is a system admin (none before the first start)."""
    return tx.run(engine, lambda conn: access_store.count_sysadmins(conn) > 0, read_only=True)


def mandates_of(engine: Engine, user: str, *, limit: int) -> list[str]:
    """The first ``limit`` mandates ``user`` belongs to, by mandate id, in one
    read; ``UnknownUser`` when ``user`` is not registered."""

    def work(conn: Connection) -> list[str]:
        if not access_store.user_exists(conn, user):
            raise UnknownUser(user)
        return tenants.mandates_of_user(conn, user, limit=limit)

    return tx.run(engine, work, read_only=True)
