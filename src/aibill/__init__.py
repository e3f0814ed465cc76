"""aibill: billing for AI usage.

import aibill
billing = aibill.connect("sqlite:///aibill.db")
billing.create_mandate("acme", billing_model="prepay_mandate", currency="CHF")
billing.credit("acme", Decimal("100"), idempotency_key="pay-1")
hold = billing.hold("acme", amount=Decimal("0.50"), idempotency_key="call-1")
billing.capture(hold.id, amount=Decimal("0.31"))

Importing this package is cheap: each name below is imported from its home
module the first time it is used (``import aibill.domain`` loads neither the
database layer nor the HTTP client; see docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aibill.catalog import Catalog
    from aibill.client import (
        Client,
        HeldCall,
        ServiceUnavailable,
    )
    from aibill.domain.batch import RecordOutcome, UsageRecord
    from aibill.domain.clock import (
        Clock,
        ManualClock,
        system_clock,
    )
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
    from aibill.domain.prices import Charge
    from aibill.domain.principal import (
        SYSTEM,
        Principal,
        PrincipalKind,
        Scope,
    )
    from aibill.domain.reports import (
        UsageRow,
        UserBalance,
    )
    from aibill.domain.usage import (
        ProviderCost,
        Usage,
    )
    from aibill.domain.version import __version__
    from aibill.service.billing import Billing
    from aibill.service.connect import connect
    from aibill.service.pricing import calculate_price_with_markup

_HOMES: dict[str, str] = {
    "Catalog": "aibill.catalog",
    "Client": "aibill.client",
    "HeldCall": "aibill.client",
    "ServiceUnavailable": "aibill.client",
    "Clock": "aibill.domain.clock",
    "ManualClock": "aibill.domain.clock",
    "system_clock": "aibill.domain.clock",
    "AibillError": "aibill.domain.errors",
    "AlreadyExists": "aibill.domain.errors",
    "Conflict": "aibill.domain.errors",
    "HoldAlreadyCaptured": "aibill.domain.errors",
    "HoldAlreadyReleased": "aibill.domain.errors",
    "HoldNotFound": "aibill.domain.errors",
    "HoldsInFlight": "aibill.domain.errors",
    "IdempotencyConflict": "aibill.domain.errors",
    "InsufficientBalance": "aibill.domain.errors",
    "InvalidAmount": "aibill.domain.errors",
    "InvalidApiKey": "aibill.domain.errors",
    "InvalidRequest": "aibill.domain.errors",
    "LastSystemAdmin": "aibill.domain.errors",
    "LimitExceeded": "aibill.domain.errors",
    "MissingExchangeRate": "aibill.domain.errors",
    "NotAMember": "aibill.domain.errors",
    "NotFound": "aibill.domain.errors",
    "PermissionDenied": "aibill.domain.errors",
    "ProviderNotAllowed": "aibill.domain.errors",
    "Refused": "aibill.domain.errors",
    "StoreUnavailable": "aibill.domain.errors",
    "UnknownAccount": "aibill.domain.errors",
    "UnknownMandate": "aibill.domain.errors",
    "UnknownModel": "aibill.domain.errors",
    "UnknownUser": "aibill.domain.errors",
    "Balance": "aibill.domain.model",
    "BillingModel": "aibill.domain.model",
    "CheckResult": "aibill.domain.model",
    "Drift": "aibill.domain.model",
    "Entry": "aibill.domain.model",
    "EntryKind": "aibill.domain.model",
    "Hold": "aibill.domain.model",
    "HoldStatus": "aibill.domain.model",
    "Mandate": "aibill.domain.model",
    "Member": "aibill.domain.model",
    "Page": "aibill.domain.model",
    "SpendingLimit": "aibill.domain.model",
    "Tags": "aibill.domain.model",
    "Charge": "aibill.domain.prices",
    "Principal": "aibill.domain.principal",
    "PrincipalKind": "aibill.domain.principal",
    "SYSTEM": "aibill.domain.principal",
    "Scope": "aibill.domain.principal",
    "UsageRow": "aibill.domain.reports",
    "UserBalance": "aibill.domain.reports",
    "ProviderCost": "aibill.domain.usage",
    "RecordOutcome": "aibill.domain.batch",
    "UsageRecord": "aibill.domain.batch",
    "Usage": "aibill.domain.usage",
    "__version__": "aibill.domain.version",
    "Billing": "aibill.service.billing",
    "connect": "aibill.service.connect",
    "calculate_price_with_markup": "aibill.service.pricing",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its home module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aibill' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


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
    "RecordOutcome",
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
    "UsageRecord",
    "UsageRow",
    "UserBalance",
    "__version__",
    "calculate_price_with_markup",
    "connect",
    "system_clock",
]
