"""How the settings services (pricing, access, keys) ask the billing service
who may change what, and write the audit log, inside their own transactions.

Standalone (an embedding program building one of them directly) they trust
their caller and keep no audit log; the billing service passes its own
principal's guard and audit writer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Engine

from aibill.domain.clock import Clock, system_clock
from aibill.domain.errors import InvalidRequest, PermissionDenied
from aibill.domain.principal import Scope
from aibill.store import tx

T = TypeVar("T")

Guard = Callable[[Connection, "str | None", Scope], None]
"""``guard(conn, mandate or None for the platform, scope needed)``: raise to refuse."""

Auditor = Callable[[Connection, "str | None", str, "str | None", Any, Any], None]
"""``auditor(conn, mandate or None, action, target, before, after)``."""


def trust(conn: Connection, mandate: str | None, need: Scope) -> None:
    """Standalone use: the embedding program is trusted."""


def no_audit(
    conn: Connection, mandate: str | None, action: str, target: str | None, before: Any, after: Any
) -> None:
    """Standalone use: no audit log."""


class SettingsService:
    """What the settings services share: their engine and clock, a unit of work
    per call, and the guard and audit writer of the principal they act for."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = system_clock,
        guard: Guard | None = None,
        auditor: Auditor | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._authorize: Guard = guard or trust
        self._auditor: Auditor = auditor or no_audit

    def bound(self, guard: Guard, auditor: Auditor) -> Self:
        """This service acting under another principal's guard and audit."""
        view = copy.copy(self)
        view._authorize, view._auditor = guard, auditor
        return view

    def _sees_all_users(self, conn: Connection) -> bool:
        """Whether this principal may learn if a user name exists outside its
        mandate: the system and system admins (who may read the platform) may; a
        mandate's principals are told only whether a user is a member there
        (``not_a_member`` either way; see ``docs/access.md``)."""
        try:
            self._authorize(conn, None, Scope.READ)
        except PermissionDenied:
            return False
        return True

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise InvalidRequest("the clock must return timezone-aware datetimes")
        return now

    def _write(self, work: Callable[[Connection], T]) -> T:
        return tx.run(self._engine, work)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return tx.run(self._engine, work, read_only=True)
