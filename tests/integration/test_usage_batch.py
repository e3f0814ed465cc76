"""Usage in batches (concepts.md rule 13): ``record_usage_batch`` in the library,
``POST /v1/usage/batch`` and ``aibill.Client.record_usage_batch``. One outcome
per record, in order; a refused record never fails another; the whole batch
sent again posts nothing twice."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal as D

import pytest

import aibill
from aibill import Billing, RecordOutcome, Usage, UsageRecord
from aibill.domain import errors as e
from tests.integration.test_client import Service, admin, member, service

__all__ = ["admin", "member", "service"]  # the fixtures this module uses


def _fund(billing: Billing) -> None:
    billing.create_mandate("acme", currency="USD")
    billing.credit("acme", D("1.00"), idempotency_key="funding")
    billing.create_mandate("beta", currency="USD")
    billing.credit("beta", D("1.00"), idempotency_key="funding")


MIXED = [
    UsageRecord("acme", "a", amount=D("0.40")),
    UsageRecord("acme", "too-much", amount=D("5.00")),
    UsageRecord("acme", "a", amount=D("0.40")),  # the same key again: the same entry
    UsageRecord("acme", "a", amount=D("0.30")),  # the same key, another amount: a conflict
    UsageRecord("nowhere", "n", amount=D("0.10")),
    UsageRecord("acme", "two-forms", amount=D("0.10"), usage=Usage(input_tokens=1)),
    UsageRecord("beta", "b", amount=D("0.25"), already_happened=True),
]


def _check_mixed(outcomes: Sequence[RecordOutcome], *, replayed: bool) -> None:
    assert [o.code for o in outcomes] == [
        None,
        "insufficient_balance",
        None,
        "idempotency_conflict",
        "unknown_mandate",
        "invalid_request",
        None,
    ]
    first, _, again, _, _, _, beta = outcomes
    assert first.entry is not None and again.entry is not None and beta.entry is not None
    assert again.entry.id == first.entry.id and again.entry.replayed
    assert first.entry.replayed == replayed
    assert first.entry.amount == D("0.40") and beta.entry.amount == D("0.25")
    assert isinstance(outcomes[1].error, e.InsufficientBalance)
    assert outcomes[1].error.required == D("5.00")


def test_a_batch_keeps_each_records_outcome(billing: Billing) -> None:
    _fund(billing)
    _check_mixed(billing.record_usage_batch(MIXED), replayed=False)
    assert billing.balance("acme").balance == D("0.60")
    assert billing.balance("beta").balance == D("0.75")
    # Sent again after a timeout: the same outcomes, nothing posted twice.
    _check_mixed(billing.record_usage_batch(MIXED), replayed=True)
    assert billing.balance("acme").balance == D("0.60")
    assert billing.balance("beta").balance == D("0.75")
    assert len(billing.history("acme", kind="debit").entries) == 1
    assert billing.verify() == []


def test_records_priced_from_tokens_keep_their_breakdown(billing: Billing) -> None:
    _fund(billing)
    usage = Usage(input_tokens=1000, output_tokens=200)
    [outcome] = billing.record_usage_batch(
        [
            UsageRecord(
                "acme", "p", provider="openai", model="gpt-4o", usage=usage, already_happened=True
            )
        ]
    )
    single = billing.record_usage(
        "beta",
        provider="openai",
        model="gpt-4o",
        usage=usage,
        already_happened=True,
        idempotency_key="p",
    )
    assert outcome.entry is not None
    assert outcome.entry.amount == single.amount > 0
    assert outcome.entry.breakdown == single.breakdown


def test_a_key_bills_only_its_own_mandate(billing: Billing) -> None:
    _fund(billing)
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    secret = billing.keys.create_key(user="alice", mandate="acme", scopes=["billing:use"]).secret
    alice = billing.authenticate(secret)
    outcomes = alice.record_usage_batch(
        [UsageRecord("acme", "mine", amount=D("0.10")), UsageRecord("beta", "x", amount=D("0.10"))]
    )
    assert [o.code for o in outcomes] == [None, "permission_denied"]
    assert billing.balance("beta").balance == D("1.00")


def test_the_batch_size_is_bounded(billing: Billing) -> None:
    _fund(billing)
    with pytest.raises(e.InvalidRequest):
        billing.record_usage_batch([])
    records = [UsageRecord("acme", f"k{i}", amount=D("0.000001")) for i in range(1001)]
    with pytest.raises(e.InvalidRequest):
        billing.record_usage_batch(records)
    assert billing.balance("acme").balance == D("1.00")
    outcomes = billing.record_usage_batch(records[:1000])
    assert all(o.ok for o in outcomes) and len(outcomes) == 1000
    assert billing.balance("acme").balance == D("0.999000")


def test_over_http_the_client_gets_the_librarys_outcomes(
    service: Service, admin: aibill.Client
) -> None:
    service.billing.credit("acme", D("1.00"), idempotency_key="funding")
    service.billing.create_mandate("beta", currency="USD")
    service.billing.credit("beta", D("1.00"), idempotency_key="funding")
    _check_mixed(admin.record_usage_batch(MIXED), replayed=False)
    _check_mixed(admin.record_usage_batch(MIXED), replayed=True)
    assert service.billing.balance("acme").balance == D("0.60")
    assert service.billing.verify() == []


def test_a_lost_answer_is_retried_and_posts_once(service: Service) -> None:
    """The connection breaks after the service applied the batch: the client
    sends it again, and every record replays instead of posting twice."""
    service.billing.credit("acme", D("1.00"), idempotency_key="funding")
    client, wire = service.client(service.root_key)
    with client:
        wire.script = ["drop"]
        outcomes = client.record_usage_batch([UsageRecord("acme", "once", amount=D("0.40"))])
    assert wire.handled == 2
    assert outcomes[0].entry is not None and outcomes[0].entry.replayed
    assert service.billing.balance("acme").balance == D("0.60")


def test_a_member_key_is_refused_other_mandates_over_http(
    service: Service, member: aibill.Client
) -> None:
    service.billing.credit("acme", D("1.00"), idempotency_key="funding")
    service.billing.create_mandate("beta", currency="USD")
    outcomes = member.record_usage_batch(
        [
            UsageRecord("acme", "mine", amount=D("0.10"), user="alice"),
            UsageRecord("beta", "theirs", amount=D("0.10")),
        ]
    )
    assert [o.code for o in outcomes] == [None, "permission_denied"]
    assert isinstance(outcomes[1].error, e.PermissionDenied)


def test_spending_limits_hold_in_a_batch(billing: Billing) -> None:
    """A mandate with spending limits: each record sees the debits before it,
    so the one that would pass the limit is refused (or, already happened,
    posted and marked), next to a mandate without limits in the same batch."""
    _fund(billing)
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    billing.set_spending_limit("acme", D("0.50"), user="alice", period="day")
    outcomes = billing.record_usage_batch(
        [
            UsageRecord("acme", "l1", amount=D("0.30"), user="alice"),
            UsageRecord("beta", "free", amount=D("0.30")),
            UsageRecord("acme", "l2", amount=D("0.30"), user="alice"),
            UsageRecord("acme", "l3", amount=D("0.20"), user="alice"),
            UsageRecord("acme", "l4", amount=D("0.10"), user="alice", already_happened=True),
        ]
    )
    assert [o.code for o in outcomes] == [None, None, "limit_exceeded", None, None]
    assert isinstance(outcomes[2].error, e.LimitExceeded)
    assert outcomes[2].error.details["spent"] == "0.300000"
    last = outcomes[4].entry
    assert last is not None and last.over_limit is not None
    assert billing.balance("acme").balance == D("0.40")
    assert billing.balance("beta").balance == D("0.70")
    assert billing.verify() == []


def test_a_wallet_that_runs_dry_midway_refuses_the_rest(billing: Billing) -> None:
    """Records drawn in order from one account: once it cannot pay, the
    following prepaid records are refused with the balance they met, usage
    that already happened is posted short, and the balances after are exact."""
    billing.create_mandate("w", currency="USD", billing_model="prepay_user")
    for user in ("ann", "ben"):
        billing.add_user(user)
        billing.add_member("w", user)
        billing.credit("w", D("1.00"), user=user, idempotency_key=f"fund-{user}")
    outcomes = billing.record_usage_batch(
        [
            UsageRecord("w", "1", amount=D("0.60"), user="ann"),
            UsageRecord("w", "2", amount=D("0.60"), user="ann"),
            UsageRecord("w", "3", amount=D("0.60"), user="ben"),
            UsageRecord("w", "4", amount=D("0.60"), user="ann", already_happened=True),
            UsageRecord("w", "5", amount=D("0.10"), user="ann"),
            UsageRecord("w", "6", amount=D("0.60"), user="nobody"),
        ]
    )
    assert [o.code for o in outcomes] == [
        None,
        "insufficient_balance",
        None,
        None,
        "insufficient_balance",
        "unknown_user",
    ]
    assert isinstance(outcomes[1].error, e.InsufficientBalance)
    assert outcomes[1].error.available == D("0.40")
    short = outcomes[3].entry
    assert short is not None and short.balance_after == D("-0.20")
    assert short.over_balance and short.shortfall == D("0.20")
    assert billing.balance("w", user="ann").balance == D("-0.20")
    assert billing.balance("w", user="ben").balance == D("0.40")
    assert billing.verify() == []
