"""Who is asking: the principal every service operation acts for.

A principal is a user acting in one mandate (an API key bound to a member), a
system admin (platform-wide), or the trusted *system* principal that an
embedding program uses when it calls the library directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class PrincipalKind(StrEnum):
    SYSTEM = "system"
    SYSADMIN = "sysadmin"
    USER = "user"


class Scope(StrEnum):
    """What an API key may do, whatever the roles of its user allow."""

    USE = "billing:use"  # checks, estimates, holds, captures, releases, usage records
    READ = "billing:read"  # balances, history, reports, settings
    ADMIN = "billing:admin"  # credits, settings, prices, rates, roles, rules, keys


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    user: str | None = None
    mandate: str | None = None
    scopes: frozenset[Scope] = field(default_factory=lambda: ALL_SCOPES)
    key_id: str | None = None

    @property
    def name(self) -> str:
        """How audit records name this principal."""
        if self.kind is PrincipalKind.SYSTEM:
            return "system"
        who = f"{self.kind.value}:{self.user}"
        return f"{who} (key {self.key_id})" if self.key_id else who


SYSTEM = Principal(PrincipalKind.SYSTEM)
