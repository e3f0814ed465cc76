"""How the settings services (pricing, access, keys) ask the billing service
who may change what, and write the audit log, inside their own transactions.

Standalone (an embedding program building one of them directly) they trust
their caller and keep no audit log; the billing service passes its own
principal's guard and audit writer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from aibill.domain.principal import Scope

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
