"""The demo month (``aibill.demo_data.fill``): three mandates with their people,
prices and a month of priced usage, written through the library's operations,
idempotent, on SQLite and PostgreSQL. A small ``records`` keeps it fast."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import aibill
from aibill import Billing, BillingModel, EntryKind, ManualClock
from aibill.demo_data import DemoSummary, DemoWouldMerge, fill

RECORDS = 150
MANDATES = ("acme", "globex", "initech")


def all_entries(billing: Billing, mandate: str) -> list[aibill.Entry]:
    out: list[aibill.Entry] = []
    cursor = None
    while True:
        page = billing.history(mandate, limit=1000, cursor=cursor)
        out += page.entries
        cursor = page.cursor
        if cursor is None:
            return out


def all_audit(billing: Billing, mandate: str | None) -> list[Any]:
    out: list[Any] = []
    cursor = None
    while True:
        page = billing.audit_log(mandate, limit=1000, cursor=cursor)
        out += page.records
        cursor = page.cursor
        if cursor is None:
            return out


def state(billing: Billing) -> dict[str, Any]:
    """Everything a second run must leave as it was."""
    return {
        "entries": {m: sorted(e.id for e in all_entries(billing, m)) for m in MANDATES},
        "accounts": {m: billing.accounts(m) for m in MANDATES},
        "holds": {m: sorted(h.id for h in billing.open_holds(m)) for m in MANDATES},
        "audit": {m: [r.id for r in all_audit(billing, m)] for m in (None, *MANDATES)},
        "rates": billing.pricing.exchange_rates(),
        "users": billing.users(),
        "members": {m: billing.members(m) for m in MANDATES},
    }


@pytest.fixture
def month(billing: Billing, clock: ManualClock) -> tuple[DemoSummary, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []
    summary = fill(
        billing,
        records=RECORDS,
        now=clock(),
        progress=lambda done, total: calls.append((done, total)),
    )
    return summary, calls


def test_three_mandates_one_per_billing_model(
    billing: Billing, month: tuple[DemoSummary, list[tuple[int, int]]]
) -> None:
    summary, _ = month
    mandates = {m.id: (m.billing_model, m.currency) for m in billing.mandates()}
    assert mandates == {
        "acme": (BillingModel.PREPAY_MANDATE, "CHF"),
        "globex": (BillingModel.PREPAY_USER, "EUR"),
        "initech": (BillingModel.UNLIMITED, "USD"),
    }
    assert [(m.id, m.billing_model, m.currency) for m in summary.mandates] == [
        (k, *v) for k, v in sorted(mandates.items())
    ]
    assert summary.mandate_count == aibill.demo_data.Tally(created=3, present=0)


def test_people_roles_and_access(billing: Billing, month: object) -> None:
    members = {m: {x.user: x.roles for x in billing.members(m)} for m in MANDATES}
    for mandate, people in members.items():
        roles = Counter(r for rs in people.values() for r in rs)
        assert roles["admin"] >= 1 and roles["viewer"] >= 1, mandate
    assert sum(len(p) for p in members.values()) >= 12
    assert Counter(r for r in members["acme"].values())[("member",)] >= 2
    # someone works for two mandates; a system admin belongs to none
    shared = set(members["acme"]) & set(members["globex"])
    assert shared
    admins = [u for u in billing.users() if billing.access.is_sysadmin(u)]
    assert admins and not any(a in p for a in admins for p in members.values())
    # globex's people may use every provider but Google; acme's viewer only Mistral
    felix = next(u for u, r in members["globex"].items() if r == ("staff",))
    assert "openai" in billing.allowed_providers("globex", felix)
    assert not billing.is_provider_allowed("globex", felix, "google")
    nina = next(u for u, r in members["acme"].items() if r == ("viewer",))
    assert billing.allowed_providers("acme", nina) == ["mistral"]
    member = next(u for u, r in members["acme"].items() if r == ("member",))
    assert "google" in billing.allowed_providers("acme", member)


def test_usage_records_look_like_a_month_of_work(
    billing: Billing, clock: ManualClock, month: tuple[DemoSummary, list[tuple[int, int]]]
) -> None:
    summary, calls = month
    assert summary.usage_records.created == RECORDS and summary.usage_records.present == 0
    usage = [e for m in MANDATES for e in all_entries(billing, m) if e.reason == "usage"]
    records = [e for e in usage if e.hold_id is None]
    assert len(records) == RECORDS
    assert len({e.provider for e in records}) >= 4
    assert len({e.model for e in records}) >= 8
    assert len({e.user for e in records}) >= 9
    assert {e.feature_code for e in records} == {"chatplayground", "automation", "summarizer"}
    for e in usage:
        assert e.input_tokens and e.output_tokens and e.price_source and e.breakdown
        assert summary.start <= e.posted_at <= clock()
        assert not e.over_balance and e.over_limit is None and not e.provider_not_allowed
    # priced from the catalog and from custom prices, converted, and marked up
    assert any(e.price_source.startswith("custom:") for e in usage if e.price_source)
    rates = {r.rate for r in billing.pricing.exchange_rates("USD", "CHF")}
    used = {e.fx_rate for e in usage if e.currency == "CHF" and e.provider_currency == "USD"}
    assert len(used) >= 2 and used <= rates  # the rate changed during the month
    assert {e.fx_rate for e in usage if e.currency == "USD"} == {Decimal(1)}
    assert {e.markup_percent for e in usage} >= {Decimal("50"), Decimal("35"), Decimal("40")}
    # weekdays are more than twice as busy as weekends (days in UTC)
    days = [(summary.start + timedelta(days=k)).weekday() for k in range(30)]
    by_day = [
        r
        for m in ("acme", "initech")
        for r in billing.usage_report(m, group_by=["day"])
        if r.period is not None
    ]
    weekday = sum(r.calls for r in by_day if r.period and r.period.weekday() < 5)
    weekend = sum(r.calls for r in by_day if r.period and r.period.weekday() >= 5)
    assert weekday / sum(d < 5 for d in days) > 2 * weekend / sum(d >= 5 for d in days)
    # the report agrees: several providers, models and users per mandate
    rows = billing.usage_report("acme", group_by=["provider", "model", "user", "feature_code"])
    assert len({r.keys["provider"] for r in rows}) >= 3
    assert sum(r.calls for r in rows) == len([e for e in usage if e.mandate == "acme"])
    # progress reported every record, up to the total
    assert calls[0] == (0, RECORDS) and calls[-1] == (RECORDS, RECORDS)
    assert [d for d, _ in calls] == list(range(RECORDS + 1))


def test_money_adds_up(billing: Billing, month: tuple[DemoSummary, list[tuple[int, int]]]) -> None:
    summary, _ = month
    assert billing.verify() == []
    for mandate in MANDATES:
        entries = all_entries(billing, mandate)
        debits = sum((e.amount for e in entries if e.kind is EntryKind.DEBIT), Decimal(0))
        credits = sum((e.amount for e in entries if e.kind is EntryKind.CREDIT), Decimal(0))
        currency = billing.get_mandate(mandate).currency
        assert summary.charged[mandate].amount == debits
        assert summary.charged[mandate].currency == currency
        if credits:
            assert summary.credited[mandate].amount == credits
        for money in (summary.charged[mandate].amount, *(e.amount for e in entries)):
            assert isinstance(money, Decimal)
        for balance in billing.accounts(mandate):
            assert isinstance(balance.balance, Decimal) and isinstance(balance.available, Decimal)
    # prepaid accounts were funded by payments and top-ups; the unlimited one is invoiced
    reasons = {e.reason for m in ("acme", "globex") for e in all_entries(billing, m)}
    assert {"payment", "admin"} <= reasons
    assert billing.balance("acme").balance > 0
    assert billing.balance("initech").balance < 0
    for wallet in billing.accounts("globex"):
        assert wallet.balance >= 0
    assert summary.credits.created >= 6 and summary.limits.created == 2
    assert len(billing.spending_limits("acme")) + len(billing.spending_limits("globex")) == 2
    assert summary.custom_prices.created == 2 and summary.markups.created == 2
    assert summary.exchange_rates.created >= 4
    for quote in ("CHF", "EUR"):
        assert len(billing.pricing.exchange_rates("USD", quote)) >= 3


def test_holds_captured_released_and_in_flight(
    billing: Billing, clock: ManualClock, month: tuple[DemoSummary, list[tuple[int, int]]]
) -> None:
    summary, _ = month
    assert summary.holds_pending >= 1 and summary.holds_released >= 1
    assert summary.holds_captured >= 1
    in_flight = [h for m in MANDATES for h in billing.open_holds(m)]
    assert len(in_flight) == summary.holds_pending
    # Calls running now: placed minutes ago, alive for the default quarter of an hour.
    assert all(clock() - timedelta(minutes=3) < h.created_at < clock() for h in in_flight)
    assert all(h.expires_at == h.created_at + timedelta(minutes=15) for h in in_flight)
    assert all(h.expires_at > clock() + timedelta(minutes=10) for h in in_flight)
    assert sum(billing.balance(h.mandate, user=h.user).pending for h in in_flight) > 0
    captured = [e for m in MANDATES for e in all_entries(billing, m) if e.hold_id is not None]
    assert len(captured) == summary.holds_captured


def test_a_second_fill_writes_nothing(
    billing: Billing, clock: ManualClock, month: tuple[DemoSummary, list[tuple[int, int]]]
) -> None:
    first, _ = month
    before = state(billing)
    again = fill(billing, records=RECORDS, now=clock())
    assert again.wrote_nothing
    assert again.usage_records == aibill.demo_data.Tally(created=0, present=RECORDS)
    assert again.users.created == 0 and again.users.present == first.users.created
    assert again.credits.created == 0 and again.credits.present == first.credits.created
    assert again.charged == first.charged and again.credited == first.credited
    assert state(billing) == before
    lines = "\n".join(again.lines())
    assert "150 usage records, all already there" in lines
    assert "acme: prepay_mandate CHF" in lines

    # days later, with another ``now``: it replays the first run, writes nothing
    later = fill(billing, records=RECORDS, now=clock() + timedelta(days=3, hours=5))
    assert later.wrote_nothing and later.charged == first.charged
    assert state(billing) == before
    assert billing.verify() == []


def test_the_first_summary_says_what_it_made(
    month: tuple[DemoSummary, list[tuple[int, int]]],
) -> None:
    summary, _ = month
    assert not summary.wrote_nothing
    lines = summary.lines()
    assert any("3 mandates created (acme: prepay_mandate CHF" in line for line in lines)
    assert "150 usage records written" in lines
    assert any(line.startswith("initech: ") and "USD charged" in line for line in lines)


def test_the_same_seed_gives_the_same_data(tmp_path: Path) -> None:
    """Content depends on the seed and the index only; times on ``now``."""

    def calls(name: str, seed: int, now: datetime) -> Counter[tuple[object, ...]]:
        billing = aibill.connect(f"sqlite:///{tmp_path / name}")
        try:
            fill(billing, records=40, seed=seed, now=now)
            return Counter(
                (e.mandate, e.user, e.provider, e.model, e.input_tokens, e.output_tokens)
                for m in MANDATES
                for e in all_entries(billing, m)
                if e.reason == "usage" and e.hold_id is None
            )
        finally:
            billing.close()

    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    first = calls("a.db", 7, now)
    assert first == calls("b.db", 7, now + timedelta(days=40))
    assert first != calls("c.db", 8, now)


def test_the_summary_shows_money_exactly() -> None:
    from aibill.demo_data import Money

    assert str(Money(Decimal("1234.266351"), "CHF")) == "1,234.266351 CHF"


def test_the_demo_never_touches_a_mandate_it_did_not_make(billing: Billing) -> None:
    """A ledger where somebody made ``acme`` (the README's walk-through does) is
    refused whole, with how to run the demo instead, and nothing is written."""
    billing.create_mandate("acme", billing_model="prepay_mandate", currency="CHF")
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    billing.credit("acme", Decimal("100"), reason="payment", idempotency_key="pay-1")
    before = {
        "entries": all_entries(billing, "acme"),
        "users": billing.users(),
        "mandates": billing.mandates(),
        "audit": all_audit(billing, None),
    }
    with pytest.raises(DemoWouldMerge) as refused:
        fill(billing, records=RECORDS)
    assert refused.value.code == "demo_would_merge"
    assert "acme" in refused.value.message and "--db demo.db demo" in refused.value.message
    after = {
        "entries": all_entries(billing, "acme"),
        "users": billing.users(),
        "mandates": billing.mandates(),
        "audit": all_audit(billing, None),
    }
    assert after == before


def test_a_demo_interrupted_after_its_first_mandate_finishes_on_a_second_run(
    billing: Billing, clock: ManualClock
) -> None:
    """The demo's own mandates are recognised by the demo's system admin, which it
    writes first: a run cut short after making acme is completed, not refused."""
    billing.add_user("platform.ops")
    billing.access.add_sysadmin("platform.ops")
    billing.create_mandate("acme", billing_model="prepay_mandate", currency="CHF")
    summary = fill(billing, records=RECORDS)
    assert summary.mandate_count.created == 2 and summary.mandate_count.present == 1
    assert billing.balance("acme").balance > 0
