"""A usage report reads whole UTC days from the daily rollups and the partial
days at its ends from the entries (docs/reports.md): over any range, grouped
and filtered in any way, it is exact to the micro-unit and equal to the same
report computed from the entries, also while other transactions write usage;
``verify`` recomputes every rollup row."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text

import aibill
from aibill import Billing, ManualClock, Usage, UsageRecord
from aibill.domain.reports import GROUP_KEYS, PERIOD_KEYS, UsageRow

START = datetime(2026, 2, 26, 22, 0, tzinfo=UTC)  # a Thursday, two hours before midnight
USERS = ("alice", "bob")
CALLS = (
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5"),
    None,  # a plain amount, without tokens to price
    "EUR",  # the provider's own cost, in euros
)
TAGS = {
    "feature_code": (None, "chat", "agent"),
    "feature_instance": (None, "fi-1", "fi-2"),
    "workflow_id": (None, "wf-1"),
}
FILTERS = ("user", "provider", "model", "feature_code", "feature_instance", "workflow_id")


def _open(billing: Billing) -> None:
    """The providers, the rate for euro costs, and the tenant with its users."""
    for provider in ("openai", "anthropic"):
        billing.access.register_provider(provider)
    billing.create_mandate("acme", currency="USD", billing_model="unlimited")
    billing.pricing.set_exchange_rate("EUR", "USD", D("1.0837"), valid_from=START - timedelta(1))
    for user in USERS:
        billing.add_member("acme", user)


@pytest.fixture
def tenant(billing: Billing) -> Iterator[Billing]:
    _open(billing)
    yield billing


def _record(billing: Billing, key: str, user: str, call: Any, tags: dict[str, Any]) -> None:
    if isinstance(call, tuple):
        provider, model = call
        usage = Usage(input_tokens=1000 + len(key), output_tokens=37, cache_read_tokens=11)
        billing.record_usage(
            "acme", user=user, provider=provider, model=model, usage=usage,
            idempotency_key=key, **tags,
        )  # fmt: skip
    elif call == "EUR":
        billing.record_usage(
            "acme", user=user, provider_cost=D("1.234567890123"), provider_currency="EUR",
            idempotency_key=key, **tags,
        )  # fmt: skip
    else:
        billing.record_usage("acme", user=user, amount=D("0.25"), idempotency_key=key, **tags)


def _start(at: datetime, period: str) -> datetime:
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1) if period == "month" else day


def _reference(
    billing: Billing,
    keys: tuple[str, ...],
    filters: dict[str, str],
    since: datetime | None,
    until: datetime | None,
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The report, computed here from every entry of the history."""
    found: dict[tuple[Any, ...], list[Any]] = {}
    cursor = None
    while True:
        page = billing.history("acme", limit=500, cursor=cursor)
        for entry in page.entries:
            if entry.kind != "debit" or entry.reason != "usage":
                continue
            if since is not None and entry.posted_at < since:
                continue
            if until is not None and entry.posted_at >= until:
                continue
            if any(getattr(entry, name) != value for name, value in filters.items()):
                continue
            group = tuple(
                _start(entry.posted_at, k) if k in PERIOD_KEYS else getattr(entry, k) for k in keys
            )
            g = found.setdefault(group, [0, 0, 0, 0, 0, {}, D(0)])
            g[0] += 1
            g[1] += entry.input_tokens or 0
            g[2] += entry.output_tokens or 0
            g[3] += entry.cache_read_tokens or 0
            g[4] += entry.cache_write_tokens or 0
            if entry.provider_currency is not None and entry.provider_cost is not None:
                cost = g[5].get(entry.provider_currency, D(0))
                g[5][entry.provider_currency] = cost + entry.provider_cost
            g[6] += entry.amount
        if page.cursor is None:
            break
        cursor = page.cursor
    return {k: (*v[:5], v[5], v[6]) for k, v in found.items()}


