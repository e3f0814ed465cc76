"""A batch of usage records (``record_usage_batch``): each record, and each
record's outcome (concepts.md rule 13)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from aibill.domain.errors import AibillError
from aibill.domain.model import Entry
from aibill.domain.usage import Usage

MAX_BATCH_RECORDS = 1000


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One usage record of a batch: what :meth:`aibill.Billing.record_usage`
    takes, with its mandate and its own idempotency key."""

    mandate: str
    idempotency_key: str
    amount: Decimal | None = None
    user: str | None = None
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    provider_cost: Decimal | None = None
    provider_currency: str | None = None
    feature_code: str | None = None
    feature_instance: str | None = None
    workflow_id: str | None = None
    already_happened: bool = False
    description: str | None = None
    metadata: Mapping[str, str | int] | None = None


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What became of one record: its entry (posted now, or the first one
    again for a key already used), or the error that refused it."""

    entry: Entry | None = None
    error: AibillError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def code(self) -> str | None:
        """The error's stable code (``insufficient_balance``, ...), or None."""
        return None if self.error is None else self.error.code
