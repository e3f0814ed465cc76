"""The values of access control: a provider of the platform's registry, a
mandate's custom role and a stored permission rule (managed by
``aibill.service.access``; the rules themselves are ``aibill.domain.permissions``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aibill.domain.permissions import Context, Permission, Rule

__all__ = ["ProviderInfo", "RoleInfo", "RuleInfo"]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """A provider of the platform's registry."""

    provider: str
    display_name: str
    enabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RoleInfo:
    """A custom role of one mandate."""

    mandate: str
    role: str
    description: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """A permission rule a mandate added (the built-in defaults are not stored)."""

    rule_id: str
    mandate: str
    role: str
    context: Context
    item: str
    permissions: frozenset[Permission]
    created_at: datetime

    @property
    def rule(self) -> Rule:
        return Rule(self.role, self.context, self.item, self.permissions)
