"""The seed's interface, called the way the original gateway's code calls it:
a user object with ``.id``, a mandate id, feature ids, plain numbers in and
out. ``recordUsage(base)`` posts the provider's base price converted and
marked up, as the seed did. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, localcontext
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aibill
from aibill import Balance, Billing, ManualClock
from aibill.compat import gateway
from aibill.compat.gateway import (
    BillingBalanceResponse,
    BillingCheckResult,
    BillingModelEnum,
    BillingTransaction,
    InsufficientBalanceException,
    ProviderNotAllowedException,
    ReferenceTypeEnum,
    TransactionTypeEnum,
    configure,
    getService,
)


@dataclass
class User:
    """What the gateway passes as ``currentUser``."""

    id: str
    username: str = ""


ALICE = User("alice", "Alice")
BOB = User("bob", "Bob")


@pytest.fixture
def ledger(billing: Billing) -> Iterator[Billing]:
    """The gateway configured on a fresh ledger with three mandates:
    acme (prepaid pool, 10 CHF), beta (a wallet per user, EUR), gamma (unlimited).
    The seed's base prices are in CHF here, so a CHF mandate needs no rate and
    ``recordUsage(x)`` posts ``x`` plus the 50 % markup."""
    billing.create_mandate("acme", billing_model="prepay_mandate", currency="CHF")
    billing.create_mandate("beta", billing_model="prepay_user", currency="EUR")
    billing.create_mandate("gamma", billing_model="unlimited", currency="CHF")
    billing.create_mandate("delta", billing_model="prepay_mandate", currency="CHF")
    for user in ("alice", "bob"):
        billing.add_user(user)
        for mandate in ("acme", "beta", "gamma"):
            billing.add_member(mandate, user)
    billing.add_member("delta", "bob")
    billing.credit("acme", D("10"), idempotency_key="topup")
    configure(billing, base_currency="CHF")
    yield billing
    configure(None)


def service(mandate: str = "acme", user: User = ALICE) -> gateway.BillingService:
    return getService(user, mandate, featureInstanceId="fi-1", featureCode="chatplayground")


# ----------------------------------------------------------------- numbers


def test_point_one_plus_point_two_lands_exact(ledger: Billing) -> None:
    svc = service()
    first = svc.recordUsage(0.1, workflowId="wf-1", aicoreProvider="openai")
    second = svc.recordUsage(0.2, workflowId="wf-1", aicoreProvider="openai")
    assert first is not None and second is not None
    assert first.exact.amount == D("0.150000") and second.exact.amount == D("0.300000")
    assert first.exact.provider_cost == D("0.1") and second.exact.provider_cost == D("0.2")
    assert ledger.balance("acme").balance == D("9.550000")  # dropped by exactly 0.45
    assert svc.getCurrentBalance() == 9.55
    # The seed's own float arithmetic, handed in, lands as the price it meant.
    third = svc.recordUsage(0.1 + 0.2)
    assert third is not None and third.exact.provider_cost == D("0.3")
    assert third.exact.amount == D("0.450000")
    assert ledger.balance("acme").balance == D("9.100000")
    assert ledger.verify() == []


def test_amounts_come_back_as_the_seeds_floats(ledger: Billing) -> None:
    svc = service()
    tx = svc.recordUsage(0.823045)  # marked up: 1.2345675 -> 1.234568 (half-even)
    assert tx is not None
    assert isinstance(tx.amount, float) and tx.amount == 1.234568
    assert isinstance(tx.balanceAfter, float) and tx.balanceAfter == 8.765432
    assert isinstance(svc.getCurrentBalance(), float)
    # Feeding an output back in is exact: str(float) reads back the same decimal.
    assert gateway.to_amount(svc.getCurrentBalance(), "x") == D("8.765432")


def test_amounts_round_once_to_micro_units(ledger: Billing) -> None:
    tx = service().recordUsage(0.000003)  # 4.5 micro-units marked up -> 4 (half-even)
    assert tx is not None and tx.exact.amount == D("0.000004")
    tx = service().recordUsage(D("0.000005"))  # a Decimal is welcome too: 7.5 -> 8
    assert tx is not None and tx.exact.amount == D("0.000008")
    assert tx.exact.breakdown is not None
    assert D(tx.exact.breakdown["amount_exact"]) == D("0.0000075")


@pytest.mark.parametrize("price", [0, 0.0, -0.0, -1, -0.5, 1e-9, D("0"), D("-2")])
def test_non_positive_prices_record_nothing(ledger: Billing, price: object) -> None:
    assert service().recordUsage(price, workflowId="wf", aicoreProvider="openai") is None  # type: ignore[arg-type]
    assert ledger.history("acme", kind="debit").entries == []


@pytest.mark.parametrize(
    "price", [float("nan"), float("inf"), float("-inf"), D("NaN"), True, "0.5", None, 1e300]
)
def test_what_is_not_a_finite_number_is_refused(ledger: Billing, price: object) -> None:
    with pytest.raises(aibill.InvalidAmount):
        service().recordUsage(price)  # type: ignore[arg-type]
    assert ledger.history("acme", kind="debit").entries == []


# ------------------------------------------------------------- recordUsage


def test_record_usage_tags_the_entry(ledger: Billing) -> None:
    tx = service().recordUsage(
        0.42, workflowId="wf-9", aicoreProvider="anthropic", description="chat answer"
    )
    assert isinstance(tx, BillingTransaction)
    assert tx.transactionType is TransactionTypeEnum.DEBIT
    assert tx.referenceType is ReferenceTypeEnum.WORKFLOW
    assert (tx.mandateId, tx.accountId, tx.userId, tx.currency) == ("acme", "pool", "alice", "CHF")
    assert (tx.workflowId, tx.aicoreProvider, tx.description) == (
        "wf-9",
        "anthropic",
        "chat answer",
    )
    assert (tx.featureInstanceId, tx.featureCode) == ("fi-1", "chatplayground")
    assert tx.createdAt.tzinfo is not None
    [entry] = ledger.history("acme", workflow_id="wf-9").entries
    assert entry == tx.exact
    assert (entry.user, entry.provider, entry.feature_code, entry.feature_instance) == (
        "alice",
        "anthropic",
        "chatplayground",
        "fi-1",
    )
    assert entry.reason == "usage" and entry.amount == D("0.630000")


def test_usage_that_happened_is_recorded_over_the_balance(ledger: Billing) -> None:
    tx = service().recordUsage(10, aicoreProvider="openai")  # 15 with the markup
    assert tx is not None and tx.overBalance
    assert tx.exact.shortfall == D("5.000000")
    assert ledger.balance("acme").balance == D("-5.000000")
    # Afterwards the check refuses until the mandate is topped up.
    assert service().hasBalance(0.01) is False


def test_two_identical_calls_are_two_usages(ledger: Billing) -> None:
    svc = service()
    a = svc.recordUsage(0.5, workflowId="wf", aicoreProvider="openai", description="same")
    b = svc.recordUsage(0.5, workflowId="wf", aicoreProvider="openai", description="same")
    assert a is not None and b is not None and a.id != b.id
    assert ledger.balance("acme").balance == D("8.500000")  # twice 0.75


def test_usage_in_a_per_user_mandate_debits_the_users_wallet(
    ledger: Billing, clock: ManualClock
) -> None:
    getService(ALICE, "beta").addCredit(5)
    ledger.pricing.set_exchange_rate("CHF", "EUR", D("1.04"))
    clock.advance(1)
    tx = getService(ALICE, "beta").recordUsage(1.25)  # 1.25 CHF * 1.04 * 1.5 = 1.95 EUR
    assert tx is not None and tx.accountId == "user:alice" and tx.currency == "EUR"
    assert tx.exact.amount == D("1.950000") and tx.exact.fx_rate == D("1.04")
    assert getService(ALICE, "beta").getCurrentBalance() == 3.05
    assert getService(BOB, "beta").getCurrentBalance() == 0.0


def test_a_long_description_does_not_lose_the_usage(ledger: Billing) -> None:
    tx = service().recordUsage(0.1, description="x" * 2000)
    assert tx is not None and tx.description is not None
    assert len(tx.description) == 500 and tx.description.endswith("\u2026")


def test_an_empty_provider_or_workflow_is_no_tag(ledger: Billing) -> None:
    tx = service().recordUsage(0.1, workflowId="", aicoreProvider="")
    assert tx is not None and (tx.workflowId, tx.aicoreProvider) == (None, None)


# ------------------------------------------------------------------ checks


def test_prepaid_check_allows_what_the_balance_covers(ledger: Billing) -> None:
    result = service().checkBalance(10)
    assert isinstance(result, BillingCheckResult)
    assert result.allowed and result.reason is None and result.reasonCode == "ok"
    assert result.billingModel is BillingModelEnum.PREPAY_MANDATE
    assert result.currentBalance == 10.0 and isinstance(result.currentBalance, float)
    assert service().hasBalance(9.99) is True


def test_prepaid_check_refuses_with_the_reason(ledger: Billing) -> None:
    result = service().checkBalance(10.000001)
    assert not result.allowed
    assert result.reasonCode == "insufficient_balance"
    assert result.reason is not None and "10.000000 CHF available" in result.reason
    assert "10.000001 CHF required" in result.reason
    assert (result.currentBalance, result.requiredAmount) == (10.0, 10.000001)
    assert service().hasBalance(10.000001) is False
    # It changed nothing.
    assert ledger.history("acme").entries[0].reason == "payment"
    assert ledger.balance("acme").available == D("10")


def test_open_holds_count_against_the_check(ledger: Billing) -> None:
    ledger.hold("acme", amount=D("9.5"), user="bob", idempotency_key="h")
    result = service().checkBalance(1)
    assert not result.allowed
    assert (result.currentBalance, result.availableBalance) == (10.0, 0.5)


def test_unlimited_always_allows(ledger: Billing) -> None:
    svc = service("gamma")
    assert svc.getCurrentBalance() == 0.0
    result = svc.checkBalance(1_000_000)
    assert result.allowed and result.billingModel is BillingModelEnum.UNLIMITED
    svc.recordUsage(50)
    assert svc.getCurrentBalance() == -75.0
    assert svc.hasBalance(1_000_000) is True


def test_per_user_check_reads_the_users_wallet(ledger: Billing) -> None:
    getService(BOB, "beta").addCredit(3)
    assert getService(BOB, "beta").hasBalance(3) is True
    assert getService(ALICE, "beta").hasBalance(0.01) is False
    result = getService(ALICE, "beta").checkBalance(0.01)
    assert result.billingModel is BillingModelEnum.PREPAY_USER and result.currency == "EUR"


def test_a_non_positive_estimate_checks_for_an_overdrawn_account(ledger: Billing) -> None:
    assert service().hasBalance(0) is True
    assert service().hasBalance(-5) is True
    service().recordUsage(11)
    assert service().hasBalance(0) is False


def test_a_spending_limit_refuses_the_check(ledger: Billing) -> None:
    ledger.set_spending_limit("acme", D("1"), feature_instance="fi-1", period="day")
    result = service().checkBalance(2)
    assert not result.allowed and result.reasonCode == "limit_exceeded"
    assert result.reason is not None and "spending limit" in result.reason


def test_errors_are_raised_never_answered_allowed(ledger: Billing) -> None:
    with pytest.raises(aibill.NotAMember):
        getService(ALICE, "delta").checkBalance(0.01)
    with pytest.raises(aibill.UnknownMandate):
        getService(ALICE, "nowhere").hasBalance(0.01)
    with pytest.raises(aibill.UnknownMandate):
        getService(ALICE, "nowhere").recordUsage(0.01)


# ------------------------------------------------------------------ credits


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        (ReferenceTypeEnum.ADMIN, "admin"),
        (ReferenceTypeEnum.PAYMENT, "payment"),
        (ReferenceTypeEnum.SYSTEM, "system"),
        (ReferenceTypeEnum.WORKFLOW, "system"),
        ("PAYMENT", "payment"),
    ],
)
def test_add_credit_maps_reference_types(
    ledger: Billing, reference: ReferenceTypeEnum, reason: str
) -> None:
    tx = service().addCredit(2.5, description="top-up", referenceType=reference)
    assert tx is not None and tx.transactionType is TransactionTypeEnum.CREDIT
    assert tx.exact.reason == reason and tx.exact.amount == D("2.500000")
    assert tx.referenceType is gateway.REFERENCE_OF_REASON[reason]
    assert (tx.amount, tx.balanceAfter, tx.description) == (2.5, 12.5, "top-up")
    assert ledger.balance("acme").balance == D("12.5")


def test_add_credit_defaults_are_the_seeds(ledger: Billing) -> None:
    tx = service().addCredit(0.1)
    assert (
        tx is not None
        and tx.description == "Manual credit"
        and tx.referenceType is ReferenceTypeEnum.ADMIN
    )
    assert tx.exact.reason == "admin" and tx.userId == "alice"
    assert ledger.balance("acme").balance == D("10.1")


@pytest.mark.parametrize("amount", [0, 0.0, -1, -0.5, D("-2"), 1e-9])
def test_add_credit_of_a_non_positive_amount_credits_nothing(
    ledger: Billing, amount: float
) -> None:
    """As the seed did: None, and nothing written (1e-9 rounds to 0 micro-units)."""
    before = ledger.history("acme").entries
    assert service().addCredit(amount) is None
    assert getService(ALICE, "beta").addCredit(amount) is None
    assert ledger.history("acme").entries == before
    assert ledger.history("beta").entries == []
    assert ledger.balance("acme").balance == D("10")


@pytest.mark.parametrize("amount", [float("nan"), float("-inf"), False, None, "5"])
def test_add_credit_refuses_what_is_not_a_number(ledger: Billing, amount: object) -> None:
    with pytest.raises(aibill.InvalidAmount):
        service().addCredit(amount)  # type: ignore[arg-type]
    assert len(ledger.history("acme").entries) == 1


def test_add_credit_refuses_an_unknown_reference_type(ledger: Billing) -> None:
    with pytest.raises(aibill.InvalidRequest) as err:
        service().addCredit(1, referenceType="GIFT")  # type: ignore[arg-type]
    assert err.value.details["field"] == "referenceType"


# ---------------------------------------------------------------- markup


def test_calculate_price_with_markup(ledger: Billing) -> None:
    svc = service()
    assert svc.calculatePriceWithMarkup(1) == 1.5
    assert svc.calculatePriceWithMarkup(0.1) == 0.15
    assert svc.calculatePriceWithMarkup(0.000003) == 0.000004  # 4.5 micro-units, half-even
    assert svc.calculatePriceWithMarkup(0) == 0.0
    assert svc.calculatePriceWithMarkup(-3) == 0.0
    # A float product of tokens and a per-token price: its noise is dropped.
    assert svc.calculatePriceWithMarkup(1200 * 2.5e-6) == 0.0045
    assert isinstance(svc.calculatePriceWithMarkup(1), float)
    with pytest.raises(aibill.InvalidAmount):
        svc.calculatePriceWithMarkup(float("inf"))


def test_calculate_price_uses_the_mandates_markup(ledger: Billing) -> None:
    ledger.pricing.set_markup(D("20"), mandate="acme")
    assert service("acme").calculatePriceWithMarkup(1) == 1.2
    assert service("gamma").calculatePriceWithMarkup(1) == 1.5


def test_calculate_price_uses_a_providers_markup(ledger: Billing) -> None:
    ledger.pricing.set_markup(D("20"), provider="openai")
    svc = service()
    assert svc.calculatePriceWithMarkup(1, aicoreProvider="openai") == 1.2
    assert svc.calculatePriceWithMarkup(1) == 1.5  # the seed's positional call
    tx = svc.recordUsage(1, aicoreProvider="openai")
    assert tx is not None and tx.exact.amount == D("1.200000")
    assert tx.exact.markup_percent == D("20")


# ------------------------------------------- the seed's margin, worked figures

BILLING_MODELS = ["prepay_mandate", "prepay_user", "unlimited"]


@pytest.fixture
def seed_ledger(billing: Billing) -> Iterator[Billing]:
    """A ledger configured as the seed left it: base prices in USD (the default)."""
    billing.add_user("alice")
    configure(billing)
    yield billing
    configure(None)


def mandate_of(billing: Billing, model: str, currency: str) -> gateway.BillingService:
    """A mandate with ``model`` and ``currency``, alice a member with 10 to spend
    (in the pool, or her wallet)."""
    billing.create_mandate("m", billing_model=model, currency=currency)
    billing.add_member("m", "alice")
    svc = getService(ALICE, "m", featureCode="chatplayground")
    assert svc.addCredit(10, referenceType=ReferenceTypeEnum.PAYMENT) is not None
    return svc


@pytest.mark.parametrize("model", BILLING_MODELS)
def test_a_usd_mandate_is_billed_the_base_price_plus_half(seed_ledger: Billing, model: str) -> None:
    svc = mandate_of(seed_ledger, model, "USD")
    assert svc.calculatePriceWithMarkup(0.10) == 0.15
    tx = svc.recordUsage(0.10, workflowId="wf", aicoreProvider="openai")
    assert tx is not None and tx.amount == 0.15 and tx.currency == "USD"
    entry = tx.exact
    assert entry.amount == D("0.150000")
    assert (entry.provider_cost, entry.provider_currency) == (D("0.1"), "USD")
    assert (entry.fx_rate, entry.markup_percent) == (D("1"), D("50"))
    assert entry.price_source == "caller"
    assert entry.breakdown is not None
    assert entry.breakdown["fx"] == {
        "rate": "1",
        "from": "USD",
        "to": "USD",
        "source": "same currency",
    }
    assert entry.breakdown["markup"] == {"percent": "50", "scope": "default"}
    assert (entry.breakdown["amount"], entry.breakdown["provider"]) == ("0.150000", "openai")
    assert svc.getCurrentBalance() == 9.85
    assert seed_ledger.history("m", kind="debit").entries == [entry]
    assert seed_ledger.verify() == []


@pytest.mark.parametrize("model", BILLING_MODELS)
def test_a_chf_mandate_converts_the_usd_price_before_the_markup(
    seed_ledger: Billing, clock: ManualClock, model: str
) -> None:
    seed_ledger.pricing.set_exchange_rate("USD", "CHF", D("0.80"), source="SNB")
    clock.advance(60)
    svc = mandate_of(seed_ledger, model, "CHF")
    assert svc.calculatePriceWithMarkup(0.10) == 0.12
    tx = svc.recordUsage(0.10)
    assert tx is not None and tx.amount == 0.12 and tx.currency == "CHF"
    entry = tx.exact
    assert entry.amount == D("0.120000")  # 0.10 USD * 0.80 = 0.08 CHF, * 1.5
    assert (entry.provider_cost, entry.provider_currency) == (D("0.1"), "USD")
    assert (entry.fx_rate, entry.markup_percent) == (D("0.8"), D("50"))
    assert entry.breakdown is not None
    assert entry.breakdown["fx"]["from"] == "USD" and entry.breakdown["fx"]["to"] == "CHF"
    assert entry.breakdown["fx"]["source"] == "SNB"
    assert D(entry.breakdown["converted_cost"]) == D("0.08")
    assert svc.getCurrentBalance() == 9.88


@pytest.mark.parametrize("model", BILLING_MODELS)
def test_an_eur_mandate_without_a_rate_is_an_error_and_writes_nothing(
    seed_ledger: Billing, model: str
) -> None:
    seed_ledger.pricing.set_exchange_rate("USD", "CHF", D("0.80"))  # not the pair asked
    svc = mandate_of(seed_ledger, model, "EUR")
    before = seed_ledger.history("m").entries
    with pytest.raises(aibill.MissingExchangeRate) as err:
        svc.recordUsage(0.10, aicoreProvider="openai")
    assert err.value.code == "missing_exchange_rate"
    assert (err.value.details["base"], err.value.details["quote"]) == ("USD", "EUR")
    with pytest.raises(aibill.MissingExchangeRate):
        svc.calculatePriceWithMarkup(0.10)
    assert seed_ledger.history("m").entries == before
    assert svc.getCurrentBalance() == 10.0


def test_the_base_currency_can_be_configured(seed_ledger: Billing) -> None:
    configure(seed_ledger, base_currency="EUR")
    seed_ledger.pricing.set_exchange_rate("EUR", "CHF", D("0.95"))
    seed_ledger.pricing.set_exchange_rate("USD", "CHF", D("0.80"))  # not used
    svc = mandate_of(seed_ledger, "prepay_mandate", "CHF")
    assert svc.base_currency == "EUR"
    assert svc.calculatePriceWithMarkup(0.10) == 0.1425
    tx = svc.recordUsage(0.10)
    assert tx is not None and tx.exact.amount == D("0.142500")  # 0.10 * 0.95 * 1.5
    assert (tx.exact.provider_currency, tx.exact.fx_rate) == ("EUR", D("0.95"))
    with pytest.raises(aibill.InvalidRequest) as err:
        configure(seed_ledger, base_currency="eur")
    assert err.value.details["field"] == "base_currency"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    base=st.floats(min_value=1e-7, max_value=5000, allow_nan=False, allow_infinity=False)
    | st.decimals(min_value=D("0.000001"), max_value=D("5000"), places=9),
    percent=st.decimals(min_value=D("0"), max_value=D("1000"), places=2),
)
def test_calculate_price_with_markup_is_what_record_usage_posts(
    ledger: Billing, base: float | D, percent: D
) -> None:
    ledger.pricing.set_markup(percent, mandate="gamma")
    svc = service("gamma")
    before = ledger.balance("gamma").balance
    told = svc.calculatePriceWithMarkup(base)
    tx = svc.recordUsage(base)
    with localcontext() as ctx:
        ctx.prec = 80
        exact = D(str(base)).quantize(D("1e-12"), ROUND_HALF_EVEN) * (100 + percent) / 100
        expected = exact.quantize(D("0.000001"), ROUND_HALF_EVEN)
    if expected == 0:
        assert tx is None and told == 0.0
        return
    assert tx is not None
    assert tx.exact.amount == expected and told == float(expected) == tx.amount
    assert ledger.balance("gamma").balance == before - expected


# ----------------------------------------------------------------- reading


def test_balances_for_user_across_mandates(ledger: Billing) -> None:
    getService(ALICE, "beta").addCredit(4)
    service("gamma").recordUsage(1.5)
    rows = getService(ALICE, "acme").getBalancesForUser()
    assert all(isinstance(r, BillingBalanceResponse) for r in rows)
    assert [(r.mandateId, r.accountId, r.billingModel, r.balance, r.currency) for r in rows] == [
        ("acme", "pool", BillingModelEnum.PREPAY_MANDATE, 10.0, "CHF"),
        ("beta", "user:alice", BillingModelEnum.PREPAY_USER, 4.0, "EUR"),
        ("gamma", "pool", BillingModelEnum.UNLIMITED, -2.25, "CHF"),
    ]
    assert all(r.userId == "alice" for r in rows)
    assert rows[1].exact.balance == D("4")
    # delta is bob's only; bob's wallet in beta is his own.
    bob = {r.mandateId: r.balance for r in getService(BOB, "acme").getBalancesForUser()}
    assert bob == {"acme": 10.0, "beta": 0.0, "gamma": -2.25, "delta": 0.0}


class Reporting(Billing):
    """A ledger whose own per-user report the gateway must use."""

    def balances_for_user(self, user: str) -> list[Balance]:  # type: ignore[override]
        self.asked = user
        return [self.balance("acme", user=user)]


class OlderLedger(Billing):
    """A ledger without ``balances_for_user``: the gateway reads the memberships."""

    balances_for_user = None  # type: ignore[assignment]


@pytest.mark.parametrize("kind", [Reporting, OlderLedger])
def test_balances_for_user_with_or_without_the_ledgers_report(
    db_url: str, clock: ManualClock, kind: type[Billing]
) -> None:
    ledger = kind(aibill.connect(db_url, clock=clock).engine, clock=clock)
    ledger.create_mandate("acme")
    ledger.create_mandate("beta", billing_model="prepay_user", currency="EUR")
    ledger.add_user("alice")
    ledger.add_user("carol")
    ledger.add_member("acme", "alice")
    ledger.credit("acme", D("3"), idempotency_key="k")
    configure(ledger)
    try:
        [row] = getService(ALICE, "acme").getBalancesForUser()
        assert (row.mandateId, row.accountId, row.balance, row.billingModel) == (
            "acme",
            "pool",
            3.0,
            BillingModelEnum.PREPAY_MANDATE,
        )
        if isinstance(ledger, Reporting):
            assert ledger.asked == "alice"
        else:
            assert getService(User("carol"), "acme").getBalancesForUser() == []
            ledger.add_member("beta", "carol")
            [beta] = getService(User("carol"), "acme").getBalancesForUser()
            assert (beta.mandateId, beta.accountId, beta.currency) == ("beta", "user:carol", "EUR")
    finally:
        configure(None)
        ledger.close()


def test_balances_of_an_unknown_user_are_an_error(ledger: Billing) -> None:
    with pytest.raises(aibill.UnknownUser):
        getService(User("mallory"), "acme").getBalancesForUser()


def test_transaction_history_newest_first(ledger: Billing, clock: ManualClock) -> None:
    svc = service()
    for price in (0.1, 0.2, 0.3):
        clock.advance(1)
        svc.recordUsage(price, workflowId=f"wf-{price}")
    history = svc.getTransactionHistory()
    assert [t.amount for t in history] == [0.45, 0.3, 0.15, 10.0]
    assert [t.transactionType for t in history] == [TransactionTypeEnum.DEBIT] * 3 + [
        TransactionTypeEnum.CREDIT
    ]
    assert history[-1].referenceType is ReferenceTypeEnum.PAYMENT
    assert [t.amount for t in svc.getTransactionHistory(limit=2)] == [0.45, 0.3]
    assert svc.getTransactionHistory(limit=0) == []
    # Other mandates' entries never show.
    assert service("gamma").getTransactionHistory() == []


def test_transaction_history_pages_past_the_ledgers_page_size(
    ledger: Billing, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "HISTORY_PAGE", 2)
    svc = service()
    for i in range(4):
        clock.advance(1)
        svc.recordUsage(i + 1)
    assert [t.amount for t in svc.getTransactionHistory(limit=3)] == [6.0, 4.5, 3.0]
    assert [t.amount for t in svc.getTransactionHistory(limit=50)] == [6.0, 4.5, 3.0, 1.5, 10.0]


def test_transaction_history_of_a_wallet_is_the_users_own(
    ledger: Billing, clock: ManualClock
) -> None:
    getService(ALICE, "beta").addCredit(2)
    clock.advance(1)
    getService(BOB, "beta").addCredit(3)
    [mine] = getService(ALICE, "beta").getTransactionHistory()
    assert (mine.userId, mine.amount, mine.accountId) == ("alice", 2.0, "user:alice")


def test_transaction_history_refuses_a_limit_that_is_not_a_number(ledger: Billing) -> None:
    with pytest.raises(aibill.InvalidRequest):
        service().getTransactionHistory(limit="10")  # type: ignore[arg-type]


# ------------------------------------------------------------- permissions


def test_providers_follow_the_ledgers_permissions(ledger: Billing) -> None:
    """No provider is registered: nothing is allowed (fail closed). Once openai is
    registered, a member may use it; the registry and roles decide, not the gateway."""
    assert service().isProviderAllowed("openai") is False
    assert service().getallowedProviders() == []
    ledger.access.register_provider("openai")
    assert service().isProviderAllowed("openai") is True
    assert service().isProviderAllowed("mistral") is False
    assert service().getallowedProviders() == ["openai"]


class Permitting(Billing):
    """A ledger with provider permissions: alice may use openai in acme."""

    def is_provider_allowed(self, mandate: str, user: str, provider: str) -> bool:
        if provider == "broken":
            raise RuntimeError("role store down")
        if provider == "truthy":
            return "yes"  # type: ignore[return-value]
        return (mandate, user, provider) == ("acme", "alice", "openai")

    def allowed_providers(self, mandate: str, user: str) -> list[str]:
        if user == "bob":
            raise RuntimeError("role store down")
        return ["openai"] if (mandate, user) == ("acme", "alice") else []


@pytest.fixture
def permitting(db_url: str, clock: ManualClock) -> Iterator[Permitting]:
    ledger = Permitting(aibill.connect(db_url, clock=clock).engine, clock=clock)
    ledger.create_mandate("acme")
    configure(ledger)
    yield ledger
    configure(None)
    ledger.close()


def test_providers_delegate_to_the_ledgers_permissions(
    permitting: Permitting, caplog: pytest.LogCaptureFixture
) -> None:
    assert getService(ALICE, "acme").isProviderAllowed("openai") is True
    assert getService(ALICE, "acme").isProviderAllowed("mistral") is False
    assert getService(BOB, "acme").isProviderAllowed("openai") is False
    assert getService(ALICE, "acme").getallowedProviders() == ["openai"]
    assert getService(ALICE, "other").getallowedProviders() == []
    with caplog.at_level(logging.WARNING, logger="aibill.compat.gateway"):
        # An error while checking, or an answer that is not True, means "no".
        assert getService(ALICE, "acme").isProviderAllowed("broken") is False
        assert getService(ALICE, "acme").isProviderAllowed("truthy") is False
        assert getService(BOB, "acme").getallowedProviders() == []
    assert sum("the permission check failed" in r.getMessage() for r in caplog.records) == 2


def test_the_gateways_provider_guard(permitting: Permitting) -> None:
    """How the gateway uses the exception: it raises it from a refused check."""
    svc = getService(BOB, "acme")
    with pytest.raises(ProviderNotAllowedException) as err:
        if not svc.isProviderAllowed("openai"):
            raise ProviderNotAllowedException("openai")
    assert err.value.provider == "openai"
    assert str(err.value) == "Provider 'openai' is not allowed." == err.value.message
    custom = ProviderNotAllowedException("mistral", "Mistral is off for your team")
    assert (custom.provider, custom.message, str(custom)) == (
        "mistral",
        "Mistral is off for your team",
        "Mistral is off for your team",
    )


# -------------------------------------------------------------- exceptions


def test_the_gateways_balance_guard(ledger: Billing) -> None:
    """The seed's call flow: check, raise, call the AI, record."""
    svc = service()
    estimate = 12.0
    with pytest.raises(InsufficientBalanceException) as err:
        result = svc.checkBalance(estimate)
        if not result.allowed:
            raise InsufficientBalanceException(result.currentBalance, estimate, result.reason)
    assert (err.value.currentBalance, err.value.requiredAmount) == (10.0, 12.0)
    assert err.value.message == str(err.value)
    assert "10.000000 CHF available" in err.value.message

    plain = InsufficientBalanceException(1.5, 2)
    assert (plain.currentBalance, plain.requiredAmount) == (1.5, 2)
    assert str(plain) == "Insufficient balance: 1.5 available, 2 required."

    estimate = 0.5
    assert svc.hasBalance(estimate)
    assert svc.hasBalance(svc.calculatePriceWithMarkup(0.31))
    tx = svc.recordUsage(0.31, workflowId="wf", aicoreProvider="openai")
    assert tx is not None and svc.getCurrentBalance() == 9.535


