"""Pricing told as an accountant's story: what a call costs at the provider,
converted at the rate in force, marked up, rounded once; on SQLite and PostgreSQL.

Every figure below is computed by hand from the catalog's unit prices
(gpt-4o: 2.50 USD per million input tokens, 1.25 cached, 10 output;
claude-sonnet-4-5: 3 / 15 up to 200,000 input tokens, 6 / 22.50 above).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

import aibill
from aibill import AlreadyExists, Billing, InvalidAmount, InvalidRequest, ManualClock
from aibill.catalog import Usage
from aibill.domain.errors import MissingExchangeRate, UnknownMandate, UnknownModel
from aibill.service.pricing import (
    DEFAULT_MARKUP_PERCENT,
    Charge,
    Pricing,
    calculate_price_with_markup,
)
from aibill.store import tx

NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock fixture's time
GPT_4O_CALL = Usage(input_tokens=1_200, output_tokens=512)


@pytest.fixture
def pricing(billing: Billing, clock: ManualClock) -> Iterator[Pricing]:
    """acme bills in CHF, globex too, initech in USD; USD->CHF is 0.80 since New Year."""
    billing.create_mandate("acme", billing_model="prepay_mandate", currency="CHF")
    billing.create_mandate("globex", billing_model="unlimited", currency="CHF")
    billing.create_mandate("initech", billing_model="unlimited", currency="USD")
    p = Pricing(billing.engine, clock=clock)
    p.set_exchange_rate("USD", "CHF", D("0.80"), valid_from=NEW_YEAR, source="admin")
    yield p


def acme(pricing: Pricing, model: str = "gpt-4o", usage: Usage = GPT_4O_CALL, **kw: Any) -> Charge:
    provider = kw.pop("provider", "anthropic" if model.startswith("claude") else "openai")
    return pricing.price(
        kw.pop("mandate", "acme"), kw.pop("currency", "CHF"), provider, model, usage, **kw
    )


# ------------------------------------------------------------ worked examples


def test_gpt_4o_call_in_chf_with_default_markup(pricing: Pricing) -> None:
    """1,200 input + 512 output tokens of gpt-4o: 0.003 + 0.00512 = 0.00812 USD;
    at 0.80 that is 0.006496 CHF; plus 50 % = exactly 0.009744 CHF."""
    charge = acme(pricing)
    assert charge.provider_cost == D("0.00812")
    assert charge.provider_currency == "USD"
    assert charge.provider_cost_pico == 8_120_000_000
    assert charge.fx_rate == D("0.80")
    assert charge.markup_percent == DEFAULT_MARKUP_PERCENT == D("50")
    assert charge.amount == D("0.009744")
    assert str(charge.amount) == "0.009744"
    assert charge.amount_micros == 9_744
    assert charge.currency == "CHF"
    assert charge.at == NOW
    assert (charge.provider, charge.model, charge.model_matched) == ("openai", "gpt-4o", "gpt-4o")
    assert charge.price_source == "genai-prices 0.2.3"
    assert charge.usage == GPT_4O_CALL

    b = charge.breakdown
    assert b["unit_prices"] == {"input_mtok": "2.5", "output_mtok": "10"}
    assert [(c["usage_key"], c["quantity"], c["cost"]) for c in b["components"]] == [
        ("input_tokens", 1_200, "0.003"),
        ("output_tokens", 512, "0.00512"),
    ]
    assert b["provider_cost"] == "0.00812"
    assert b["fx"] == {
        "rate": "0.80",
        "from": "USD",
        "to": "CHF",
        "valid_from": NEW_YEAR.isoformat(),
        "source": "admin",
    }
    assert D(b["converted_cost"]) == D("0.006496")
    assert b["markup"] == {"percent": "50", "scope": "default"}
    assert b["amount"] == "0.009744"
    assert b["price"]["scope"] == "catalog"


def test_cached_tokens_are_cheaper(pricing: Pricing) -> None:
    """1,200 input tokens, 1,000 of them read from the cache, 512 output:
    200 * 2.5 + 1,000 * 1.25 + 512 * 10 per million = 0.0005 + 0.00125 + 0.00512
    = 0.00687 USD -> 0.005496 CHF -> 0.008244 CHF with 50 %."""
    charge = acme(
        pricing, usage=Usage(input_tokens=1_200, output_tokens=512, cache_read_tokens=1_000)
    )
    assert charge.provider_cost == D("0.00687")
    assert charge.amount == D("0.008244")
    parts = {
        c["usage_key"]: (c["quantity"], c["unit_price"], c["cost"])
        for c in charge.breakdown["components"]
    }
    assert parts == {
        "input_tokens": (200, "2.5", "0.0005"),
        "cache_read_tokens": (1_000, "1.25", "0.00125"),
        "output_tokens": (512, "10", "0.00512"),
    }


def test_long_context_call_crosses_the_tier(pricing: Pricing) -> None:
    """claude-sonnet-4-5 with 200,000 input tokens is still at 3 / 15 per million:
    0.6 + 0.015 = 0.615 USD -> 0.492 CHF -> 0.738 CHF. One token more and every
    token costs 6 / 22.50: 250,000 input + 1,000 output = 1.5 + 0.0225 = 1.5225 USD
    -> 1.218 CHF -> 1.827 CHF."""
    at_limit = acme(pricing, "claude-sonnet-4-5", Usage(input_tokens=200_000, output_tokens=1_000))
    assert at_limit.provider_cost == D("0.615")
    assert at_limit.amount == D("0.738")
    assert {c["tier"] for c in at_limit.breakdown["components"]} == {"base"}

    above = acme(pricing, "claude-sonnet-4-5", Usage(input_tokens=250_000, output_tokens=1_000))
    assert above.provider_cost == D("1.5225")
    assert above.amount == D("1.827")
    assert above.breakdown["unit_prices"] == {"input_mtok": "6", "output_mtok": "22.5"}
    assert {c["tier"] for c in above.breakdown["components"]} == {"above 200000"}


def test_same_currency_needs_no_rate(pricing: Pricing) -> None:
    """initech bills in USD: 0.00812 USD plus 50 % = 0.01218 USD, no rate looked up
    (there is no USD->USD rate, and none is needed)."""
    charge = acme(pricing, mandate="initech", currency="USD")
    assert charge.fx_rate == D(1)
    assert charge.amount == D("0.01218")
    assert charge.breakdown["fx"]["source"] == "same currency"
    assert pricing.exchange_rate("USD", "USD", NOW) == D(1)


def test_quote_runs_inside_the_callers_transaction(pricing: Pricing, billing: Billing) -> None:
    """The billing service prices a call inside its own unit of work."""

    def work(conn: Any) -> Charge:
        return pricing.quote(
            conn,
            mandate="acme",
            currency="CHF",
            provider="openai",
            model="gpt-4o",
            usage=GPT_4O_CALL,
            at=NOW,
        )

    assert tx.run(billing.engine, work).amount == D("0.009744")


def test_price_defaults_to_the_clock(pricing: Pricing, clock: ManualClock) -> None:
    clock.advance(hours=1)
    assert acme(pricing).at == NOW + timedelta(hours=1)


def test_unknown_model_is_an_error_never_free(pricing: Pricing) -> None:
    with pytest.raises(UnknownModel) as err:
        acme(pricing, "gpt-9-ultra")
    assert err.value.code == "unknown_model"
    with pytest.raises(UnknownModel):
        acme(pricing, "gpt-4o", provider="no-such-provider")


def test_a_catalog_price_finer_than_pico_units_is_refused(pricing: Pricing) -> None:
    """The catalog lists Qwen3-VL-8B at 0.18000000000000002 USD per million input
    tokens (a float artefact): 1,000 tokens cost a fraction of a pico-unit, which
    the ledger cannot keep exactly. Refused; a custom price makes it billable."""
    qwen = ("huggingface_together", "Qwen/Qwen3-VL-8B-Instruct")
    usage = Usage(input_tokens=1_000, output_tokens=10)
    with pytest.raises(UnknownModel, match="finer than 10\\^-12"):
        acme(pricing, qwen[1], usage, provider=qwen[0])
    pricing.set_custom_price(*qwen, input_mtok="0.18", output_mtok="0.68", valid_from=NEW_YEAR)
    # 1,000 * 0.18 + 10 * 0.68 per million = 0.0001868 USD -> 0.00014944 CHF -> 0.00022416
    charge = acme(pricing, qwen[1], usage, provider=qwen[0])
    assert charge.provider_cost == D("0.0001868")
    assert charge.amount == D("0.000224")


# ---------------------------------------------------------------- custom prices


def test_custom_prices_override_the_catalog_by_scope_and_time(
    pricing: Pricing, clock: ManualClock
) -> None:
    """The platform negotiated gpt-4o at 2 / 8 USD from 1 February; acme has its
    own deal at 1 / 4 from 15 February, and a cheaper one (0.5 / 2) from 1 April.

    At 2 / 8: 1,200 * 2 + 512 * 8 per million = 0.006496 USD -> 0.0051968 CHF ->
    0.0077952 CHF, rounded half-even once: 0.007795.
    At 1 / 4: 0.003248 USD -> 0.0025984 -> 0.0038976 -> 0.003898 CHF.
    At 0.5 / 2: 0.001624 USD -> 0.0012992 -> 0.0019488 -> 0.001949 CHF.
    """
    platform = pricing.set_custom_price(
        "openai",
        "gpt-4o",
        input_mtok=D("2"),
        output_mtok=D("8"),
        valid_from=datetime(2026, 2, 1, tzinfo=UTC),
    )
    deal = pricing.set_custom_price(
        "openai",
        "gpt-4o",
        input_mtok="1",
        output_mtok="4",
        valid_from=datetime(2026, 2, 15, tzinfo=UTC),
        mandate="acme",
    )
    future = pricing.set_custom_price(
        "openai",
        "gpt-4o",
        input_mtok="0.5",
        output_mtok="2",
        valid_from=datetime(2026, 4, 1, tzinfo=UTC),
        mandate="acme",
    )
    assert platform.price_id.startswith("cp_") and platform.mandate is None
    assert len({platform.price_id, deal.price_id, future.price_id}) == 3

    # January: no custom price yet, the catalog applies.
    assert acme(pricing, at=datetime(2026, 1, 20, tzinfo=UTC)).amount == D("0.009744")
    # Early February: the platform's price.
    early = acme(pricing, at=datetime(2026, 2, 10, tzinfo=UTC))
    assert early.price_source == f"custom:{platform.price_id}"
    assert early.provider_cost == D("0.006496")
    assert early.amount == D("0.007795")
    assert early.breakdown["price"]["scope"] == "platform"
    assert early.breakdown["unit_prices"] == {"input_mtok": "2", "output_mtok": "8"}
    # Now: acme's own deal wins over the platform's; globex still gets the platform's.
    now = acme(pricing)
    assert now.price_source == f"custom:{deal.price_id}"
    assert now.amount == D("0.003898")
    assert now.breakdown["price"]["scope"] == "mandate"
    assert acme(pricing, mandate="globex").amount == D("0.007795")
    # The April deal is not in force yet ...
    assert acme(pricing, at=datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)).amount == D("0.003898")
    # ... and from its first instant on it is.
    clock.set(datetime(2026, 4, 1, tzinfo=UTC))
    assert acme(pricing).amount == D("0.001949")
    assert acme(pricing).price_source == f"custom:{future.price_id}"

    assert [p.price_id for p in pricing.custom_prices()] == [platform.price_id]
    assert [p.price_id for p in pricing.custom_prices("acme")] == [deal.price_id, future.price_id]
    assert pricing.custom_prices("globex") == []


def test_custom_price_for_a_model_the_catalog_lacks(pricing: Pricing, billing: Billing) -> None:
    """acme's fine-tuned model costs 3 CHF per million input, 6 per million
    output, 0.30 per million cached, and 0.001 CHF per request, billed in CHF:
    uncached 200 * 3 + cached 1,000 * 0.30 + 512 * 6 per million + 0.001
    = 0.0006 + 0.0003 + 0.003072 + 0.001 = 0.004972 CHF (no rate needed),
    plus 50 % = 0.007458 CHF."""
    price = pricing.set_custom_price(
        "acme-ai",
        "acme-ft-1",
        input_mtok="3",
        output_mtok="6",
        cache_read_mtok="0.30",
        per_request="0.001",
        currency="CHF",
        valid_from=NEW_YEAR,
        mandate="acme",
        output_limit=4_096,
    )
    usage = Usage(input_tokens=1_200, output_tokens=512, cache_read_tokens=1_000)
    charge = acme(pricing, "acme-ft-1", usage, provider="acme-ai")
    assert charge.provider_cost == D("0.004972")
    assert charge.provider_currency == "CHF"
    assert charge.fx_rate == D(1)
    assert charge.amount == D("0.007458")
    assert charge.model_matched == "acme-ft-1"
    costs = {c["usage_key"]: c["cost"] for c in charge.breakdown["components"]}
    assert costs == {
        "input_tokens": "0.0006",
        "cache_read_tokens": "0.0003",
        "output_tokens": "0.003072",
        "requests": "0.001",
    }
    assert charge.breakdown["price"]["price_id"] == price.price_id

    # Cache writes without a price of their own are charged as plain input.
    writes = acme(
        pricing,
        "acme-ft-1",
        Usage(input_tokens=1_200, output_tokens=0, cache_write_tokens=1_000),
        provider="acme-ai",
    )
    assert writes.provider_cost == D("0.0046")  # 1,200 * 3 per million + 0.001

    # Another mandate does not see acme's model.
    with pytest.raises(UnknownModel):
        acme(pricing, "acme-ft-1", usage, provider="acme-ai", mandate="globex")

    def limits(conn: Any) -> tuple[int | None, int | None]:
        return (
            pricing.output_limit(conn, "acme", "acme-ai", "acme-ft-1"),
            pricing.output_limit(conn, "acme", "openai", "gpt-4o"),
        )

    assert tx.run(billing.engine, limits, read_only=True) == (4_096, None)


def test_custom_price_in_another_currency_is_converted(pricing: Pricing) -> None:
    """A model priced in EUR, billed to acme in CHF at 0.95: 1,000,000 output
    tokens at 1.10 EUR = 1.10 EUR -> 1.045 CHF -> 1.5675 CHF."""
    pricing.set_exchange_rate("EUR", "CHF", "0.95", valid_from=NEW_YEAR)
    pricing.set_custom_price(
        "mistral",
        "eu-model",
        input_mtok="0",
        output_mtok="1.10",
        currency="EUR",
        valid_from=NEW_YEAR,
    )
    charge = acme(pricing, "eu-model", Usage(output_tokens=1_000_000), provider="mistral")
    assert (charge.provider_cost, charge.fx_rate, charge.amount) == (
        D("1.10"),
        D("0.95"),
        D("1.5675"),
    )


def test_setting_a_custom_price_again(pricing: Pricing) -> None:
    first = pricing.set_custom_price("x", "m", input_mtok="1", output_mtok="2", valid_from=NEW_YEAR)
    again = pricing.set_custom_price(
        "x", "m", input_mtok="1.00", output_mtok="2", valid_from=NEW_YEAR
    )
    assert again.price_id == first.price_id
    with pytest.raises(AlreadyExists) as err:
        pricing.set_custom_price("x", "m", input_mtok="1", output_mtok="3", valid_from=NEW_YEAR)
    assert err.value.details["field"] == "output_mtok"
    with pytest.raises(UnknownMandate):
        pricing.set_custom_price("x", "m", input_mtok="1", output_mtok="2", mandate="nobody")
    with pytest.raises(InvalidAmount, match="decimal places"):
        pricing.set_custom_price("x", "m", input_mtok="0.0000001", output_mtok="2")
    with pytest.raises(InvalidAmount, match="negative"):
        pricing.set_custom_price("x", "m", input_mtok="-1", output_mtok="2")
    with pytest.raises(InvalidRequest):
        pricing.set_custom_price("x", "m", input_mtok="1", output_mtok="2", output_limit=0)
    assert len(pricing.custom_prices()) == 1


# ---------------------------------------------------------------- exchange rates


def test_rate_change_applies_from_its_valid_from(pricing: Pricing) -> None:
    """From noon on 1 March a dollar is worth 0.90 CHF. A call a second before
    noon is still converted at 0.80 (0.009744 CHF); at noon, at 0.90:
    0.00812 * 0.90 = 0.007308 -> 0.010962 CHF."""
    pricing.set_exchange_rate("USD", "CHF", D("0.90"), valid_from=NOW)
    before = acme(pricing, at=NOW - timedelta(seconds=1))
    assert (before.fx_rate, before.amount) == (D("0.80"), D("0.009744"))
    at_noon = acme(pricing, at=NOW)
    assert (at_noon.fx_rate, at_noon.amount) == (D("0.90"), D("0.010962"))
    assert at_noon.breakdown["fx"]["valid_from"] == NOW.isoformat()
    assert pricing.exchange_rate("USD", "CHF", NOW - timedelta(days=30)) == D("0.80")
    assert [r.rate for r in pricing.exchange_rates("USD", "CHF")] == [D("0.80"), D("0.90")]


def test_missing_rate_is_an_error_never_one_to_one(pricing: Pricing) -> None:
    """acme bills in CHF; a EUR-priced model with no EUR->CHF rate cannot be billed.
    The CHF->EUR rate is not inverted, and a rate that starts tomorrow is not in force."""
    pricing.set_custom_price(
        "mistral", "eu-model", input_mtok="1", output_mtok="1", currency="EUR", valid_from=NEW_YEAR
    )
    pricing.set_exchange_rate("CHF", "EUR", "1.05", valid_from=NEW_YEAR)
    pricing.set_exchange_rate("EUR", "CHF", "0.95", valid_from=NOW + timedelta(days=1))
    with pytest.raises(MissingExchangeRate) as err:
        acme(pricing, "eu-model", provider="mistral")
    assert err.value.code == "missing_exchange_rate"
    assert err.value.details["base"] == "EUR" and err.value.details["quote"] == "CHF"
    with pytest.raises(MissingExchangeRate):
        pricing.exchange_rate("EUR", "CHF", NOW)
    with pytest.raises(MissingExchangeRate):
        acme(pricing, at=datetime(2025, 12, 31, 23, 59, tzinfo=UTC))  # before USD->CHF existed
    assert acme(pricing, "eu-model", provider="mistral", at=NOW + timedelta(days=1)).fx_rate == D(
        "0.95"
    )


def test_setting_a_rate_again(pricing: Pricing) -> None:
    again = pricing.set_exchange_rate("USD", "CHF", "0.8", valid_from=NEW_YEAR)
    assert again.rate == D("0.80") and again.source == "admin"
    with pytest.raises(AlreadyExists) as err:
        pricing.set_exchange_rate("USD", "CHF", "0.81", valid_from=NEW_YEAR)
    assert err.value.details["field"] == "rate"
    assert err.value.code == "already_exists"
    fresh = pricing.set_exchange_rate("GBP", "CHF", "1.12")
    assert fresh.valid_from == NOW
    assert len(pricing.exchange_rates()) == 2


@pytest.mark.parametrize(
    ("base", "quote", "rate", "problem"),
    [
        ("USD", "USD", "1", "two different currencies"),
        ("usd", "CHF", "1", "base must be an ISO 4217"),
        ("USD", "CHF", "0", "positive"),
        ("USD", "CHF", "-0.8", "negative"),
        ("USD", "CHF", "0.1234567890123", "12 decimal places"),
        ("USD", "CHF", "1234567.123456", "12 significant digits"),
        ("USD", "CHF", "NaN", "finite"),
        ("USD", "CHF", "eight", "not a decimal number"),
    ],
)
def test_bad_rates_are_refused(
    pricing: Pricing, base: str, quote: str, rate: str, problem: str
) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        pricing.set_exchange_rate(base, quote, rate)


def test_rate_needs_a_timezone(pricing: Pricing) -> None:
    with pytest.raises(InvalidRequest, match="timezone-aware"):
        pricing.set_exchange_rate("EUR", "CHF", "0.95", valid_from=datetime(2026, 1, 1))  # noqa: DTZ001


GOOD_CSV = """\
base,quote,rate,valid_from
EUR,CHF,0.95,2026-01-01

