"""Reports: a user's balances across mandates, usage totals grouped by period
and tag, and CSV exports, with exact figures on SQLite and PostgreSQL.

The story: mandate ``acme`` bills in USD (no exchange rate) with the default
50 % markup and was topped up with 100 USD. Six calls (in / out tokens; cost
USD -> billed USD):

1. Sat 2026-02-28 23:30, alice, openai/gpt-4o, 1,000 / 1,000, chat:
   0.0125 -> 0.01875
2. Sun 2026-03-01 23:59:59.999999, bob, openai/gpt-4o-mini, 10,000 / 2,000,
   chat: 0.0027 -> 0.00405
3. Mon 2026-03-02 00:00, alice, anthropic/claude-sonnet-4-5, 2,000 / 500,
   automation: 0.0135 -> 0.02025
4. Mon 2026-03-02 12:00 (a captured hold), alice, openai/gpt-4o, 1,200 / 512
   with 1,000 read from the cache, chat, fi-chat, wf-1: 0.00687 -> 0.010305
5. Sun 2026-03-08 10:00, bob, anthropic/claude-sonnet-4-5, 4,000 / 1,000 with
   1,000 written to the cache, automation: 0.02775 -> 0.041625
6. Mon 2026-03-09 00:00:00.000001, bob, openai/gpt-4o, 100 / 100, automation:
   0.00125 -> 0.001875

Then a refund credit of 0.50, which is not usage.

gpt-4o: 2.50 / 10 USD per million (1.25 cached); gpt-4o-mini: 0.15 / 0.60;
claude-sonnet-4-5: 3 / 15 (3.75 per million cache writes).
"""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D
from typing import Any

import pytest

import aibill
from aibill import Billing, ManualClock, Usage
from aibill.service.reports import HISTORY_CSV_COLUMNS, UsageRow
from aibill.store import history as history_store

