"""A short scripted story on a local ledger, printing balances as it goes.

Idempotent: every write carries a fixed idempotency key, so running it again
replays instead of charging twice, and the balances printed stay the same.
"""

from __future__ import annotations

from decimal import Decimal

from aibill import Billing, InsufficientBalance


def _line(billing: Billing, mandate: str, user: str | None = None, note: str = "") -> None:
    b = billing.balance(mandate, user=user)
    who = f"{mandate}/{b.account}"
    print(
        f"  {who:<24} balance {b.balance:>12} {b.currency}"
        f"   pending {b.pending:>10}   available {b.available:>12}   {note}"
    )


def run(billing: Billing) -> None:
    print("aibill demo: a prepaid pool, per-user wallets and an unlimited mandate\n")
    billing.create_mandate("demo-acme", billing_model="prepay_mandate", currency="CHF")
    billing.create_mandate("demo-labs", billing_model="prepay_user", currency="EUR")
    billing.create_mandate("demo-corp", billing_model="unlimited", currency="USD")
    for user in ("alice", "bob"):
        billing.add_user(user)
        for mandate in ("demo-acme", "demo-labs", "demo-corp"):
            billing.add_member(mandate, user)

    print("1. Top up acme's pool with 100 CHF, labs' wallets with 20 and 5 EUR")
    billing.credit("demo-acme", Decimal("100"), reason="payment", idempotency_key="demo-pay-1")
    billing.credit("demo-labs", Decimal("20"), user="alice", idempotency_key="demo-pay-2")
    billing.credit("demo-labs", Decimal("5"), user="bob", idempotency_key="demo-pay-3")
    _line(billing, "demo-acme")
    _line(billing, "demo-labs", "alice")
    _line(billing, "demo-labs", "bob")

    print("\n2. Alice starts a call at acme: hold 0.50 CHF, then capture the real 0.31")
    hold = billing.hold(
        "demo-acme", amount=Decimal("0.50"), user="alice", idempotency_key="demo-hold-1"
    )
    _line(billing, "demo-acme", note=f"(hold {hold.status})")
    billing.capture(hold.id, amount=Decimal("0.31"), idempotency_key="demo-capture-1")
    _line(billing, "demo-acme", note="(captured 0.31)")

    print("\n3. Bob at labs asks for 8 EUR with 5 in his wallet: refused, nothing moves")
    try:
        billing.hold("demo-labs", amount=Decimal("8"), user="bob", idempotency_key="demo-hold-2")
    except InsufficientBalance as refusal:
        print(f"  refused [{refusal.code}]: {refusal.message}")
    _line(billing, "demo-labs", "bob")

    print("\n4. corp is unlimited: usage is recorded and invoiced later")
    billing.record_usage(
        "demo-corp", amount=Decimal("12.345678"), user="bob", idempotency_key="demo-usage-1"
    )
    _line(billing, "demo-corp")

    drift = billing.verify()
    print(f"\nverify: {drift if drift else 'ledger is sound'}")
