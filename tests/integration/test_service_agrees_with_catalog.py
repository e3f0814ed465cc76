"""The billed provider cost of every model of three providers equals what
genai-prices computes for the same usage: through the whole service (pricing,
posting, storage in pico-units, reading back), on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
from genai_prices.data import providers as bundled_providers

import aibill
from aibill import Billing, ManualClock, Usage

PROVIDERS = ("openai", "anthropic", "google")
USAGES = (
    Usage(input_tokens=1_200, output_tokens=512),
    Usage(input_tokens=50_000, output_tokens=2_000, cache_read_tokens=30_000),
    Usage(input_tokens=300_000, output_tokens=4_321, cache_read_tokens=120_000),
)
AT = datetime(2026, 6, 1, 12, tzinfo=UTC)


def genai_total(provider: str, model: str, usage: Usage) -> Decimal | None:
    try:
        calc = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
            ),
            model,
            provider_id=provider,
            genai_request_timestamp=AT,
        )
    except (LookupError, ValueError):
        return None
    return calc.total_price


def test_billed_provider_cost_equals_genai_prices(db_url: str) -> None:
    clock = ManualClock(AT)
    billing: Billing = aibill.connect(db_url, clock=clock)
    billing.create_mandate("usd", billing_model="unlimited", currency="USD")
    billing.add_user("alice")
    billing.add_member("usd", "alice")
    for provider in PROVIDERS:
        billing.access.register_provider(provider)
    billing.pricing.set_markup(Decimal("0"), mandate="usd")
    models = [(p.id, m.id) for p in bundled_providers if p.id in PROVIDERS for m in p.models]
    assert len(models) > 150 and {p for p, _ in models} == set(PROVIDERS)
    failures: list[str] = []
    priced = 0
    for n, ((provider, model), usage) in enumerate(itertools.product(models, USAGES)):
        expected = genai_total(provider, model, usage)
        try:
            entry = billing.record_usage(
                "usd",
                user="alice",
                provider=provider,
                model=model,
                usage=usage,
                idempotency_key=f"k{n}",
            )
        except (aibill.UnknownModel, aibill.InvalidRequest) as exc:
            if expected is not None:
                failures.append(f"{provider}/{model} {usage}: aibill {exc.code}, genai {expected}")
            continue
        priced += 1
        if expected is None or entry.provider_cost != expected:
            failures.append(
                f"{provider}/{model} {usage}: aibill {entry.provider_cost}, genai {expected}"
            )
        elif entry.amount != aibill.calculate_price_with_markup(expected, Decimal("0")):
            failures.append(f"{provider}/{model} {usage}: billed {entry.amount} for {expected}")
    assert not failures, "\n".join(failures[:30])
    assert priced > 400
    stored = billing.history("usd", provider="openai", model="gpt-4o").entries
    assert stored and all(e.provider_cost is not None for e in stored)
    billing.close()
