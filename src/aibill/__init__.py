"""aibill: billing for AI usage.

import aibill
billing = aibill.connect("sqlite:///aibill.db")
billing.create_mandate("acme", billing_model="prepay_mandate", currency="CHF")
billing.credit("acme", Decimal("100"), idempotency_key="pay-1")
hold = billing.hold("acme", amount=Decimal("0.50"), idempotency_key="call-1")
billing.capture(hold.id, amount=Decimal("0.31"))
"""

from __future__ import annotations

from aibill.client import Client, HeldCall, ServiceUnavailable
from aibill.domain.clock import Clock, ManualClock, system_clock
from aibill.domain.errors import (
    AibillError,
    AlreadyExists,
    Conflict,
    HoldAlreadyCaptured,
    HoldAlreadyReleased,
    HoldNotFound,
    HoldsInFlight,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidAmount,
    InvalidApiKey,
    InvalidRequest,
    LastSystemAdmin,
    LimitExceeded,
    MissingExchangeRate,
    NotAMember,
    NotFound,
    PermissionDenied,
    ProviderNotAllowed,
    Refused,
    StoreUnavailable,
    UnknownAccount,
    UnknownMandate,
    UnknownModel,
    UnknownUser,
)
from aibill.domain.model import (
    Balance,
    BillingModel,
    CheckResult,
    Drift,
    Entry,
    EntryKind,
    Hold,
    HoldStatus,
    Mandate,
    Member,
    Page,
    SpendingLimit,
    Tags,
)
from aibill.domain.principal import SYSTEM, Principal, PrincipalKind, Scope
from aibill.pricing.catalog import Catalog, ProviderCost, Usage
from aibill.service.billing import Billing
from aibill.service.pricing import Charge, calculate_price_with_markup
from aibill.service.reports import UsageRow, UserBalance
from aibill.store.engine import make_engine
from aibill.store.migrate import upgrade

__version__ = "0.1.0"


def connect(
    url: str = "sqlite:///aibill.db",
    *,
    clock: Clock = system_clock,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 5,
    migrate: bool = True,
    catalog: Catalog | None = None,
) -> Billing:
    """Open the ledger at ``url`` (SQLite or ``postgresql+psycopg://``) and bring
    its schema up to date.

    ``sqlite_synchronous`` trades durability for speed on SQLite: ``FULL``
    (the default) survives power loss; ``NORMAL`` may lose the last
    transactions on power loss (never on a process crash); ``OFF`` is for
    throwaway data only.
    """
    engine = make_engine(url, sqlite_synchronous=sqlite_synchronous, pool_size=pool_size)
    if migrate:
        upgrade(engine)
    return Billing(engine, clock=clock, catalog=catalog)


__all__ = [
    "SYSTEM",
    "AibillError",
    "AlreadyExists",
    "Balance",
    "Billing",
    "BillingModel",
    "Catalog",
    "Charge",
    "CheckResult",
    "Client",
    "Clock",
    "Conflict",
    "Drift",
    "Entry",
    "EntryKind",
    "HeldCall",
    "Hold",
    "HoldAlreadyCaptured",
    "HoldAlreadyReleased",
    "HoldNotFound",
    "HoldStatus",
    "HoldsInFlight",
    "IdempotencyConflict",
    "InsufficientBalance",
    "InvalidAmount",
    "InvalidApiKey",
    "InvalidRequest",
    "LastSystemAdmin",
    "LimitExceeded",
    "Mandate",
    "ManualClock",
    "Member",
    "MissingExchangeRate",
    "NotAMember",
    "NotFound",
    "Page",
    "PermissionDenied",
    "Principal",
    "PrincipalKind",
    "ProviderCost",
    "ProviderNotAllowed",
    "Refused",
    "Scope",
    "ServiceUnavailable",
    "SpendingLimit",
    "StoreUnavailable",
    "Tags",
    "UnknownAccount",
    "UnknownMandate",
    "UnknownModel",
    "UnknownUser",
    "Usage",
    "UsageRow",
    "UserBalance",
    "__version__",
    "calculate_price_with_markup",
    "connect",
    "system_clock",
]