def _as_found(rows: list[UsageRow]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {
        tuple(r.keys.values()): (
            r.calls,
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cache_write_tokens,
            dict(r.provider_cost),
            r.amount,
        )
        for r in rows
    }


_runs = itertools.count()
_times = st.one_of(st.none(), st.integers(-3600, 60 * 60 * 24 * 6))
_keys = st.lists(st.sampled_from(GROUP_KEYS), max_size=3, unique=True).filter(
    lambda keys: sum(k in PERIOD_KEYS for k in keys) <= 1
)
_filters = st.dictionaries(st.sampled_from(FILTERS), st.integers(0, 2), max_size=2)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 60 * 60 * 30),
            st.sampled_from(USERS),
            st.sampled_from(CALLS),
            st.fixed_dictionaries({name: st.sampled_from(v) for name, v in TAGS.items()}),
        ),
        min_size=1,
        max_size=14,
    ),
    reports=st.lists(st.tuples(_keys, _filters, _times, _times), min_size=1, max_size=6),
)
def test_a_report_over_any_range_equals_its_entries(
    tenant: Billing, clock: ManualClock, steps: list[Any], reports: list[Any]
) -> None:
    run = next(_runs)
    clock.set(START)
    for n, (seconds, user, call, tags) in enumerate(steps):
        clock.advance(seconds)
        _record(tenant, f"r{run}-{n}", user, call, tags)
    assert tenant.verify() == []
    for keys, chosen, since_s, until_s in reports:
        since = None if since_s is None else START + timedelta(seconds=since_s)
        until = None if until_s is None else START + timedelta(seconds=until_s)
        if since is not None and until is not None and until < since:
            since, until = until, since
        filters = {name: _filter_value(name, i) for name, i in chosen.items()}
        got = tenant.usage_report("acme", group_by=keys, since=since, until=until, **filters)
        want = _reference(tenant, tuple(keys), filters, since, until)
        assert _as_found(got) == want, (keys, filters, since, until)


def _filter_value(name: str, i: int) -> str:
    values: tuple[Any, ...] = {
        "user": USERS,
        "provider": ("openai", "anthropic"),
        "model": ("gpt-4o", "claude-sonnet-4-5"),
    }.get(name, TAGS.get(name, ()))
    present = [v for v in values if v is not None]
    return present[i % len(present)]