T1 = datetime(2026, 2, 28, 23, 30, tzinfo=UTC)
T2 = datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
T3 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
T4 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
T5 = datetime(2026, 3, 8, 10, 0, tzinfo=UTC)
T6 = datetime(2026, 3, 9, 0, 0, 0, 1, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


class Story:
    """The six calls of the module docstring, and what they posted."""

    def __init__(self, billing: Billing, clock: ManualClock) -> None:
        self.billing = billing
        self.clock = clock
        self.entries: list[aibill.Entry] = []
        self.hold_id = ""

    def build(self) -> Story:
        b, clock = self.billing, self.clock
        clock.set(utc(2026, 2, 27, 9, 0))
        b.create_mandate("acme", billing_model="prepay_mandate", currency="USD")
        for user in ("alice", "bob"):
            b.add_user(user)
            b.add_member("acme", user)
        b.credit("acme", D("100"), idempotency_key="topup")
        for provider in ("openai", "anthropic"):
            b.access.register_provider(provider)
        self.use(T1, "alice", "openai", "gpt-4o", Usage(1000, 1000), "chat")
        self.use(T2, "bob", "openai", "gpt-4o-mini", Usage(10_000, 2000), "chat")
        self.use(T3, "alice", "anthropic", "claude-sonnet-4-5", Usage(2000, 500), "automation")
        clock.set(T4 - timedelta(seconds=3))
        hold = b.hold(
            "acme",
            user="alice",
            provider="openai",
            model="gpt-4o",
            input_tokens=1200,
            max_output_tokens=800,
            feature_code="chat",
            feature_instance="fi-chat",
            workflow_id="wf-1",
            idempotency_key="h4",
        )
        self.hold_id = hold.id
        clock.set(T4)
        self.entries.append(
            b.capture(hold.id, usage=Usage(1200, 512, cache_read_tokens=1000), idempotency_key="c4")
        )
        self.use(
            T5,
            "bob",
            "anthropic",
            "claude-sonnet-4-5",
            Usage(4000, 1000, cache_write_tokens=1000),
            "automation",
        )
        self.use(T6, "bob", "openai", "gpt-4o", Usage(100, 100), "automation")
        # Not usage: a refund.
        b.credit("acme", D("0.5"), reason="refund", idempotency_key="refund")
        return self

    def use(
        self, when: datetime, user: str, provider: str, model: str, usage: Usage, feature: str
    ) -> None:
        self.clock.set(when)
        self.entries.append(
            self.billing.record_usage(
                "acme",
                user=user,
                provider=provider,
                model=model,
                usage=usage,
                feature_code=feature,
                idempotency_key=f"u{len(self.entries) + 1}",
            )
        )


@pytest.fixture
def story(billing: Billing, clock: ManualClock) -> Story:
    return Story(billing, clock).build()


def figures(row: UsageRow) -> tuple[Any, ...]:
    """A row as (keys..., calls, in, out, cache read, cache write, costs, amount)."""
    return (
        *row.keys.values(),
        row.calls,
        row.input_tokens,
        row.output_tokens,
        row.cache_read_tokens,
        row.cache_write_tokens,
        row.provider_cost,
        row.amount,
    )


def usd(value: str) -> dict[str, D]:
    return {"USD": D(value)}


# ------------------------------------------------------------------ the story


def test_each_call_costs_what_the_story_says(story: Story) -> None:
    costs = [(e.provider_cost, e.amount, e.reason) for e in story.entries]
    assert costs == [
        (D("0.0125"), D("0.01875"), "usage"),
        (D("0.0027"), D("0.00405"), "usage"),
        (D("0.0135"), D("0.02025"), "usage"),
        (D("0.00687"), D("0.010305"), "usage"),
        (D("0.02775"), D("0.041625"), "usage"),
        (D("0.00125"), D("0.001875"), "usage"),
    ]
    assert story.billing.balance("acme").balance == D("100.403145")  # 100.5 - 0.096855


def test_totals_without_grouping(story: Story) -> None:
    """Six calls cost the providers 0.06457 USD and were billed 0.096855 USD; the
    refund and the top-up are not usage."""
    [row] = story.billing.usage_report("acme", group_by=[])
    assert row.keys == {} and row.period is None
    assert figures(row) == (6, 18_300, 5_112, 1_000, 1_000, usd("0.06457"), D("0.096855"))
    assert row.currency == "USD"


def test_by_provider(story: Story) -> None:
    rows = story.billing.usage_report("acme", group_by=["provider"])
    assert [figures(r) for r in rows] == [
        ("anthropic", 2, 6_000, 1_500, 0, 1_000, usd("0.04125"), D("0.061875")),
        ("openai", 4, 12_300, 3_612, 1_000, 0, usd("0.02332"), D("0.03498")),
    ]


def test_by_day_cuts_at_utc_midnight(story: Story) -> None:
    """Call 2 at 23:59:59.999999 stays on Sunday; call 3 at 00:00 is Monday's."""
    rows = story.billing.usage_report("acme")  # group_by=("day",)
    assert [(r.period, r.calls, r.amount) for r in rows] == [
        (utc(2026, 2, 28), 1, D("0.01875")),
        (utc(2026, 3, 1), 1, D("0.00405")),
        (utc(2026, 3, 2), 2, D("0.030555")),
        (utc(2026, 3, 8), 1, D("0.041625")),
        (utc(2026, 3, 9), 1, D("0.001875")),
    ]
    assert all(r.keys["day"].tzinfo is UTC for r in rows)  # type: ignore[union-attr]


def test_by_week_starts_on_monday(story: Story) -> None:
    """Saturday 28 Feb and Sunday 1 March belong to the week of Monday 23 Feb;
    Sunday 8 March to the week of Monday 2 March; one microsecond into Monday
    9 March starts the next week."""
    rows = story.billing.usage_report("acme", group_by=["week"])
    assert [figures(r) for r in rows] == [
        (utc(2026, 2, 23), 2, 11_000, 3_000, 0, 0, usd("0.0152"), D("0.0228")),
        (utc(2026, 3, 2), 3, 7_200, 2_012, 1_000, 1_000, usd("0.04812"), D("0.07218")),
        (utc(2026, 3, 9), 1, 100, 100, 0, 0, usd("0.00125"), D("0.001875")),
    ]


def test_by_month_starts_on_the_first(story: Story) -> None:
    rows = story.billing.usage_report("acme", group_by=["month"])
    assert [(r.period, r.calls, r.provider_cost, r.amount) for r in rows] == [
        (utc(2026, 2, 1), 1, usd("0.0125"), D("0.01875")),
        (utc(2026, 3, 1), 5, usd("0.05207"), D("0.078105")),
    ]


def test_week_provider_model(story: Story) -> None:
    rows = story.billing.usage_report("acme", group_by=["week", "provider", "model"])
    assert [(*r.keys.values(), r.calls, r.amount) for r in rows] == [
        (utc(2026, 2, 23), "openai", "gpt-4o", 1, D("0.01875")),
        (utc(2026, 2, 23), "openai", "gpt-4o-mini", 1, D("0.00405")),
        (utc(2026, 3, 2), "anthropic", "claude-sonnet-4-5", 2, D("0.061875")),
        (utc(2026, 3, 2), "openai", "gpt-4o", 1, D("0.010305")),
        (utc(2026, 3, 9), "openai", "gpt-4o", 1, D("0.001875")),
    ]
    assert list(rows[0].keys) == ["week", "provider", "model"]


def test_keys_in_the_order_asked(story: Story) -> None:
    """Grouped by user, then feature code: sorted by user first."""
    rows = story.billing.usage_report("acme", group_by=["user", "feature_code"])
    assert [figures(r) for r in rows] == [
        ("alice", "automation", 1, 2_000, 500, 0, 0, usd("0.0135"), D("0.02025")),
        ("alice", "chat", 2, 2_200, 1_512, 1_000, 0, usd("0.01937"), D("0.029055")),
        ("bob", "automation", 2, 4_100, 1_100, 0, 1_000, usd("0.029"), D("0.0435")),
        ("bob", "chat", 1, 10_000, 2_000, 0, 0, usd("0.0027"), D("0.00405")),
    ]
    rows = story.billing.usage_report("acme", group_by=["feature_code", "user"])
    assert [tuple(r.keys.values()) for r in rows] == [
        ("automation", "alice"),
        ("automation", "bob"),
        ("chat", "alice"),
        ("chat", "bob"),
    ]


def test_untagged_usage_groups_last(story: Story) -> None:
    """Only call 4 carries a feature instance and a workflow; the others group
    under None, after the tagged ones, on both backends."""
    b = story.billing
    rows = b.usage_report("acme", group_by=["feature_instance", "workflow_id"])
    assert [(*r.keys.values(), r.calls) for r in rows] == [
        ("fi-chat", "wf-1", 1),
        (None, None, 5),
    ]


@pytest.mark.parametrize(
    ("filters", "calls", "amount"),
    [
        ({"user": "bob"}, 3, "0.04755"),
        ({"provider": "anthropic"}, 2, "0.061875"),
        ({"provider": "openai", "model": "gpt-4o"}, 3, "0.03093"),
        ({"feature_code": "chat"}, 3, "0.033105"),
        ({"feature_code": "chat", "user": "alice"}, 2, "0.029055"),
        ({"feature_instance": "fi-chat"}, 1, "0.010305"),
        ({"workflow_id": "wf-1"}, 1, "0.010305"),
        # since is inclusive, until exclusive: Monday 2 March 00:00 starts the range.
        ({"since": T3}, 4, "0.074055"),
        ({"until": T3}, 2, "0.0228"),
        ({"since": T3, "until": T5}, 2, "0.030555"),
        ({"since": T3, "until": T3}, 0, None),
        # the same instant written in another zone
        ({"since": datetime(2026, 3, 2, 1, 0, tzinfo=timezone(timedelta(hours=1)))}, 4, "0.074055"),
        ({"user": "nobody"}, 0, None),
    ],
)
def test_filters(story: Story, filters: dict[str, Any], calls: int, amount: str | None) -> None:
    rows = story.billing.usage_report("acme", group_by=[], **filters)
    if amount is None:
        assert rows == []
    else:
        [row] = rows
        assert (row.calls, row.amount) == (calls, D(amount))


def test_the_report_is_the_sum_of_its_entries(story: Story) -> None:
    """Grouped any way, the totals add up to the entries, exactly."""
    b = story.billing
    for group_by in (["day", "user"], ["month", "model", "feature_code"], ["workflow_id"]):
        rows = b.usage_report("acme", group_by=group_by)
        assert sum(r.calls for r in rows) == 6
        assert sum((r.amount for r in rows), D(0)) == sum(e.amount for e in story.entries)
        assert sum((r.provider_cost["USD"] for r in rows), D(0)) == D("0.06457")


def test_amount_only_usage_and_mixed_provider_currencies(
    billing: Billing, clock: ManualClock
) -> None:
    """A private model priced in EUR (2 EUR per million in, 4 out; 1 EUR = 1.10 USD),
    a catalog model in USD and a usage recorded as a plain amount, all in one
    group: the provider cost is kept per currency, and the plain amount adds a
    call and money but no cost."""
    billing.create_mandate("lab", billing_model="unlimited", currency="USD")
    billing.add_user("ann")
    billing.add_member("lab", "ann")
    billing.access.register_provider("openai")
    billing.pricing.set_exchange_rate("EUR", "USD", D("1.10"), valid_from=clock())
    billing.pricing.set_custom_price(
        "openai",
        "ft-private",
        input_mtok=D("2"),
        output_mtok=D("4"),
        currency="EUR",
        mandate="lab",
        valid_from=clock(),
    )
    clock.advance(60)
    billing.record_usage(
        "lab",
        user="ann",
        provider="openai",
        model="ft-private",
        usage=Usage(1000, 500),
        idempotency_key="a",
    )  # 0.004 EUR -> 0.0044 USD -> 0.0066 USD
    billing.record_usage(
        "lab",
        user="ann",
        provider="openai",
        model="gpt-4o",
        usage=Usage(1000, 1000),
        idempotency_key="b",
    )  # 0.0125 USD -> 0.01875
    billing.record_usage(
        "lab", amount=D("0.25"), user="ann", provider="openai", idempotency_key="c"
    )
    [row] = billing.usage_report("lab", group_by=["provider"])
    assert figures(row) == (
        "openai",
        3,
        2_000,
        1_500,
        0,
        0,
        {"EUR": D("0.004"), "USD": D("0.0125")},
        D("0.27535"),
    )
    by_model = billing.usage_report("lab", group_by=["model"])
    assert [(r.keys["model"], r.provider_cost, r.amount) for r in by_model] == [
        ("ft-private", {"EUR": D("0.004")}, D("0.0066")),
        ("gpt-4o", usd("0.0125"), D("0.01875")),
        (None, {}, D("0.25")),
    ]
    out = io.StringIO()
    assert billing.export_usage_report_csv("lab", out, group_by=["model"]) == 3
    assert out.getvalue().splitlines() == [
        "model,calls,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,"
        "provider_cost_EUR,provider_cost_USD,amount,currency",
        "ft-private,1,1000,500,0,0,0.004,,0.006600,USD",
        "gpt-4o,1,1000,1000,0,0,,0.0125,0.018750,USD",
        ",1,0,0,0,0,,,0.250000,USD",
    ]


def test_costs_beyond_64_bits_of_pico_units_stay_exact(
    billing: Billing, clock: ManualClock
) -> None:
    """Provider costs are summed as whole micro-units plus the pico rest, so a
    group costing more than 9.2 million USD (2^63 pico-USD) does not overflow
    SQLite's integer SUM. Here: 3 calls of a model priced at 1,000,000 USD per
    million output tokens, 4 million tokens each = 12 million USD."""
    billing.create_mandate("big", billing_model="unlimited", currency="USD")
    billing.pricing.set_custom_price(
        "openai",
        "huge",
        input_mtok=D("0.000001"),
        output_mtok=D("1000000"),
        mandate="big",
        valid_from=clock(),
    )
    clock.advance(1)
    for i in range(3):
        billing.record_usage(
            "big",
            provider="openai",
            model="huge",
            usage=Usage(1, 4_000_000),
            idempotency_key=f"k{i}",
            already_happened=True,
        )
    [row] = billing.usage_report("big", group_by=[])
    assert row.provider_cost == usd("12000000.000000000003")
    assert row.amount == D("18000000.000000")  # each 6,000,000.0000000000015 -> rounded


# ------------------------------------------------------------------- balances


def test_balances_for_user_across_three_billing_models(
    billing: Billing, clock: ManualClock
) -> None:
    """Carol belongs to a shared pool (CHF), a per-user mandate (EUR: her own
    wallet) and an unlimited one (USD, gone negative); she is not a member of a
    fourth. A running hold is pending; a hold past its time no longer is."""
    billing.add_user("carol")
    billing.add_user("dave")
    for name, model, currency in (
        ("zeta", "unlimited", "USD"),
        ("alpha", "prepay_mandate", "CHF"),
        ("mid", "prepay_user", "EUR"),
        ("other", "prepay_mandate", "CHF"),
    ):
        billing.create_mandate(name, billing_model=model, currency=currency)
    for mandate in ("zeta", "alpha", "mid"):
        billing.add_member(mandate, "carol")
    billing.add_member("mid", "dave")
    billing.add_member("other", "dave")
    billing.credit("alpha", D("50"), idempotency_key="a1")
    billing.credit("mid", D("20"), user="carol", idempotency_key="m1")
    billing.credit("mid", D("7"), user="dave", idempotency_key="m2")
    billing.credit("other", D("9"), idempotency_key="o1")
    billing.hold("alpha", amount=D("5"), idempotency_key="h1", ttl_s=60)
    billing.hold("alpha", amount=D("1.5"), user="carol", idempotency_key="h2", ttl_s=3600)
    billing.hold("mid", amount=D("2.25"), user="carol", idempotency_key="h3")
    billing.record_usage("zeta", amount=D("3.333333"), user="carol", idempotency_key="z1")
    clock.advance(120)  # the 60-second hold is past its time
    rows = billing.balances_for_user("carol")
    got = [(r.mandate, r.billing_model.value, r.account, r.currency) for r in rows]
    assert got == [
        ("alpha", "prepay_mandate", "pool", "CHF"),
        ("mid", "prepay_user", "user:carol", "EUR"),
        ("zeta", "unlimited", "pool", "USD"),
    ]
    assert [(r.balance, r.available, r.pending) for r in rows] == [
        (D("50"), D("48.5"), D("1.5")),  # the overdue 5.00 hold no longer counts
        (D("20"), D("17.75"), D("2.25")),
        (D("-3.333333"), D("-3.333333"), D("0")),
    ]
    assert all(r.user == "carol" for r in rows)
    assert str(rows[0].balance) == "50.000000"
    # The same figures as balance() gives for each (which expires the overdue hold).
    for r in rows:
        bal = billing.balance(r.mandate, user="carol")
        assert (bal.account, bal.balance, bal.available, bal.pending) == (
            r.account,
            r.balance,
            r.available,
            r.pending,
        )
    assert [(r.mandate, r.account, r.balance) for r in billing.balances_for_user("dave")] == [
        ("mid", "user:dave", D("7")),
        ("other", "pool", D("9")),
    ]


def test_balances_for_user_without_mandates_and_unknown(billing: Billing) -> None:
    billing.add_user("eve")
    assert billing.balances_for_user("eve") == []
    with pytest.raises(aibill.UnknownUser):
        billing.balances_for_user("nobody")
    with pytest.raises(aibill.InvalidRequest) as err:
        billing.balances_for_user("")
    assert err.value.details["field"] == "user"


# ------------------------------------------------------------------------ CSV


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_history_csv_exact(story: Story) -> None:
    b = story.billing
    out = io.StringIO(newline="")
    assert b.export_history_csv("acme", out) == 8
    text = out.getvalue()
    assert text.split("\r\n", 1)[0] == ",".join(HISTORY_CSV_COLUMNS)
    rows = read_csv(text)
    assert [r["entry_id"] for r in rows] == [e.id for e in b.history("acme").entries]
    refund, call6, call5, call4 = rows[0], rows[1], rows[2], rows[3]
    assert refund == {
        **dict.fromkeys(HISTORY_CSV_COLUMNS, ""),
        "entry_id": refund["entry_id"],
        "posted_at": "2026-03-09T00:00:00.000001Z",
        "kind": "credit",
        "reason": "refund",
        "account": "pool",
        "amount": "0.500000",
        "currency": "USD",
        "balance_after": "100.403145",
        "over_balance": "false",
        "shortfall": "0.000000",
    }
    assert call4 == {
        "entry_id": story.entries[3].id,
        "posted_at": "2026-03-02T12:00:00.000000Z",
        "kind": "debit",
        "reason": "usage",
        "account": "pool",
        "user": "alice",
        "amount": "0.010305",
        "currency": "USD",
        "balance_after": "99.946645",
        "provider": "openai",
        "model": "gpt-4o",
        "model_matched": "gpt-4o",
        "feature_code": "chat",
        "feature_instance": "fi-chat",
        "workflow_id": "wf-1",
        "input_tokens": "1200",
        "output_tokens": "512",
        "cache_read_tokens": "1000",
        "cache_write_tokens": "0",
        "provider_cost": "0.00687",
        "provider_currency": "USD",
        "fx_rate": "1",
        "markup_percent": "50",
        "price_source": "genai-prices 0.2.3",
        "hold_id": story.hold_id,
        "over_balance": "false",
        "shortfall": "0.000000",
        "over_limit": "",
        "description": "",
    }
    assert (call5["posted_at"], call5["cache_write_tokens"], call5["provider_cost"]) == (
        "2026-03-08T10:00:00.000000Z",
        "1000",
        "0.02775",
    )
    assert (call6["user"], call6["amount"], call6["balance_after"]) == (
        "bob",
        "0.001875",
        "99.903145",
    )
    # Money is never written with an exponent or as a float.
    for r in rows:
        for name in ("amount", "balance_after", "provider_cost", "shortfall", "fx_rate"):
            assert "e" not in r[name].lower()
            if r[name]:
                assert D(r[name]) >= 0


def test_history_csv_pages_and_filters(story: Story) -> None:
    """Two entries a page give the same lines as one export of everything; the
    filters are history()'s."""
    b = story.billing
    whole = "".join(b.iter_history_csv("acme"))
    paged = "".join(b.iter_history_csv("acme", page_size=2))
    assert paged == whole
    out = io.StringIO()
    assert b.export_history_csv("acme", out, user="bob", since=T2, until=T6) == 2
    assert [r["posted_at"] for r in read_csv(out.getvalue())] == [
        "2026-03-08T10:00:00.000000Z",
        "2026-03-01T23:59:59.999999Z",
    ]
    out = io.StringIO()
    assert b.export_history_csv("acme", out, kind="credit") == 2
    out = io.StringIO()
    assert b.export_history_csv("acme", out, provider="nobody") == 0
    assert out.getvalue() == ",".join(HISTORY_CSV_COLUMNS) + "\r\n"


def test_usage_report_csv_exact(story: Story) -> None:
    out = io.StringIO(newline="")
    n = story.billing.export_usage_report_csv("acme", out, group_by=["week", "provider"])
    assert n == 4
    assert out.getvalue() == (
        "week,provider,calls,input_tokens,output_tokens,cache_read_tokens,"
        "cache_write_tokens,provider_cost_USD,amount,currency\r\n"
        "2026-02-23,openai,2,11000,3000,0,0,0.0152,0.022800,USD\r\n"
        "2026-03-02,anthropic,2,6000,1500,0,1000,0.04125,0.061875,USD\r\n"
        "2026-03-02,openai,1,1200,512,1000,0,0.00687,0.010305,USD\r\n"
        "2026-03-09,openai,1,100,100,0,0,0.00125,0.001875,USD\r\n"
    )
    rows = read_csv(out.getvalue())
    assert sum(D(r["amount"]) for r in rows) == D("0.096855")
    lines = list(story.billing.iter_usage_report_csv("acme", group_by=["month"]))
    assert lines[1:] == [
        "2026-02-01,1,1000,1000,0,0,0.0125,0.018750,USD\r\n",
        "2026-03-01,5,17300,4112,1000,1000,0.05207,0.078105,USD\r\n",
    ]


def test_spreadsheet_safe_defuses_formulas(billing: Billing) -> None:
    """Text a spreadsheet would run as a formula gets a leading quote (by
    default); negative balances stay numbers; ``spreadsheet_safe=False`` keeps
    the text as stored."""
    billing.create_mandate("x", billing_model="unlimited", currency="USD")
    billing.add_user("ann")
    billing.add_member("x", "ann")
    billing.access.register_provider("openai")
    billing.record_usage(
        "x",
        amount=D("2"),
        user="ann",
        provider="openai",
        feature_code="=HYPERLINK(1)",
        description="@SUM(A1)",
        idempotency_key="k",
    )
    plain = read_csv("".join(billing.iter_history_csv("x", spreadsheet_safe=False)))[0]
    assert (plain["feature_code"], plain["description"]) == ("=HYPERLINK(1)", "@SUM(A1)")
    safe = read_csv("".join(billing.iter_history_csv("x")))[0]
    assert (safe["feature_code"], safe["description"]) == ("'=HYPERLINK(1)", "'@SUM(A1)")
    assert safe["balance_after"] == "-2.000000"


class Sink:
    """A text target that keeps nothing but a count."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


def test_history_export_memory_stays_flat(
    db_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exporting 5,000 entries needs no more memory than exporting 1,000: the
    export reads one page at a time."""
    billing = aibill.connect(db_url, clock=clock, sqlite_synchronous="OFF")
    try:
        billing.create_mandate("bulk", billing_model="unlimited", currency="USD")
        calls: list[Any] = []
        original = history_store.entry_page

        def counting(*args: Any, **kw: Any) -> Any:
            calls.append(args[5])  # the page's position: None for the first
            return original(*args, **kw)

        def add(n: int) -> None:
            for _ in range(n):
                clock.advance(1)
                billing.credit("bulk", D("0.01"), idempotency_key=f"k{clock().isoformat()}")

        def peak() -> int:
            tracemalloc.start()
            try:
                sink = Sink()
                written = billing.export_history_csv("bulk", sink, page_size=250)  # type: ignore[arg-type]
                return tracemalloc.get_traced_memory()[1] if written else 0
            finally:
                tracemalloc.stop()

        add(1000)
        monkeypatch.setattr(history_store, "entry_page", counting)
        billing.export_history_csv("bulk", Sink(), page_size=250)  # type: ignore[arg-type]  # warm-up
        small = peak()
        add(4000)
        calls.clear()
        big = peak()
        assert len(calls) == 20 and calls[0] is None and all(calls[1:])
        assert small > 0 and big < small * 1.5 + 256 * 1024, (small, big)
    finally:
        billing.close()


# ----------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"group_by": ["hour"]}, "group_by"),
        ({"group_by": ["day", "week"]}, "group_by"),
        ({"group_by": ["provider", "provider"]}, "group_by"),
        ({"since": datetime(2026, 3, 1)}, "since"),  # noqa: DTZ001 - naive on purpose
        ({"until": datetime(2026, 3, 1)}, "until"),  # noqa: DTZ001
        ({"since": T5, "until": T3}, "until"),
        ({"user": 7}, "user"),
    ],
)
def test_bad_report_arguments(story: Story, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(aibill.InvalidRequest) as err:
        story.billing.usage_report("acme", **kwargs)
    assert err.value.details["field"] == field
    with pytest.raises(aibill.InvalidRequest):
        story.billing.iter_usage_report_csv("acme", **kwargs)


def test_a_single_group_key_may_be_a_string(story: Story) -> None:
    assert story.billing.usage_report("acme", group_by="provider") == (
        story.billing.usage_report("acme", group_by=["provider"])
    )


def test_unknown_mandate_and_bad_history_filters_raise_before_any_line(billing: Billing) -> None:
    with pytest.raises(aibill.UnknownMandate):
        billing.usage_report("ghost")
    with pytest.raises(aibill.UnknownMandate):
        billing.iter_history_csv("ghost")
    billing.create_mandate("m")
    out = io.StringIO()
    with pytest.raises(aibill.InvalidRequest) as err:
        billing.export_history_csv("m", out, kind="refund")
    assert err.value.details["field"] == "kind"
    with pytest.raises(aibill.InvalidRequest) as err:
        billing.export_history_csv("m", out, since=datetime(2026, 1, 1))  # noqa: DTZ001
    assert err.value.details["field"] == "since"
    with pytest.raises(aibill.InvalidRequest) as err:
        billing.export_history_csv("m", out, page_size=0)
    assert err.value.details["field"] == "limit"
    assert out.getvalue() == ""
    assert billing.usage_report("m") == []
    empty = io.StringIO()
    assert billing.export_usage_report_csv("m", empty, group_by=["day", "user"]) == 0
    assert empty.getvalue() == (
        "day,user,calls,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,"
        "amount,currency\r\n"
    )
