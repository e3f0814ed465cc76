"""The values of the audit log: one record and one page of records
(written and read by ``aibill.service.audit``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["AuditPage", "AuditRecord"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: str
    mandate: str | None
    at: datetime
    actor: str
    action: str
    target: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: list[AuditRecord]
    cursor: str | None
