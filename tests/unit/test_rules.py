"""The ledger's rules and the pricing arithmetic, as pure functions: no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibill.domain import pricing_rules, rules
from aibill.domain.money import round_to_micros

MAX = 10**15
micros = st.integers(min_value=0, max_value=MAX)
fast = settings(max_examples=200, deadline=None)


@dataclass(frozen=True)
class Row:
    credits_posted: int
    debits_posted: int
    debits_pending: int
    overdraft_limit: int


rows = st.builds(Row, micros, micros, micros, micros)


# ------------------------------------------------------------------ available


@fast
@given(micros, micros, micros, micros)
def test_available_is_balance_minus_pending_plus_overdraft(
    credits: int, debits: int, pending: int, overdraft: int
) -> None:
    balance = rules.balance(credits, debits)
    assert balance == credits - debits
    assert rules.available(balance, pending, overdraft) == credits - debits - pending + overdraft


@fast
@given(rows, micros)
def test_an_accounts_available_counts_overdue_holds_as_free(row: Row, overdue: int) -> None:
    overdue = min(overdue, row.debits_pending)
    plain = rules.account_available(row)
    assert plain == (
        row.credits_posted - row.debits_posted - row.debits_pending + row.overdraft_limit
    )
    assert rules.account_available(row, overdue=overdue) == plain + overdue


def test_the_sql_of_available_is_the_same_formula() -> None:
    row = Row(credits_posted=7, debits_posted=3, debits_pending=2, overdraft_limit=5)
    names = vars(row)
    assert eval(rules.AVAILABLE_SQL, {}, names) == rules.account_available(row) == 7


# ----------------------------------------------------------------- hold fits


@fast
@given(st.integers(min_value=-MAX, max_value=MAX), st.integers(min_value=1, max_value=MAX))
def test_a_hold_fits_iff_available_covers_it(available: int, amount: int) -> None:
    assert rules.fits(available, amount) is (available >= amount)
    assert rules.fits(available, amount, enforced=False) is True


def test_a_hold_of_exactly_the_available_balance_fits_and_one_micro_more_does_not() -> None:
    assert rules.fits(500_000, 500_000)
    assert not rules.fits(500_000, 500_001)
    assert not rules.fits(-1, 1)


# ------------------------------------------------------------------ capture


@fast
@given(micros, micros, st.booleans(), st.booleans())
def test_capture_posts_the_full_usage_and_draws_only_the_overage(
    usage: int, held: int, pending: bool, expired: bool
) -> None:
    posting = rules.capture_posting(usage, held, pending=pending, expired=expired)
    assert posting.debit == usage
    assert posting.freed == (held if pending else 0)
    if expired:
        assert posting.drawn == usage  # past its time the hold reserved nothing
    else:
        assert posting.drawn == max(0, usage - posting.freed)


@fast
@given(rows, micros, micros)
def test_the_shortfall_is_what_the_available_balance_could_not_cover(
    row: Row, held: int, usage: int
) -> None:
    """A capture of ``usage`` against a pending hold of ``held``: the account's
    counters after it, the part drawn, and what of that part was not there."""
    before = Row(
        row.credits_posted, row.debits_posted, row.debits_pending + held, row.overdraft_limit
    )
    posting = rules.capture_posting(usage, held, pending=True, expired=False)
    after = Row(
        before.credits_posted,
        before.debits_posted + posting.debit,
        before.debits_pending - posting.freed,
        before.overdraft_limit,
    )
    shortfall = rules.shortfall(posting.drawn, rules.account_available(after))
    covered = max(0, rules.account_available(before))
    assert shortfall == max(0, posting.drawn - covered)
    assert 0 <= shortfall <= posting.drawn
    assert rules.shortfall(posting.drawn, rules.account_available(after), enforced=False) == 0


def test_a_capture_above_its_hold_examples() -> None:
    # 1.00 held, 1.50 used, 0.20 left: 0.50 drawn, 0.30 of it not there.
    posting = rules.capture_posting(1_500_000, 1_000_000, pending=True, expired=False)
    assert (posting.debit, posting.freed, posting.drawn) == (1_500_000, 1_000_000, 500_000)
    assert rules.shortfall(posting.drawn, 200_000 - 500_000) == 300_000
    # Under the hold: nothing drawn, no shortfall even on an overdrawn account.
    under = rules.capture_posting(400_000, 1_000_000, pending=True, expired=False)
    assert under.drawn == 0
    assert rules.shortfall(under.drawn, -5_000_000) == 0
    # A hold that was swept (expired) frees nothing now and covers nothing.
    swept = rules.capture_posting(400_000, 1_000_000, pending=False, expired=True)
    assert (swept.freed, swept.drawn) == (0, 400_000)


# -------------------------------------------------------------------- expiry

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_hold_expires_at_its_time_not_before() -> None:
    expires = rules.hold_expires_at(NOW, 900)
    assert expires == NOW + timedelta(minutes=15)
    assert not rules.is_expired(expires, expires - timedelta(microseconds=1))
    assert rules.is_expired(expires, expires)
    assert rules.is_expired(expires, expires + timedelta(days=1))


# --------------------------------------------------------------- idempotency

fields = st.sampled_from(["amount", "user", "metadata", "ttl_s", "description", "b", "a"])
requests = st.dictionaries(fields, st.one_of(st.none(), st.integers(0, 3), st.text(max_size=2)))


@fast
@given(requests, requests)
def test_the_idempotency_comparison_names_the_first_differing_field(
    first: dict[str, object], now: dict[str, object]
) -> None:
    found = rules.request_difference("hold", first, "hold", now)
    differing = sorted(n for n in set(first) | set(now) if first.get(n) != now.get(n))
    if not differing:
        assert found is None
        return
    assert found is not None
    assert found.field == differing[0]
    assert (found.first, found.now) == (first.get(found.field), now.get(found.field))
    # The same two requests in either order name the same field.
    again = rules.request_difference("hold", now, "hold", first)
    assert again is not None and again.field == found.field


def test_a_different_operation_is_named_before_any_field() -> None:
    found = rules.request_difference("hold", {"amount": "1"}, "record_usage", {"amount": "2"})
    assert found == rules.Difference("operation", "hold", "record_usage")
    missing = rules.request_difference("hold", {"user": "ann"}, "hold", {})
    assert missing == rules.Difference("user", "ann", None)
    assert rules.request_difference("hold", {"a": 1}, "hold", {"a": 1}) is None


def test_a_second_capture_matches_only_what_the_first_posted() -> None:
    tokens = (100, 20, 0, 0)
    assert rules.same_capture(310_000, tokens, None, tokens)
    assert not rules.same_capture(310_000, tokens, None, (100, 21, 0, 0))
    assert not rules.same_capture(310_000, tokens, 310_000, None)  # first was by usage
    assert rules.same_capture(310_000, None, 310_000, None)
    assert not rules.same_capture(310_000, None, 310_001, None)
    assert not rules.same_capture(310_000, None, None, tokens)  # first was by amount


# ------------------------------------------------------------ spending limits


@pytest.mark.parametrize(
    ("period", "start"),
    [
        ("day", datetime(2026, 3, 5, tzinfo=UTC)),
        ("week", datetime(2026, 3, 2, tzinfo=UTC)),  # the Monday
        ("month", datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
def test_periods_start_at_utc_midnight_monday_and_the_first(period: str, start: datetime) -> None:
    thursday = datetime(2026, 3, 5, 23, 59, 59, 999_999, tzinfo=UTC)
    assert rules.period_start(thursday, period) == start
    # The same instant written in another zone is the same period.
    zurich = thursday.astimezone(timezone(timedelta(hours=1)))  # Friday 00:59 there
    assert rules.period_start(zurich, period) == start
    assert period in rules.PERIODS


@fast
@given(st.datetimes(timezones=st.just(UTC)), st.sampled_from(rules.PERIODS))
def test_a_period_start_is_a_utc_midnight_at_or_before_now(now: datetime, period: str) -> None:
    start = rules.period_start(now, period)
    assert start <= now
    assert start.tzinfo == UTC
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    assert now - start < timedelta(days=31)
    assert rules.period_start(start, period) == start


@fast
@given(micros, micros, micros)
def test_a_limit_is_passed_only_above_it(limit: int, spent: int, asked: int) -> None:
    assert rules.limit_passed(limit, spent, asked) is (spent + asked > limit)
    assert rules.limit_left(limit, spent) == max(0, limit - spent)
    assert not rules.limit_passed(limit, 0, limit)  # reaching it exactly is allowed


# -------------------------------------------------------------------- pricing

costs = st.decimals(min_value=0, max_value=10**6, places=12, allow_nan=False)
rates = st.decimals(min_value=Decimal("0.000000000001"), max_value=10**9, places=12)
percents = st.decimals(min_value=0, max_value=1000, places=6)


def _half_even(value: Fraction) -> int:
    """Round a rational number to the nearest integer, ties to even."""
    floor = value.numerator // value.denominator
    rest = value - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        return floor + 1
    return floor


@fast
@given(costs, rates, percents)
def test_pricing_is_cost_then_rate_then_markup_then_one_half_even_rounding(
    cost: Decimal, rate: Decimal, percent: Decimal
) -> None:
    steps = pricing_rules.priced(cost, rate=rate, markup_percent=percent)
    exact = Fraction(cost) * Fraction(rate) * (1 + Fraction(percent) / 100)
    assert Fraction(steps.converted) == Fraction(cost) * Fraction(rate)
    assert Fraction(steps.exact) == exact  # nothing rounded before the end
    assert steps.micros == _half_even(exact * 1_000_000)


def test_pricing_rounds_once_even_when_the_exact_amount_has_many_digits() -> None:
    # 1.234567 49999... : rounding to 28 digits first would make it ...5 and
    # then round up; rounded once it stays 1.234567.
    cost = Decimal("1.2345674999999999999999999999999999")
    steps = pricing_rules.priced(cost, rate=Decimal(1), markup_percent=Decimal(0))
    assert steps.micros == 1_234_567
    assert round_to_micros(cost) == 1_234_567


@pytest.mark.parametrize(
    ("exact", "expected"),
    [("0.0000005", 0), ("0.0000015", 2), ("0.0000025", 2), ("2.5000005", 2_500_000)],
)
def test_ties_round_to_even(exact: str, expected: int) -> None:
    assert round_to_micros(Decimal(exact)) == expected
    assert expected == int((Decimal(exact) * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))


def test_the_default_markup_example() -> None:
    # 0.002 USD at 0.9 CHF/USD, plus 50 %: 0.0027 CHF.
    steps = pricing_rules.priced(Decimal("0.002"), rate=Decimal("0.9"), markup_percent=Decimal(50))
    assert (steps.converted, steps.exact, steps.micros) == (
        Decimal("0.0018"),
        Decimal("0.0027"),
        2_700,
    )


# -------------------------------------------------------- what an estimate prices


@given(
    input_tokens=st.integers(0, 10**9),
    max_output_tokens=st.integers(0, 10**9),
    output_limit=st.none() | st.integers(0, 10**9),
)
def test_an_estimate_prices_the_output_asked_capped_at_the_models_limit(
    input_tokens: int, max_output_tokens: int, output_limit: int | None
) -> None:
    usage = pricing_rules.estimate_usage(input_tokens, max_output_tokens, output_limit)
    assert usage.input_tokens == input_tokens  # no cache discount assumed
    assert usage.cache_read_tokens == 0
    assert usage.output_tokens <= max_output_tokens
    if output_limit is None:
        assert usage.output_tokens == max_output_tokens
    else:
        assert usage.output_tokens == min(max_output_tokens, output_limit)


def test_an_estimate_within_the_limit_is_not_cut() -> None:
    assert pricing_rules.estimate_usage(10, 500, 4096).output_tokens == 500
    assert pricing_rules.estimate_usage(10, 8000, 4096).output_tokens == 4096
