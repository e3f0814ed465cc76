"""The public surface: what ``import aibill`` offers and how its errors read."""

from __future__ import annotations

import inspect
from decimal import Decimal

import aibill
from aibill.domain import errors


def test_all_names_exist_and_are_public() -> None:
    for name in aibill.__all__:
        assert hasattr(aibill, name), name
    assert {"connect", "Billing", "Balance", "Hold", "Entry", "ManualClock"} <= set(aibill.__all__)


def test_every_error_has_a_unique_stable_code() -> None:
    seen: dict[str, type] = {}

    def refines(sub: type, other: type) -> bool:
        """A stored refusal form of another error keeps that error's code
        (SpendNotAllowed: a PermissionDenied that is also a Refused)."""
        return issubclass(sub, other) and issubclass(sub, errors.Refused) and len(sub.__bases__) > 1

    def walk(cls: type) -> None:
        for sub in cls.__subclasses__():
            code = sub.code  # type: ignore[attr-defined]
            first = seen.get(code)
            assert first in (None, sub) or refines(sub, first) or refines(first, sub), (
                code,
                sub,
                first,
            )
            if first is None or refines(first, sub):
                seen[code] = sub
            walk(sub)

    walk(errors.AibillError)
    assert {
        "insufficient_balance",
        "idempotency_conflict",
        "invalid_amount",
        "hold_not_found",
    } <= set(seen)


def test_errors_serialise_money_as_strings() -> None:
    err = aibill.InsufficientBalance(
        account="pool", available=Decimal("0.5"), required=Decimal("1.25"), currency="CHF"
    )
    data = err.to_dict()
    assert data["code"] == "insufficient_balance"
    assert data["details"]["available"] == "0.5" and data["details"]["required"] == "1.25"
    assert "0.5 CHF available" in data["message"]


BILLING_METHODS = (
    "accounts",
    "add_member",
    "add_user",
    "allowed_providers",
    "as_principal",
    "audit_log",
    "authenticate",
    "balance",
    "balances_for_user",
    "capture",
    "check",
    "close",
    "create_mandate",
    "credit",
    "estimate",
    "export_history_csv",
    "export_usage_report_csv",
    "get_hold",
    "get_mandate",
    "history",
    "hold",
    "is_provider_allowed",
    "iter_history_csv",
    "iter_usage_report_csv",
    "mandates",
    "may",
    "members",
    "open_holds",
    "record_usage",
    "release",
    "set_billing_model",
    "set_overdraft_limit",
    "set_spending_limit",
    "spending_limits",
    "sweep_expired",
    "usage_report",
    "users",
    "verify",
)


def test_billing_keeps_its_methods_with_their_signatures_and_docs() -> None:
    """Each method of ``Billing`` is a capability's, seen with the capability's
    signature (less ``self``) and docstring, on the class and on an instance."""
    billing = aibill.connect("sqlite:///:memory:")
    try:
        for name in BILLING_METHODS:
            on_class = inspect.signature(getattr(aibill.Billing, name))
            bound = getattr(billing, name)
            assert callable(bound), name
            assert next(iter(on_class.parameters)) == "self", name
            assert list(inspect.signature(bound).parameters) == list(on_class.parameters)[1:]
        assert aibill.Billing.hold.__doc__ and "Reserve money" in aibill.Billing.hold.__doc__
        for name in ("engine", "principal", "clock", "pricing", "keys", "access"):
            assert getattr(billing, name) is not None, name
    finally:
        billing.close()
