"""Billing by usage: holds, captures and usage records priced from tokens,
converted, marked up and posted with their whole breakdown; checks and
spending limits. Exact figures, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

import aibill
from aibill import Billing, ManualClock, Usage


@pytest.fixture
def acme(billing: Billing, clock: ManualClock) -> str:
    """A CHF mandate topped up with 100, a USD->CHF rate of 0.80, alice and bob
    (members, who may use the registered providers openai and anthropic)."""
    billing.create_mandate("acme", billing_model="prepay_mandate", currency="CHF")
    for user in ("alice", "bob"):
        billing.add_user(user)
        billing.add_member("acme", user)
    billing.credit("acme", D("100"), idempotency_key="topup")
    billing.pricing.set_exchange_rate(
        "USD", "CHF", D("0.80"), valid_from=clock() - timedelta(days=1)
    )
    for provider in ("openai", "anthropic"):
        billing.access.register_provider(provider)
    return "acme"


def gpt4o_hold(billing: Billing, key: str = "h", **kw: object) -> aibill.Hold:
    args: dict[str, object] = {
        "user": "alice",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1200,
        "max_output_tokens": 800,
        "feature_code": "chatplayground",
        "feature_instance": "fi-1",
        "workflow_id": "wf-9",
    }
    args.update(kw)
    return billing.hold("acme", idempotency_key=key, **args)  # type: ignore[arg-type]


def test_the_gpt4o_story(billing: Billing, acme: str) -> None:
    """gpt-4o lists $2.50 and $10 per million tokens. The estimate for 1,200 in and
    at most 800 out is 0.011 USD = 0.0088 CHF, plus 50 % = 0.0132 CHF. The call
    used 512 out: 0.00812 USD * 0.80 * 1.5 = 0.009744 CHF, and 100 CHF become
    99.990256."""
    est = billing.estimate(
        acme, provider="openai", model="gpt-4o", input_tokens=1200, max_output_tokens=800
    )
    assert est.amount == D("0.0132") and est.currency == "CHF"
    hold = gpt4o_hold(billing)
    assert hold.amount == D("0.0132")
    assert billing.balance(acme).available == D("99.9868")
    entry = billing.capture(
        hold.id, usage=Usage(input_tokens=1200, output_tokens=512), idempotency_key="c"
    )
    assert entry.amount == D("0.009744")
    assert entry.provider_cost == D("0.00812") and entry.provider_currency == "USD"
    assert entry.fx_rate == D("0.80") and entry.markup_percent == D("50")
    assert entry.price_source == "genai-prices 0.2.3"
    assert (entry.provider, entry.model, entry.model_matched) == ("openai", "gpt-4o", "gpt-4o")
    assert (entry.input_tokens, entry.output_tokens) == (1200, 512)
    assert (entry.feature_code, entry.feature_instance, entry.workflow_id) == (
        "chatplayground",
        "fi-1",
        "wf-9",
    )
    assert entry.breakdown is not None and entry.breakdown["amount"] == "0.009744"
    assert entry.breakdown["unit_prices"] == {"input_mtok": "2.5", "output_mtok": "10"}
    assert entry.breakdown["fx"]["rate"] == "0.80" and entry.breakdown["provider_cost"] == "0.00812"
    bal = billing.balance(acme)
    assert (bal.balance, bal.pending) == (D("99.990256"), D("0"))
    # Read back through history, the breakdown is the same.
    assert billing.history(acme, provider="openai").entries == [entry]
    assert billing.verify() == []


def test_the_captures_time_sets_the_rate(billing: Billing, acme: str, clock: ManualClock) -> None:
    """Held at 0.80; the rate moves to 0.90 a minute later; the capture after it
    posts 0.00812 * 0.90 * 1.5 = 0.010962 CHF."""
    hold = gpt4o_hold(billing)
    billing.pricing.set_exchange_rate(
        "USD", "CHF", D("0.90"), valid_from=clock() + timedelta(seconds=60)
    )
    clock.advance(120)
    entry = billing.capture(hold.id, usage=Usage(input_tokens=1200, output_tokens=512))
    assert entry.fx_rate == D("0.90") and entry.amount == D("0.010962")


def test_cached_tokens_cost_less(billing: Billing, acme: str) -> None:
    """Of 10,000 input tokens, 8,000 come from the cache at $1.25/M (0.01 USD) and
    2,000 at $2.50/M (0.005); 500 output at $10/M (0.005): 0.02 USD -> 0.024 CHF,
    where uncached they would have cost 0.03 USD."""
    entry = billing.record_usage(
        acme,
        user="alice",
        provider="openai",
        model="gpt-4o",
        usage=Usage(input_tokens=10_000, output_tokens=500, cache_read_tokens=8_000),
        idempotency_key="u",
    )
    assert entry.provider_cost == D("0.02")
    assert entry.amount == D("0.024")
    assert entry.cache_read_tokens == 8000


def test_a_custom_price_overrides_the_catalog(
    billing: Billing, acme: str, clock: ManualClock
) -> None:
    """acme negotiated $1/M in and $2/M out for gpt-4o: 1,200 in and 512 out cost
    0.0012 + 0.001024 = 0.002224 USD -> * 0.8 * 1.5 = 0.0026688 -> 0.002669 CHF
    (rounded once, half-even)."""
    price = billing.pricing.set_custom_price(
        "openai",
        "gpt-4o",
        input_mtok=D("1"),
        output_mtok=D("2"),
        mandate=acme,
        valid_from=clock() - timedelta(hours=1),
    )
    entry = billing.record_usage(
        acme,
        user="alice",
        provider="openai",
        model="gpt-4o",
        usage=Usage(input_tokens=1200, output_tokens=512),
        idempotency_key="u",
    )
    assert entry.price_source == f"custom:{price.price_id}"
    assert entry.provider_cost == D("0.002224") and entry.amount == D("0.002669")


def test_a_markup_for_the_mandate(billing: Billing, acme: str) -> None:
    billing.pricing.set_markup(D("20"), mandate=acme, provider="openai")
    entry = billing.record_usage(
        acme,
        user="alice",
        provider="openai",
        model="gpt-4o",
        usage=Usage(input_tokens=1200, output_tokens=512),
        idempotency_key="u",
    )
    assert entry.markup_percent == D("20") and entry.amount == D("0.007795")  # 0.0077952


def test_unknown_models_and_missing_rates_write_nothing(billing: Billing, acme: str) -> None:
    before = billing.balance(acme)
    with pytest.raises(aibill.UnknownModel) as unknown:
        gpt4o_hold(billing, model="gpt-nonexistent-9")
    assert unknown.value.code == "unknown_model"
    billing.create_mandate("euro", currency="EUR")
    billing.add_member("euro", "alice")
    billing.credit("euro", D("10"), idempotency_key="t")
    with pytest.raises(aibill.MissingExchangeRate) as missing:
        billing.hold(
            "euro",
            user="alice",
            provider="openai",
            model="gpt-4o",
            input_tokens=10,
            max_output_tokens=10,
            idempotency_key="h",
        )
    assert missing.value.code == "missing_exchange_rate"
    assert billing.balance(acme) == before
    assert billing.balance("euro").pending == 0
    # Nothing was stored under the key: once the rate exists, the same call works.
    billing.pricing.set_exchange_rate(
        "USD", "EUR", D("0.9"), valid_from=datetime(2020, 1, 1, tzinfo=UTC)
    )
    hold = billing.hold(
        "euro",
        user="alice",
        provider="openai",
        model="gpt-4o",
        input_tokens=10,
        max_output_tokens=10,
        idempotency_key="h",
    )
    assert not hold.replayed and hold.amount > 0


def test_same_currency_needs_no_rate(billing: Billing) -> None:
    billing.create_mandate("usd", billing_model="unlimited", currency="USD")
    billing.add_user("alice")
    billing.add_member("usd", "alice")
    billing.access.register_provider("openai")
    entry = billing.record_usage(
        "usd",
        user="alice",
        provider="openai",
        model="gpt-4o",
        usage=Usage(input_tokens=1200, output_tokens=512),
        idempotency_key="u",
    )
    assert entry.fx_rate == 1 and entry.amount == D("0.01218")


def test_priced_capture_resolves_once(billing: Billing, acme: str) -> None:
    hold = gpt4o_hold(billing)
    usage = Usage(input_tokens=1200, output_tokens=512)
    first = billing.capture(hold.id, usage=usage)
    again = billing.capture(hold.id, usage=usage)
    assert again.replayed and again.id == first.id
    with pytest.raises(aibill.HoldAlreadyCaptured):
        billing.capture(hold.id, usage=Usage(input_tokens=1200, output_tokens=513))
    with pytest.raises(aibill.HoldAlreadyCaptured):
        billing.capture(hold.id, amount=first.amount)
    assert len(billing.history(acme, hold_id=hold.id).entries) == 1


def test_bad_priced_requests_are_refused(billing: Billing, acme: str) -> None:
    with pytest.raises(aibill.InvalidRequest):
        billing.hold(acme, amount=D("1"), input_tokens=5, idempotency_key="x")
    with pytest.raises(aibill.InvalidRequest):
        billing.hold(
            acme, provider="openai", input_tokens=5, max_output_tokens=5, idempotency_key="x"
        )
    with pytest.raises(aibill.InvalidRequest):
        billing.hold(acme, idempotency_key="x")
    with pytest.raises(aibill.InvalidRequest):
        gpt4o_hold(billing, input_tokens=-1)
    plain = billing.hold(acme, amount=D("1"), idempotency_key="plain")
    with pytest.raises(aibill.InvalidRequest, match="amount="):
        billing.capture(plain.id, usage=Usage(input_tokens=1))
    with pytest.raises(aibill.InvalidRequest):
        billing.capture(plain.id)
    with pytest.raises(aibill.InvalidRequest):
        billing.record_usage(acme, usage=Usage(input_tokens=1), idempotency_key="y")
    assert billing.get_hold(plain.id).status == aibill.HoldStatus.PENDING


def test_a_call_that_used_nothing_costs_nothing(billing: Billing, acme: str) -> None:
    hold = gpt4o_hold(billing)
    entry = billing.capture(hold.id, usage=Usage(input_tokens=0, output_tokens=0))
    assert entry.amount == 0 and billing.balance(acme).balance == D("100")
    assert billing.verify() == []


# --------------------------------------------------------------------- check


def test_check_answers_without_changing_anything(billing: Billing, acme: str) -> None:
    ok = billing.check(acme, user="alice", estimate=D("99.99"))
    assert ok.allowed and ok.reason == "ok" and ok.account == "pool"
    assert ok.billing_model == aibill.BillingModel.PREPAY_MANDATE
    assert (ok.balance, ok.available) == (D("100"), D("100"))
    short = billing.check(acme, user="alice", estimate=D("100.000001"))
    assert not short.allowed and short.reason == "insufficient_balance"
    billing.create_mandate("open", billing_model="unlimited")
    assert billing.check("open", estimate=D("1000000")).allowed
    assert billing.history(acme).entries[0].reason == "payment"
    with pytest.raises(aibill.InvalidAmount):
        billing.check(acme, estimate=0.5)  # type: ignore[arg-type]


def test_check_does_not_count_expired_holds(
    billing: Billing, acme: str, clock: ManualClock
) -> None:
    billing.hold(acme, amount=D("100"), ttl_s=60, idempotency_key="all")
    assert not billing.check(acme, estimate=D("1")).allowed
    clock.advance(61)
    assert billing.check(acme, estimate=D("1")).allowed


# ------------------------------------------------------------ spending limits


def test_a_users_monthly_limit(billing: Billing, acme: str, clock: ManualClock) -> None:
    clock.set(datetime(2026, 3, 30, 12, tzinfo=UTC))
    billing.set_spending_limit(acme, D("1"), user="alice", period="month")
    first = billing.hold(acme, amount=D("0.6"), user="alice", idempotency_key="a")
    billing.capture(first.id, amount=D("0.3"))
    billing.hold(acme, amount=D("0.5"), user="alice", idempotency_key="b")  # 0.3 + 0.5 = 0.8
    with pytest.raises(aibill.LimitExceeded) as info:
        billing.hold(acme, amount=D("0.3"), user="alice", idempotency_key="c")
    err = info.value
    assert err.code == "limit_exceeded"
    assert err.details["left"] == "0.200000" and err.details["period"] == "month"
    assert "alice" in err.message and "0.200000 CHF left" in err.message
    # Bob has no limit; the pool pays for him.
    assert billing.hold(acme, amount=D("5"), user="bob", idempotency_key="d").amount == D("5")
    # The refusal is the key's outcome, replayed as the same error.
    with pytest.raises(aibill.LimitExceeded):
        billing.hold(acme, amount=D("0.3"), user="alice", idempotency_key="c")
    # April starts a new month: nothing to reset, the old spending is simply outside it.
    clock.set(datetime(2026, 4, 1, 0, 0, tzinfo=UTC))
    assert billing.hold(acme, amount=D("0.9"), user="alice", idempotency_key="e").amount == D("0.9")
    assert billing.check(acme, user="alice", estimate=D("0.2")).reason == "limit_exceeded"
    assert billing.verify() == []


def test_usage_that_happened_is_recorded_over_a_limit_and_marked(
    billing: Billing, acme: str
) -> None:
    billing.set_spending_limit(acme, D("0.01"), feature_instance="fi-1", period="day")
    with pytest.raises(aibill.LimitExceeded):
        billing.record_usage(acme, amount=D("0.02"), feature_instance="fi-1", idempotency_key="u1")
    entry = billing.record_usage(
        acme,
        amount=D("0.02"),
        feature_instance="fi-1",
        already_happened=True,
        idempotency_key="u2",
    )
    assert entry.over_limit == "feature_instance:fi-1/day"
    assert billing.balance(acme).balance == D("99.98")
    limits = billing.spending_limits(acme)
    assert [(x.scope, x.subject, x.period, x.amount) for x in limits] == [
        ("feature_instance", "fi-1", "day", D("0.01"))
    ]
    assert billing.set_spending_limit(acme, None, feature_instance="fi-1", period="day") is None
    assert billing.spending_limits(acme) == []


def test_weekly_limits_start_on_monday(billing: Billing, acme: str, clock: ManualClock) -> None:
    clock.set(datetime(2026, 3, 8, 23, 0, tzinfo=UTC))  # a Sunday
    billing.set_spending_limit(acme, D("1"), user="bob", period="week")
    billing.record_usage(acme, amount=D("1"), user="bob", idempotency_key="sun")
    with pytest.raises(aibill.LimitExceeded):
        billing.record_usage(acme, amount=D("0.01"), user="bob", idempotency_key="sun2")
    clock.advance(3600)  # Monday 00:00
    assert billing.record_usage(acme, amount=D("1"), user="bob", idempotency_key="mon").amount


def test_limits_need_one_subject_and_a_known_period(billing: Billing, acme: str) -> None:
    with pytest.raises(aibill.InvalidRequest):
        billing.set_spending_limit(acme, D("1"))
    with pytest.raises(aibill.InvalidRequest):
        billing.set_spending_limit(acme, D("1"), user="alice", feature_instance="x")
    with pytest.raises(aibill.InvalidRequest):
        billing.set_spending_limit(acme, D("1"), user="alice", period="year")
    with pytest.raises(aibill.NotAMember):
        billing.add_user("carol")
        billing.set_spending_limit(acme, D("1"), user="carol")


def test_racing_holds_cannot_squeeze_past_a_limit(db_url: str) -> None:
    """16 threads, a limit of exactly 5 holds: exactly 5 succeed, on both backends."""
    billing = aibill.connect(db_url, pool_size=16)
    billing.create_mandate("acme")
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    billing.credit("acme", D("1000"), idempotency_key="t")
    billing.set_spending_limit("acme", D("5"), user="alice", period="day")
    start = threading.Barrier(16)
    outcomes: list[str] = []

    def worker(i: int) -> None:
        start.wait()
        try:
            billing.hold("acme", amount=D("1"), user="alice", idempotency_key=f"k{i}")
            outcomes.append("ok")
        except aibill.LimitExceeded:
            outcomes.append("limit")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["limit"] * 11 + ["ok"] * 5
    assert billing.balance("acme").pending == D("5")
    billing.close()


# ------------------------------------------------------------------ history


def test_history_filters_by_what_a_call_was_about(billing: Billing, acme: str) -> None:
    gpt = gpt4o_hold(billing)
    billing.capture(gpt.id, usage=Usage(input_tokens=10, output_tokens=10))
    billing.record_usage(
        acme,
        user="bob",
        provider="anthropic",
        model="claude-sonnet-4-5",
        usage=Usage(input_tokens=100, output_tokens=10),
        feature_code="automation",
        workflow_id="wf-1",
        idempotency_key="u",
    )
    assert [e.provider for e in billing.history(acme, provider="anthropic").entries] == [
        "anthropic"
    ]
    assert len(billing.history(acme, model="gpt-4o").entries) == 1
    assert len(billing.history(acme, feature_code="chatplayground").entries) == 1
    assert len(billing.history(acme, feature_instance="fi-1").entries) == 1
    assert [e.workflow_id for e in billing.history(acme, workflow_id="wf-1").entries] == ["wf-1"]


def test_an_open_hold_counts_against_the_period_it_may_post_in(
    billing: Billing, acme: str, clock: ManualClock
) -> None:
    """A hold placed at 23:50 on the last day of a month and still open after
    midnight counts in the new month, where its capture would post."""
    clock.set(datetime(2026, 3, 31, 23, 50, tzinfo=UTC))
    billing.set_spending_limit(acme, D("1"), user="alice", period="month")
    billing.hold(acme, amount=D("0.8"), user="alice", ttl_s=3600, idempotency_key="late")
    clock.set(datetime(2026, 4, 1, 0, 10, tzinfo=UTC))
    with pytest.raises(aibill.LimitExceeded):
        billing.hold(acme, amount=D("0.3"), user="alice", idempotency_key="next")
    clock.set(datetime(2026, 4, 1, 0, 51, tzinfo=UTC))  # the late hold has expired
    assert billing.hold(acme, amount=D("0.3"), user="alice", idempotency_key="next2").amount


# ------------------------------------------------------- provider permissions


def test_a_provider_must_be_allowed_before_money_moves(billing: Billing, acme: str) -> None:
    before = billing.balance(acme)
    with pytest.raises(aibill.ProviderNotAllowed) as info:
        gpt4o_hold(billing, provider="mistral", model="mistral-large-latest")
    err = info.value
    assert err.code == "provider_not_allowed"
    assert err.details["provider"] == "mistral" and err.details["roles"] == ["member"]
    assert "mistral" in err.message and "not registered" in err.message
    # The refusal is the key's outcome: replayed, even once mistral is allowed.
    billing.access.register_provider("mistral")
    with pytest.raises(aibill.ProviderNotAllowed):
        gpt4o_hold(billing, provider="mistral", model="mistral-large-latest")
    assert billing.balance(acme) == before


def test_disabling_a_provider_stops_new_holds_at_once(billing: Billing, acme: str) -> None:
    first = gpt4o_hold(billing, key="before")
    billing.access.set_provider_enabled("openai", False)
    with pytest.raises(aibill.ProviderNotAllowed, match="disabled"):
        gpt4o_hold(billing, key="after")
    # The call already running is still billed: a capture is not a new call.
    entry = billing.capture(first.id, usage=Usage(input_tokens=10, output_tokens=10))
    assert entry.provider == "openai"
    check = billing.check(acme, user="alice", provider="openai", estimate=D("0.01"))
    assert not check.allowed and check.reason == "provider_not_allowed"


def test_a_viewer_may_not_use_providers(billing: Billing, acme: str) -> None:
    billing.add_user("vera")
    billing.add_member(acme, "vera", role="viewer")
    with pytest.raises(aibill.ProviderNotAllowed, match="viewer"):
        gpt4o_hold(billing, user="vera")
    billing.access.add_rule(acme, "viewer", "resource", "resource.aicore.openai", ["view"])
    assert gpt4o_hold(billing, user="vera", key="now").amount == D("0.0132")
    assert billing.allowed_providers(acme, "vera") == ["openai"]
    assert billing.is_provider_allowed(acme, "vera", "openai")
    assert not billing.is_provider_allowed(acme, "vera", "anthropic")


def test_a_call_without_a_user_has_nobody_to_allow(billing: Billing, acme: str) -> None:
    with pytest.raises(aibill.ProviderNotAllowed, match="names no user"):
        gpt4o_hold(billing, user=None)


def test_usage_that_happened_on_a_forbidden_provider_is_recorded_and_marked(
    billing: Billing, acme: str
) -> None:
    usage = Usage(input_tokens=1200, output_tokens=512)
    billing.access.set_provider_enabled("openai", False)
    with pytest.raises(aibill.ProviderNotAllowed):
        billing.record_usage(
            acme, user="alice", provider="openai", model="gpt-4o", usage=usage, idempotency_key="u"
        )
    entry = billing.record_usage(
        acme,
        user="alice",
        provider="openai",
        model="gpt-4o",
        usage=usage,
        already_happened=True,
        idempotency_key="u2",
    )
    assert entry.provider_not_allowed and entry.amount == D("0.009744")
    assert billing.history(acme, provider="openai").entries[0].provider_not_allowed
