"""The price catalog: exact worked examples, agreement with genai-prices, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices.data import providers as bundled_providers

from aibill.catalog import MAX_COUNT, Catalog, ProviderCost, Usage
from aibill.domain.errors import InvalidRequest, UnknownModel

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog()


def genai_usage(usage: Usage) -> genai_prices.Usage:
    return genai_prices.Usage(**{name: getattr(usage, name) for name in COUNT_FIELDS})


def assert_consistent(cost: ProviderCost) -> None:
    """Totals are exact Decimals and the components add up to them."""
    assert type(cost.total) is Decimal
    assert type(cost.input_cost) is Decimal
    assert type(cost.output_cost) is Decimal
    assert all(type(c.cost) is Decimal for c in cost.components)
    assert sum((c.cost for c in cost.components), Decimal(0)) == cost.total
    assert cost.currency == "USD"


# -- worked examples: figures computed by hand from the catalog's unit prices ----


def test_gpt_4o_plain_call(catalog: Catalog) -> None:
    # gpt-4o: 2.5 USD per million input tokens, 10 per million output tokens.
    cost = catalog.price("openai", "gpt-4o", Usage(input_tokens=1_200, output_tokens=512), AT)
    # 1,200 * 2.5 / 1e6 = 0.003; 512 * 10 / 1e6 = 0.00512
    assert cost.total == Decimal("0.00812")
    assert cost.input_cost == Decimal("0.003")
    assert cost.output_cost == Decimal("0.00512")
    assert cost.unit_prices == {"input_mtok": "2.5", "output_mtok": "10"}
    assert (cost.provider, cost.provider_id, cost.model, cost.model_id) == (
        "openai",
        "openai",
        "gpt-4o",
        "gpt-4o",
    )
    assert cost.source == "genai-prices 0.2.3"
    assert cost.at == AT
    assert_consistent(cost)


def test_gpt_4o_cached_input(catalog: Catalog) -> None:
    # 10,000 input tokens of which 8,000 were read from the cache (1.25 per million).
    usage = Usage(input_tokens=10_000, output_tokens=300, cache_read_tokens=8_000)
    cost = catalog.price("openai", "gpt-4o", usage, AT)
    # uncached 2,000 * 2.5 = 0.005; cached 8,000 * 1.25 = 0.01; output 300 * 10 = 0.003
    assert cost.cost_of("input_tokens") == Decimal("0.005")
    assert cost.cache_read_cost == Decimal("0.01")
    assert cost.cost_of("output_tokens") == Decimal("0.003")
    assert cost.total == Decimal("0.018")
    assert cost.input_cost == Decimal("0.015")
    quantities = {c.usage_key: c.quantity for c in cost.components}
    assert quantities == {"input_tokens": 2_000, "cache_read_tokens": 8_000, "output_tokens": 300}
    assert cost.unit_prices["cache_read_mtok"] == "1.25"
    assert_consistent(cost)


def test_anthropic_cache_writes(catalog: Catalog) -> None:
    # Claude Haiku 3.5: input 0.8, output 4, cache read 0.08, cache write 1 per million.
    usage = Usage(
        input_tokens=5_000, output_tokens=700, cache_read_tokens=1_000, cache_write_tokens=2_000
    )
    cost = catalog.price("anthropic", "claude-3-5-haiku-latest", usage, AT)
    # uncached 2,000 * 0.8 = 0.0016; read 1,000 * 0.08 = 0.00008;
    # write 2,000 * 1 = 0.002; output 700 * 4 = 0.0028
    assert cost.cost_of("input_tokens") == Decimal("0.0016")
    assert cost.cache_read_cost == Decimal("0.00008")
    assert cost.cache_write_cost == Decimal("0.002")
    assert cost.cost_of("output_tokens") == Decimal("0.0028")
    assert cost.total == Decimal("0.00648")
    assert cost.model_name == "Claude Haiku 3.5"
    assert_consistent(cost)


def test_anthropic_tiered_cache_writes(catalog: Catalog) -> None:
    # Claude Sonnet 4.5 doubles its input-side prices above 200,000 input tokens:
    # input 3 -> 6, cache write 3.75 -> 7.5, cache read 0.3 -> 0.6, output 15 -> 22.5.
    below = Usage(
        input_tokens=200_000,
        output_tokens=1_000,
        cache_read_tokens=50_000,
        cache_write_tokens=100_000,
    )
    cost = catalog.price("anthropic", "claude-sonnet-4-5", below, AT)
    # 50,000 * 3 = 0.15; 50,000 * 0.3 = 0.015; 100,000 * 3.75 = 0.375; 1,000 * 15 = 0.015
    assert cost.total == Decimal("0.555")
    assert all(c.tier_start is None for c in cost.components)

    above = Usage(
        input_tokens=200_001,
        output_tokens=1_000,
        cache_read_tokens=50_000,
        cache_write_tokens=100_000,
    )
    cost = catalog.price("anthropic", "claude-sonnet-4-5", above, AT)
    # 50,001 * 6 = 0.300006; 50,000 * 0.6 = 0.03; 100,000 * 7.5 = 0.75; 1,000 * 22.5 = 0.0225
    assert cost.total == Decimal("1.102506")
    assert cost.cache_write_cost == Decimal("0.75")
    assert {c.tier_start for c in cost.components} == {200_000}
    assert cost.unit_prices == {
        "input_mtok": "6",
        "cache_write_mtok": "7.5",
        "cache_read_mtok": "0.6",
        "output_mtok": "22.5",
    }
    assert cost.to_dict()["components"][0]["tier"] == "above 200000"
    assert_consistent(cost)


def test_long_context_tier_threshold(catalog: Catalog) -> None:
    # Gemini 2.5 Pro: input 1.25 / output 10 per million up to 200,000 input tokens;
    # above that every token costs 2.5 / 15.
    at_threshold = catalog.price(
        "google", "gemini-2.5-pro", Usage(input_tokens=200_000, output_tokens=1_000), AT
    )
    # 200,000 * 1.25 = 0.25; 1,000 * 10 = 0.01
    assert at_threshold.total == Decimal("0.26")
    assert at_threshold.unit_prices == {"input_mtok": "1.25", "output_mtok": "10"}

    past_threshold = catalog.price(
        "google", "gemini-2.5-pro", Usage(input_tokens=200_001, output_tokens=1_000), AT
    )
    # 200,001 * 2.5 = 0.5000025; 1,000 * 15 = 0.015
    assert past_threshold.total == Decimal("0.5150025")
    assert past_threshold.unit_prices == {"input_mtok": "2.5", "output_mtok": "15"}
    assert all(c.tier_start == 200_000 for c in past_threshold.components)
    assert_consistent(past_threshold)


def test_request_time_selects_price(catalog: Catalog) -> None:
    # o3 went from 10 / 40 to 2 / 8 per million on 2025-06-10 (UTC).
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    before = catalog.price("openai", "o3", usage, datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC))
    after = catalog.price("openai", "o3", usage, datetime(2025, 6, 10, tzinfo=UTC))
    assert before.total == Decimal("0.05")  # 1,000 * 10 + 1,000 * 40
    assert after.total == Decimal("0.01")  # 1,000 * 2 + 1,000 * 8
    # 01:00 in UTC+2 on the 10th is still the 9th in UTC: the old price.
    local = datetime(2025, 6, 10, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert catalog.price("openai", "o3", usage, local).total == Decimal("0.05")
    assert catalog.price("openai", "o3", usage, local).at == local


def test_tiers_that_ended_on_a_date(catalog: Catalog) -> None:
    # Claude Opus 4.6 had a 200,000-token tier until 2026-03-12, a flat price after.
    usage = Usage(input_tokens=300_000, output_tokens=1_000)
    tiered = catalog.price("anthropic", "claude-opus-4-6", usage, datetime(2026, 3, 12, tzinfo=UTC))
    flat = catalog.price("anthropic", "claude-opus-4-6", usage, datetime(2026, 3, 13, tzinfo=UTC))
    assert tiered.total == Decimal("3.0375")  # 300,000 * 10 + 1,000 * 37.5
    assert flat.total == Decimal("1.525")  # 300,000 * 5 + 1,000 * 25


def test_audio_tokens(catalog: Catalog) -> None:
    # gpt-4o-realtime-preview: text in 5, audio in 40, text out 20, audio out 80 per million.
    usage = Usage(
        input_tokens=3_000, output_tokens=2_000, input_audio_tokens=1_000, output_audio_tokens=500
    )
    cost = catalog.price("openai", "gpt-4o-realtime-preview", usage, AT)
    # 2,000 * 5 = 0.01; 1,000 * 40 = 0.04; 1,500 * 20 = 0.03; 500 * 80 = 0.04
    assert cost.cost_of("input_audio_tokens") == Decimal("0.04")
    assert cost.cost_of("output_audio_tokens") == Decimal("0.04")
    assert cost.total == Decimal("0.12")
    assert cost.input_cost == Decimal("0.05")
    assert cost.output_cost == Decimal("0.07")


def test_cached_audio_cannot_be_split(catalog: Catalog) -> None:
    # The model prices cached audio separately; aibill's usage does not say how many
    # cached tokens were audio, and the catalog refuses to guess. So does aibill.
    usage = Usage(input_tokens=3_000, output_tokens=10, cache_read_tokens=500, input_audio_tokens=1)
    with pytest.raises(InvalidRequest, match="cache_audio_read_tokens"):
        catalog.price("openai", "gpt-4o-realtime-preview", usage, AT)
    with pytest.raises(ValueError):
        genai_prices.calc_price(
            genai_usage(usage),
            "gpt-4o-realtime-preview",
            provider_id="openai",
            genai_request_timestamp=AT,
        )


def test_per_request_fee(catalog: Catalog) -> None:
    # Perplexity Sonar: input 1, output 1 per million, 12 per thousand requests.
    cost = catalog.price("perplexity", "sonar", Usage(input_tokens=1_000, output_tokens=500), AT)
    # 0.001 + 0.0005 + 0.012
    assert cost.total == Decimal("0.0135")
    assert cost.requests_cost == Decimal("0.012")
    assert cost.input_cost + cost.output_cost + cost.requests_cost == cost.total
    three = catalog.price(
        "perplexity", "sonar", Usage(input_tokens=1_000, output_tokens=500, requests=3), AT
    )
    assert three.requests_cost == Decimal("0.036")
    none = catalog.price(
        "perplexity", "sonar", Usage(input_tokens=1_000, output_tokens=500, requests=0), AT
    )
    assert none.total == Decimal("0.0015")


def test_zero_usage_costs_zero(catalog: Catalog) -> None:
    cost = catalog.price("openai", "gpt-4o", Usage(), AT)
    assert cost.total == 0
    assert type(cost.total) is Decimal
    assert cost.components == ()


def test_matching_is_case_insensitive_and_follows_aliases(catalog: Catalog) -> None:
    cost = catalog.price("OpenAI", "GPT-4o-2024-08-06", Usage(input_tokens=1_000), AT)
    assert (cost.provider, cost.provider_id) == ("OpenAI", "openai")
    assert (cost.model, cost.model_id) == ("GPT-4o-2024-08-06", "gpt-4o")
    assert cost.total == Decimal("0.0025")


def test_to_dict_is_json_ready(catalog: Catalog) -> None:
    usage = Usage(input_tokens=1_200, output_tokens=512)
    data = catalog.price("openai", "gpt-4o", usage, AT).to_dict()
    assert data["total"] == "0.00812"
    assert data["usage"]["input_tokens"] == 1_200
    assert data["at"] == "2026-01-15T12:00:00+00:00"
    assert all(isinstance(c["cost"], str) for c in data["components"])


# -- agreement with genai-prices, for every model of three providers --------------

AGREEMENT_USAGES = (
    Usage(input_tokens=1_000, output_tokens=500, input_audio_tokens=200, output_audio_tokens=100),
    Usage(
        input_tokens=50_000, output_tokens=2_000, cache_read_tokens=30_000, cache_write_tokens=9_999
    ),
    Usage(
        input_tokens=300_000,
        output_tokens=4_321,
        cache_read_tokens=120_000,
        cache_write_tokens=30_000,
    ),
)
AGREEMENT_TIMES = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC))
AGREEMENT_PROVIDERS = ("openai", "anthropic", "google")
AGREEMENT_MODELS = [
    (p.id, m.id) for p in bundled_providers if p.id in AGREEMENT_PROVIDERS for m in p.models
]


def both_outcomes(catalog: Catalog, provider: str, model: str, usage: Usage, at: datetime) -> str:
    """'' when aibill and genai-prices agree, else a description of the difference."""
    try:
        expected: Any = genai_prices.calc_price(
            genai_usage(usage), model, provider_id=provider, genai_request_timestamp=at
        )
    except LookupError:
        expected = UnknownModel
    except ValueError:
        expected = InvalidRequest
    try:
        got: Any = catalog.price(provider, model, usage, at)
    except (UnknownModel, InvalidRequest) as exc:
        got = type(exc)
    case = f"{provider}/{model} {usage} at {at.date()}"
    if isinstance(expected, type) or isinstance(got, type):
        if expected is got:
            return ""
        return f"{case}: genai-prices {expected!r}, aibill {got!r}"
    if type(got.total) is not Decimal:
        return f"{case}: total is {type(got.total).__name__}"
    if (got.total, got.input_cost, got.output_cost) != (
        expected.total_price,
        expected.input_price,
        expected.output_price,
    ):
        return (
            f"{case}: genai-prices total/input/output "
            f"{expected.total_price}/{expected.input_price}/{expected.output_price}, "
            f"aibill {got.total}/{got.input_cost}/{got.output_cost}"
        )
    if got.model_id != expected.model.id or got.provider_id != expected.provider.id:
        return (
            f"{case}: matched {got.model_id} of {got.provider_id}, genai-prices {expected.model.id}"
        )
    if sum((c.cost for c in got.components), Decimal(0)) != got.total:
        return f"{case}: components do not add up to {got.total}"
    return ""


def test_agreement_covers_three_providers() -> None:
    found = {provider for provider, _ in AGREEMENT_MODELS}
    assert found == set(AGREEMENT_PROVIDERS)
    assert len(AGREEMENT_MODELS) > 150


@pytest.mark.parametrize(("provider", "model"), AGREEMENT_MODELS, ids="/".join)
def test_agrees_with_genai_prices(catalog: Catalog, provider: str, model: str) -> None:
    failures = [
        failure
        for usage in AGREEMENT_USAGES
        for at in AGREEMENT_TIMES
        if (failure := both_outcomes(catalog, provider, model, usage, at))
    ]
    assert not failures, "\n".join(failures)


def test_agrees_with_genai_prices_on_every_provider(catalog: Catalog) -> None:
    usage = AGREEMENT_USAGES[1]
    failures = [
        failure
        for p in bundled_providers
        for m in p.models
        if (failure := both_outcomes(catalog, p.id, m.id, usage, AT))
    ]
    assert not failures, "\n".join(failures[:20])


def test_agrees_on_fallback_provider(catalog: Catalog) -> None:
    # Azure lists no price of its own for some OpenAI models and falls back to OpenAI's.
    usage = Usage(input_tokens=1_200, output_tokens=512)
    assert both_outcomes(catalog, "azure", "gpt-4o", usage, AT) == ""
    assert catalog.price("azure", "gpt-4o", usage, AT).provider_id == "azure"


# -- the catalog's contents -----------------------------------------------------


def test_providers_and_models(catalog: Catalog) -> None:
    assert {"openai", "anthropic", "google"} <= set(catalog.providers())
    assert catalog.providers() == sorted(catalog.providers())
    assert "gpt-4o" in catalog.models("openai")
    assert "claude-sonnet-4-5" in catalog.models("anthropic")
    assert catalog.version == "0.2.3"
    assert catalog.source == "genai-prices 0.2.3"


def test_output_limit_and_context_window(catalog: Catalog) -> None:
    # The catalog records context windows but no output limits.
    assert catalog.output_limit("openai", "gpt-4o") is None
    assert catalog.context_window("openai", "gpt-4o") == 128_000
    with pytest.raises(UnknownModel):
        catalog.output_limit("openai", "no-such-model")


def test_lookup_cache_is_bounded_and_correct() -> None:
    small = Catalog(cache_size=2)
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    for _ in range(3):
        for model in ("gpt-4o", "o3", "gpt-4o-mini", "nope-model"):
            try:
                small.price("openai", model, usage, AT)
            except UnknownModel:
                assert model == "nope-model"
    assert len(small._lookups) == 2
    assert small.price("openai", "gpt-4o", usage, AT).total == Decimal("0.0125")


def test_never_starts_the_price_updater(catalog: Catalog) -> None:
    from genai_prices import data_snapshot

    catalog.price("openai", "gpt-4o", Usage(input_tokens=1), AT)
    assert data_snapshot._custom_snapshot is None


# -- refusals -----------------------------------------------------------------


def test_unknown_provider(catalog: Catalog) -> None:
    with pytest.raises(UnknownModel) as caught:
        catalog.price("no-such-provider", "gpt-4o", Usage(input_tokens=1), AT)
    assert caught.value.code == "unknown_model"
    assert caught.value.details == {"provider": "no-such-provider", "model": "gpt-4o"}
    with pytest.raises(UnknownModel) as caught:
        catalog.models("no-such-provider")
    assert caught.value.code == "unknown_model"


def test_unknown_model(catalog: Catalog) -> None:
    for _ in range(2):  # the second time from the cache
        with pytest.raises(UnknownModel) as caught:
            catalog.price("openai", "gpt-no-such-model", Usage(input_tokens=1), AT)
        assert caught.value.code == "unknown_model"
        assert "gpt-no-such-model" in caught.value.message
        assert caught.value.to_dict()["details"]["provider"] == "openai"


@pytest.mark.parametrize(("provider", "model"), [("", "gpt-4o"), ("openai", ""), (None, "gpt-4o")])
def test_malformed_names(catalog: Catalog, provider: Any, model: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        catalog.price(provider, model, Usage(input_tokens=1), AT)
    assert caught.value.code == "invalid_request"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": 1.0}, "output_tokens"),
        ({"output_tokens": True}, "output_tokens"),
        ({"cache_read_tokens": "5"}, "cache_read_tokens"),
        ({"input_tokens": Decimal(5)}, "input_tokens"),
        ({"input_tokens": MAX_COUNT + 1}, "input_tokens"),
        ({"requests": -1}, "requests"),
        ({"input_tokens": 10, "cache_read_tokens": 6, "cache_write_tokens": 5}, "input_tokens"),
        ({"input_tokens": 10, "input_audio_tokens": 11}, "input_audio_tokens"),
        ({"output_tokens": 10, "output_audio_tokens": 11}, "output_audio_tokens"),
    ],
)
def test_bad_usage(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        Usage(**kwargs)
    assert caught.value.code == "invalid_request"
    assert caught.value.details["field"] == field
    assert field in caught.value.message


def test_largest_usage_is_exact(catalog: Catalog) -> None:
    usage = Usage(input_tokens=MAX_COUNT, output_tokens=MAX_COUNT)
    cost = catalog.price("openai", "gpt-4o", usage, AT)
    assert cost.total == Decimal(2_500_000 + 10_000_000)


def test_usage_must_be_aibill_usage(catalog: Catalog) -> None:
    with pytest.raises(InvalidRequest):
        catalog.price("openai", "gpt-4o", genai_usage(Usage(input_tokens=1)), AT)  # type: ignore[arg-type]


def test_naive_datetime_refused(catalog: Catalog) -> None:
    with pytest.raises(InvalidRequest) as caught:
        catalog.price("openai", "gpt-4o", Usage(input_tokens=1), datetime(2026, 1, 15))  # noqa: DTZ001
    assert caught.value.details["field"] == "at"
    with pytest.raises(InvalidRequest):
        catalog.price("openai", "gpt-4o", Usage(input_tokens=1), "2026-01-15")  # type: ignore[arg-type]


def test_usage_is_frozen() -> None:
    usage = Usage(input_tokens=1)
    with pytest.raises(AttributeError):
        usage.input_tokens = 2  # type: ignore[misc]