EUR,CHF,0.94,2026-02-01T00:00:00Z
GBP,CHF,1.12,2026-02-01T01:00:00+01:00
USD,CHF,0.80,2026-01-01T00:00:00+00:00
"""


def test_csv_import(pricing: Pricing) -> None:
    """A date alone means midnight UTC; offsets are converted to UTC; a rate already
    stored with the same value (USD->CHF 0.80) is not new; importing again adds nothing."""
    assert pricing.import_exchange_rates(io.StringIO(GOOD_CSV)) == 3
    eur = pricing.exchange_rates("EUR")
    assert [(r.rate, r.valid_from) for r in eur] == [
        (D("0.95"), NEW_YEAR),
        (D("0.94"), datetime(2026, 2, 1, tzinfo=UTC)),
    ]
    assert pricing.exchange_rates("GBP")[0].valid_from == datetime(2026, 2, 1, tzinfo=UTC)
    assert pricing.import_exchange_rates(GOOD_CSV.splitlines()) == 0
    assert pricing.exchange_rate("EUR", "CHF", NOW) == D("0.94")


def test_csv_import_with_source_column(pricing: Pricing) -> None:
    text = "base,quote,rate,valid_from,source\nEUR,CHF,0.95,2026-01-01,ECB\n"
    assert pricing.import_exchange_rates(io.StringIO(text)) == 1
    assert pricing.exchange_rates("EUR")[0].source == "ECB"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\nGBP,CHF,1.1.2,2026-01-01\n",
            "Line 3: rate",
        ),
        (
            "base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\nGBP,CHF,1.12,2026-01-01T00:00\n",
            "Line 3: valid_from .* no timezone",
        ),
        (
            "base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\nGBP,CHF,1.12\n",
            "Line 3: expected 4 fields",
        ),
        (
            "base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\nGBP,GBP,1,2026-01-01\n",
            "Line 3: .*two different",
        ),
        (
            "base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\nEUR,CHF,0.96,2026-01-01\n",
            "Line 3: .*on line 2",
        ),
        (
            "base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\nEUR,CHF,-1,2026-01-01\n",
            "Line 3: rate must not be negative",
        ),
        (
            "base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\nEUR,CHF,0.9,yesterday\n",
            "Line 3: valid_from 'yesterday'",
        ),
        ("currency,rate\nEUR,0.95\n", "Line 1: the header"),
        ("", "empty"),
    ],
)
def test_csv_bad_line_writes_nothing(pricing: Pricing, text: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem) as err:
        pricing.import_exchange_rates(io.StringIO(text))
    assert err.value.code == "invalid_request"
    assert [r.base for r in pricing.exchange_rates()] == ["USD"]


def test_csv_conflict_with_a_stored_rate_writes_nothing(pricing: Pricing) -> None:
    text = "base,quote,rate,valid_from\nEUR,CHF,0.95,2026-01-01\nUSD,CHF,0.81,2026-01-01\n"
    with pytest.raises(AlreadyExists, match="Line 3") as err:
        pricing.import_exchange_rates(io.StringIO(text))
    assert err.value.details["line"] == 3
    assert [r.base for r in pricing.exchange_rates()] == ["USD"]


# ---------------------------------------------------------------------- floats


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.set_exchange_rate("EUR", "CHF", 0.95),
        lambda p: p.set_markup(50.0),
        lambda p: p.set_custom_price("x", "m", input_mtok=2.5, output_mtok="10"),
        lambda p: p.set_custom_price(
            "x", "m", input_mtok="2.5", output_mtok="10", per_request=0.01
        ),
        lambda p: calculate_price_with_markup(0.1),  # type: ignore[arg-type]
        lambda p: calculate_price_with_markup(D("0.1"), 50.0),  # type: ignore[arg-type]
    ],
    ids=["rate", "markup", "custom-price", "per-request", "base-price", "percent"],
)
def test_a_float_anywhere_is_refused(pricing: Pricing, call: Any) -> None:
    with pytest.raises(InvalidAmount, match="float"):
        call(pricing)
    assert len(pricing.exchange_rates()) == 1
    assert pricing.markups() == [] and pricing.custom_prices() == []


# --------------------------------------------------------------------- markups

# Every level set, most specific first; each row clears the levels above it and
# expects the next to win for acme's gpt-4o call.
LEVELS: list[tuple[dict[str, str], str]] = [
    ({"mandate": "acme", "provider": "openai", "model": "gpt-4o"}, "10"),
    ({"mandate": "acme", "provider": "openai"}, "20"),
    ({"mandate": "acme"}, "30"),
    ({"provider": "openai", "model": "gpt-4o"}, "40"),
    ({"provider": "openai"}, "60"),
    ({}, "70"),
]


@pytest.mark.parametrize("winner", range(len(LEVELS) + 1))
def test_most_specific_markup_wins(pricing: Pricing, winner: int) -> None:
    for scope, percent in LEVELS:
        pricing.set_markup(D(percent), **scope)
    for scope, _ in LEVELS[:winner]:
        assert pricing.clear_markup(**scope)
    expected = D(LEVELS[winner][1]) if winner < len(LEVELS) else DEFAULT_MARKUP_PERCENT
    assert pricing.markup_for("acme", "openai", "gpt-4o") == expected
    charge = acme(pricing)
    assert charge.markup_percent == expected
    # 0.006496 CHF converted, times (1 + markup / 100), rounded once.
    assert charge.amount == (D("0.006496") * (1 + expected / 100)).quantize(D("0.000001"))


def test_markups_apply_to_their_scope_only(pricing: Pricing) -> None:
    for scope, percent in LEVELS:
        pricing.set_markup(percent, **scope)
    table = [
        (("acme", "openai", "gpt-4o"), "10"),
        (("acme", "openai", "gpt-4o-mini"), "20"),
        (("acme", "anthropic", "claude-sonnet-4-5"), "30"),
        (("globex", "openai", "gpt-4o"), "40"),
        (("globex", "openai", "gpt-4o-mini"), "60"),
        (("globex", "anthropic", "claude-sonnet-4-5"), "70"),
        ((None, "openai", "gpt-4o"), "40"),
    ]
    for (mandate, provider, model), percent in table:
        assert pricing.markup_for(mandate, provider, model) == D(percent), (
            mandate,
            provider,
            model,
        )
    charge = acme(pricing, "claude-sonnet-4-5", mandate="globex")
    assert charge.breakdown["markup"] == {
        "percent": "70",
        "scope": "platform",
        "mandate": None,
        "provider": None,
        "model": None,
    }
    acme_markups = pricing.markups("acme")
    assert [(m.provider, m.model, m.percent) for m in acme_markups] == [
        (None, None, D("30")),
        ("openai", None, D("20")),
        ("openai", "gpt-4o", D("10")),
    ]
    assert len(pricing.markups()) == 3


def test_setting_a_markup_again_replaces_it(pricing: Pricing) -> None:
    pricing.set_markup("25", mandate="acme")
    pricing.set_markup("35", mandate="acme")
    assert pricing.markup_for("acme", "openai", "gpt-4o") == D("35")
    assert [m.percent for m in pricing.markups("acme")] == [D("35")]
    assert not pricing.clear_markup(mandate="globex")


def test_zero_markup_bills_the_converted_cost(pricing: Pricing) -> None:
    pricing.set_markup("0", mandate="acme")
    assert acme(pricing).amount == D("0.006496")


@pytest.mark.parametrize(
    ("kwargs", "error", "problem"),
    [
        ({"percent": "1000.01"}, InvalidAmount, "from 0 to 1000"),
        ({"percent": "-1"}, InvalidAmount, "negative"),
        ({"percent": "10", "model": "gpt-4o"}, InvalidRequest, "name its provider"),
        ({"percent": "10", "mandate": "nobody"}, UnknownMandate, "nobody"),
    ],
)
def test_bad_markups_are_refused(
    pricing: Pricing, kwargs: dict[str, Any], error: type[Exception], problem: str
) -> None:
    scope = dict(kwargs)
    percent = scope.pop("percent")
    with pytest.raises(error, match=problem):
        pricing.set_markup(percent, **scope)


def test_markup_bounds_are_inclusive(pricing: Pricing) -> None:
    assert pricing.set_markup("1000", provider="openai").percent == D("1000")
    assert pricing.set_markup("0", provider="anthropic").percent == D("0")


# ------------------------------------------------------ the seed's markup rule


@pytest.mark.parametrize(
    ("base", "percent", "expected"),
    [
        (D("0"), D("50"), D("0")),  # nothing to bill
        (D("-1.50"), D("50"), D("0")),  # non-positive in, 0 out
        (D("0.00812"), D("50"), D("0.01218")),
        (D("1"), D("0"), D("1")),
        (D("0.000001"), D("50"), D("0.000002")),  # 1.5 micro-units -> 2 (even)
        (D("0.000003"), D("50"), D("0.000004")),  # 4.5 micro-units -> 4 (even)
        (D("0.000005"), D("50"), D("0.000008")),  # 7.5 micro-units -> 8 (even)
        (D("0.0000025"), D("0"), D("0.000002")),  # 2.5 -> 2
        (D("0.0000035"), D("0"), D("0.000004")),  # 3.5 -> 4
        (D("0.00000251"), D("0"), D("0.000003")),  # above the half: up
        ("10", "1000", D("110")),
        (7, 50, D("10.5")),
    ],
)
def test_calculate_price_with_markup(base: Any, percent: Any, expected: D) -> None:
    result = calculate_price_with_markup(base, percent)
    assert result == expected
    assert result.as_tuple().exponent == -6  # always six decimals


def test_calculate_price_with_markup_defaults_to_fifty_percent() -> None:
    assert calculate_price_with_markup(D("2")) == D("3")
    with pytest.raises(InvalidAmount):
        calculate_price_with_markup(D("1"), D("1001"))
    with pytest.raises(InvalidAmount):
        calculate_price_with_markup("Infinity")


# ----------------------------------------------------------- a second process


def test_settings_are_seen_by_another_process(db_url: str, clock: ManualClock) -> None:
    """Two services on one database (two engines): no cache hides a new rate."""
    with aibill.connect(db_url, clock=clock) as one, aibill.connect(db_url, clock=clock) as two:
        one.create_mandate("acme", billing_model="unlimited", currency="CHF")
        a, b = Pricing(one.engine, clock=clock), Pricing(two.engine, clock=clock)
        a.set_exchange_rate("USD", "CHF", "0.80", valid_from=NEW_YEAR)
        assert acme(b).amount == D("0.009744")
        a.set_exchange_rate("USD", "CHF", "0.90", valid_from=NOW)
        a.set_markup("0", mandate="acme")
        assert acme(b).amount == D("0.007308")