def test_a_report_over_whole_days_reads_no_entries(tenant: Billing, clock: ManualClock) -> None:
    """The dashboard's reports over whole days read the rollups only; a range
    that starts or ends inside a day reads that day's entries as well."""
    clock.set(START)
    for n in range(30):
        clock.advance(hours=5)
        _record(tenant, f"w{n}", USERS[n % 2], CALLS[n % 4], {"feature_code": "chat"})
    sent: list[str] = []

    def capture(conn: object, cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    since, until = datetime(2026, 2, 27, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC)
    event.listen(tenant.engine, "before_cursor_execute", capture)
    try:
        for keys in (("day", "provider"), ("provider", "model"), ("user",), ("feature_code",)):
            tenant.usage_report("acme", group_by=keys, since=since, until=until)
        whole = list(sent)
        sent.clear()
        tenant.usage_report("acme", group_by=("user",), since=since + timedelta(hours=3))
    finally:
        event.remove(tenant.engine, "before_cursor_execute", capture)
    assert any("FROM usage_days" in s for s in whole)
    assert not any("FROM entries" in s for s in whole)
    assert any("FROM entries" in s for s in sent)


def test_verify_finds_a_rollup_that_disagrees_with_the_entries(
    tenant: Billing, clock: ManualClock
) -> None:
    clock.set(START)
    _record(tenant, "v", "alice", CALLS[0], {"feature_code": "chat", "feature_instance": "fi-1"})
    assert tenant.verify() == []
    with tenant.engine.begin() as conn:
        conn.execute(text("UPDATE usage_days SET amount_micros = amount_micros + 1"))
    [drift] = tenant.verify()
    assert drift.account == "usage_days:2026-02-26/alice/openai/gpt-4o/chat/USD"
    assert drift.counter == "amount_micros"
    assert drift.stored_micros == drift.computed_micros + 1


class _ThreadClock:
    """Each writer thread posts at its own time, so that writes land on several days."""

    def __init__(self) -> None:
        self._local = threading.local()

    def set(self, at: datetime) -> None:
        self._local.at = at

    def __call__(self) -> datetime:
        return getattr(self._local, "at", START)


_SNAPSHOT_SUMS = {
    "rollup": "SELECT user_id, day, SUM(calls), SUM(amount_micros), SUM(cost_micros),"
    " SUM(cost_pico) FROM usage_days WHERE mandate_id = 'acme' GROUP BY user_id, day",
    "entries": "SELECT COALESCE(user_id, ''), {day}, COUNT(*), SUM(amount_micros),"
    " SUM(COALESCE(provider_cost_pico, 0) / 1000000), SUM(COALESCE(provider_cost_pico, 0)"
    " % 1000000) FROM entries WHERE mandate_id = 'acme' AND kind = 'debit'"
    " AND reason = 'usage' GROUP BY 1, 2",
}


def _snapshot(billing: Billing) -> tuple[set[Any], set[Any]]:
    """The rollup's totals and the entries' totals per user and day, read in one snapshot."""
    sqlite = billing.engine.dialect.name == "sqlite"
    day = "substr(posted_at, 1, 10)" if sqlite else "CAST(posted_at AT TIME ZONE 'UTC' AS date)"
    options = {} if sqlite else {"isolation_level": "REPEATABLE READ"}
    with billing.engine.connect().execution_options(**options) as conn, conn.begin():
        rollup = {tuple(map(str, r)) for r in conn.execute(text(_SNAPSHOT_SUMS["rollup"]))}
        query = _SNAPSHOT_SUMS["entries"].format(day=day)
        counted = {tuple(map(str, r)) for r in conn.execute(text(query))}
    return rollup, counted


def test_the_rollups_stay_exact_under_concurrent_writes(db_url: str) -> None:
    """Two ledgers on one database (two writers' transactions), three threads
    each, post usage on several days, one by one and in batches, while a
    reader compares the rollups with the entries in one snapshot after
    another: they always agree, and the reports equal the entries at the end."""
    clock = _ThreadClock()
    ledgers = [aibill.connect(db_url, clock=clock) for _ in range(2)]
    first = ledgers[0]
    try:
        _open(first)
        stop = threading.Event()
        mismatches: list[Any] = []
        snapshots = [0]

        def read() -> None:
            while not stop.is_set():
                rollup, counted = _snapshot(first)
                snapshots[0] += 1
                if rollup != counted:
                    mismatches.append(rollup ^ counted)
                time.sleep(0.01)

        def write(n: int) -> None:
            billing = ledgers[n % 2]
            for i in range(12):
                clock.set(START + timedelta(hours=7 * i + n))
                key, user = f"c{n}-{i}", USERS[(n + i) % 2]
                if i % 3 == 2:
                    records = [
                        UsageRecord("acme", user=user, amount=D("0.01"), idempotency_key=k)
                        for k in (f"{key}-{j}" for j in range(5))
                    ]
                    billing.record_usage_batch(records)
                else:
                    _record(billing, key, user, CALLS[i % 4], {"feature_code": "chat"})

        reader = threading.Thread(target=read)
        writers = [threading.Thread(target=write, args=(n,)) for n in range(6)]
        reader.start()
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(120)
        stop.set()
        reader.join(60)
        assert snapshots[0] > 0 and mismatches == []
        rollup, counted = _snapshot(first)
        assert rollup == counted and len(rollup) >= 8
        assert first.verify() == []
        for keys in (("day", "provider"), ("user",), ("week", "model")):
            got = first.usage_report("acme", group_by=keys, since=START + timedelta(hours=3))
            want = _reference(first, keys, {}, START + timedelta(hours=3), None)
            assert _as_found(got) == want
    finally:
        for billing in ledgers:
            billing.close()
