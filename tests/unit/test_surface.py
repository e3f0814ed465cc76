"""The public surface: what ``import aibill`` offers and how its errors read."""

from __future__ import annotations

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
