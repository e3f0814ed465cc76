"""Value types returned by the library. Immutable; money as Decimal."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypedDict

from aibill.domain.errors import InvalidRequest
from aibill.domain.text import check_line

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
MAX_KEY_LENGTH = 200
MAX_REASON_LENGTH = 64
MAX_DESCRIPTION_LENGTH = 500
MAX_TAG_LENGTH = 128
TAG_MAX_LENGTHS = {
    "provider": 64,
    "model": MAX_TAG_LENGTH,
    "feature_code": 64,
    "feature_instance": MAX_TAG_LENGTH,
    "workflow_id": MAX_TAG_LENGTH,
}
"""How long each tag may be (what the ledger's columns hold)."""


class BillingModel(StrEnum):
    UNLIMITED = "unlimited"
    PREPAY_MANDATE = "prepay_mandate"
    PREPAY_USER = "prepay_user"

    @property
    def enforced(self) -> bool:
        """Prepaid models refuse what the balance cannot pay; unlimited records only."""
        return self is not BillingModel.UNLIMITED


class EntryKind(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"


class HoldStatus(StrEnum):
    PENDING = "pending"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


POOL_ACCOUNT = "pool"


def wallet_account(user: str) -> str:
    return f"user:{user}"


def check_name(value: object, what: str) -> str:
    """Mandate and user names: 1-128 of letters, digits and ``_ . @ -``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidRequest(
            f"{what} must be 1-128 characters of letters, digits, '_', '.', '@' or '-' "
            f"starting with a letter or digit, not {value!r}.",
            field=what,
        )
    return value


def check_key(value: object) -> str:
    """An idempotency key: one line of text (see :mod:`aibill.domain.text`),
    not blank, at most ``MAX_KEY_LENGTH`` characters."""
    return check_line(value, "idempotency_key", max_length=MAX_KEY_LENGTH)


@dataclass(frozen=True, slots=True)
class Tags:
    """What a call is about: the provider and model, and where in the product it ran."""

    provider: str | None = None
    model: str | None = None
    feature_code: str | None = None
    feature_instance: str | None = None
    workflow_id: str | None = None

    def __post_init__(self) -> None:
        for name, max_length in TAG_MAX_LENGTHS.items():
            value = getattr(self, name)
            if value is not None:
                check_line(value, name, max_length=max_length)
        if self.model is not None and self.provider is None:
            raise InvalidRequest("model needs its provider.", field="provider")

    def as_request(self) -> dict[str, str | None]:
        return {
            "provider": self.provider,
            "model": self.model,
            "feature_code": self.feature_code,
            "feature_instance": self.feature_instance,
            "workflow_id": self.workflow_id,
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The answer to "may this call start?" (concepts.md rule 1). It changes nothing."""

    allowed: bool
    reason: str
    balance: Decimal
    available: Decimal
    billing_model: BillingModel
    account: str
    currency: str
    estimate: Decimal


@dataclass(frozen=True, slots=True)
class SpendingLimit:
    """At most ``amount`` per ``period`` for one user or one feature instance."""

    mandate: str
    scope: str
    subject: str
    period: str
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Mandate:
    id: str
    billing_model: BillingModel
    currency: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Member:
    """A user's membership of a mandate and their roles in it."""

    user: str
    roles: tuple[str, ...]
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    """The state of one account. ``available = balance - pending + overdraft_limit``."""

    balance: Decimal
    available: Decimal
    pending: Decimal
    currency: str
    account: str
    mandate: str
    credits_posted: Decimal
    debits_posted: Decimal
    overdraft_limit: Decimal
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    mandate: str
    account: str
    user: str | None
    amount: Decimal
    currency: str
    status: HoldStatus
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None = None
    captured_amount: Decimal | None = None
    entry_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    model: str | None = None
    model_matched: str | None = None
    feature_code: str | None = None
    feature_instance: str | None = None
    workflow_id: str | None = None
    estimate: dict[str, Any] | None = None
    replayed: bool = False

    def as_replay(self) -> Hold:
        return replace(self, replayed=True)


@dataclass(frozen=True, slots=True)
class Entry:
    """One immutable ledger row."""

    id: str
    mandate: str
    account: str
    kind: EntryKind
    amount: Decimal
    currency: str
    reason: str
    posted_at: datetime
    balance_after: Decimal
    user: str | None = None
    hold_id: str | None = None
    over_balance: bool = False
    shortfall: Decimal = Decimal("0.000000")
    captured_after_expiry: bool = False
    corrects: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    model: str | None = None
    model_matched: str | None = None
    feature_code: str | None = None
    feature_instance: str | None = None
    workflow_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    provider_cost: Decimal | None = None
    provider_currency: str | None = None
    price_source: str | None = None
    fx_rate: Decimal | None = None
    markup_percent: Decimal | None = None
    breakdown: dict[str, Any] | None = None
    over_limit: str | None = None
    provider_not_allowed: bool = False
    replayed: bool = False

    def as_replay(self) -> Entry:
        return replace(self, replayed=True)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of history, newest first; pass ``cursor`` back for the next."""

    entries: list[Entry]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class Drift:
    """A difference between an account's stored counter and what its rows add up to."""

    mandate: str
    account: str
    counter: str
    stored_micros: int
    computed_micros: int


class HistoryFilters(TypedDict, total=False):
    """The filters of ``Billing.history`` (and of its CSV export)."""

    user: str | None
    account: str | None
    kind: str | EntryKind | None
    reason: str | None
    hold_id: str | None
    provider: str | None
    model: str | None
    feature_code: str | None
    feature_instance: str | None
    workflow_id: str | None
    since: datetime | None
    until: datetime | None


class UsageFilters(TypedDict, total=False):
    """The filters of ``Billing.usage_report`` (and of its CSV export)."""

    since: datetime | None
    until: datetime | None
    user: str | None
    provider: str | None
    model: str | None
    feature_code: str | None
    feature_instance: str | None
    workflow_id: str | None