# ------------------------------------------------------------ configuration


def test_get_service_makes_a_new_service_each_time(ledger: Billing) -> None:
    a = getService(ALICE, "acme", featureInstanceId="fi-1", featureCode="chatplayground")
    b = getService(ALICE, "acme", featureInstanceId="fi-1", featureCode="chatplayground")
    assert a is not b
    assert (a.user, a.mandate, a.feature_instance, a.feature_code) == (
        "alice",
        "acme",
        "fi-1",
        "chatplayground",
    )
    with pytest.raises(AttributeError):
        a.extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("user", "mandate", "fi"),
    [(object(), "acme", None), (User(""), "acme", None), (ALICE, "", None), (ALICE, "acme", "")],
)
def test_get_service_refuses_what_is_not_an_id(
    ledger: Billing, user: object, mandate: str, fi: str | None
) -> None:
    with pytest.raises(aibill.InvalidRequest):
        getService(user, mandate, featureInstanceId=fi)  # type: ignore[arg-type]


def test_configure_from_the_environment(
    db_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = aibill.connect(db_url, clock=clock)
    seed.create_mandate("acme")
    seed.add_user("alice")
    seed.add_member("acme", "alice")
    seed.credit("acme", D("7"), idempotency_key="k")
    seed.close()

    configure(None)
    monkeypatch.delenv(gateway.ENV_DATABASE_URL, raising=False)
    with pytest.raises(RuntimeError, match="AIBILL_DATABASE_URL"):
        getService(ALICE, "acme")

    monkeypatch.setenv(gateway.ENV_DATABASE_URL, db_url)
    try:
        svc = getService(ALICE, "acme")
        assert svc.getCurrentBalance() == 7.0
        assert getService(ALICE, "acme")._billing is svc._billing  # one ledger, many services
    finally:
        configure(None)


def test_configure_refuses_what_is_not_a_ledger() -> None:
    with pytest.raises(aibill.InvalidRequest):
        configure("sqlite:///x.db")  # type: ignore[arg-type]
