"""Pricing throughput of aibill's catalog, next to genai-prices called directly.

For each case, the same list of (provider, model, usage) calls is priced
through ``Catalog.price`` and through ``genai_prices.calc_price`` (with the
provider id and request time given, usage objects built beforehand on both
sides). Runs alternate between the two and the best run of each is kept.
Rates are priced usages per second; ``ratio`` is aibill's rate over
genai-prices' rate (above 1: aibill is faster).

The ``service`` lines price the same mixed calls through the whole pricing
service (``Pricing.price``: the mandate's custom prices, the exchange rate
and the markup read from the database, then converted and rounded), on a
SQLite file and on PostgreSQL, against genai-prices in the same run.

    .venv/bin/python bench/pricing.py            # full: steadier
    .venv/bin/python bench/pricing.py --quick    # well under 20 s
"""

from __future__ import annotations

import argparse
import platform
import random
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
from genai_prices.data import providers as bundled_providers
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

import aibill
from aibill.catalog import Catalog, Usage
from aibill.domain.errors import AibillError
from aibill.service.pricing import Pricing

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)


@dataclass(frozen=True)
class Call:
    provider: str
    model: str
    usage: Usage
    at: datetime
    genai_usage: genai_prices.Usage


def call(provider: str, model: str, usage: Usage, at: datetime = AT) -> Call:
    genai_usage = genai_prices.Usage(**{name: getattr(usage, name) for name in FIELDS})
    return Call(provider, model, usage, at, genai_usage)


def mixed_calls(catalog: Catalog, n: int) -> list[Call]:
    """Every priceable model of three providers, with assorted usages, shuffled."""
    rng = random.Random(7)
    models = [
        (p.id, m.id)
        for p in bundled_providers
        if p.id in ("openai", "anthropic", "google")
        for m in p.models
    ]
    calls: list[Call] = []
    while len(calls) < n:
        provider, model = rng.choice(models)
        total_in = rng.choice((800, 12_000, 250_000))
        usage = Usage(
            input_tokens=total_in,
            output_tokens=rng.randrange(1, 4_000),
            cache_read_tokens=rng.choice((0, total_in // 2)),
            cache_write_tokens=rng.choice((0, total_in // 4)),
        )
        try:
            catalog.price(provider, model, usage, AT)
        except AibillError:
            continue
        calls.append(call(provider, model, usage))
    return calls


def cases(catalog: Catalog, n: int) -> dict[str, list[Call]]:
    plain = Usage(input_tokens=1_200, output_tokens=512)
    cached = Usage(input_tokens=10_000, output_tokens=300, cache_read_tokens=8_000)
    writes = Usage(
        input_tokens=250_000,
        output_tokens=900,
        cache_read_tokens=50_000,
        cache_write_tokens=100_000,
    )
    long = Usage(input_tokens=300_000, output_tokens=2_000)
    return {
        "openai/gpt-4o plain": [call("openai", "gpt-4o", plain)] * n,
        "openai/gpt-4o cached": [call("openai", "gpt-4o", cached)] * n,
        "anthropic/claude-sonnet-4-5 tiered+writes": [
            call("anthropic", "claude-sonnet-4-5", writes)
        ]
        * n,
        "google/gemini-2.5-pro long": [call("google", "gemini-2.5-pro", long)] * n,
        "openai/o3 dated price": [
            call("openai", "o3", plain, datetime(2025, 6, 1, tzinfo=UTC)),
            call("openai", "o3", plain, datetime(2025, 7, 1, tzinfo=UTC)),
        ]
        * (n // 2),
        "perplexity/sonar request fee": [call("perplexity", "sonar", plain)] * n,
        "mixed 3 providers": mixed_calls(catalog, n),
    }


def run_aibill(catalog: Catalog, calls: Sequence[Call]) -> float:
    price = catalog.price
    start = time.perf_counter()
    for c in calls:
        price(c.provider, c.model, c.usage, c.at)
    return time.perf_counter() - start


def run_genai(calls: Sequence[Call]) -> float:
    calc_price = genai_prices.calc_price
    start = time.perf_counter()
    for c in calls:
        calc_price(c.genai_usage, c.model, provider_id=c.provider, genai_request_timestamp=c.at)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and runs (< 20 s)")
    parser.add_argument(
        "--pg-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server for the service lines ('none' skips them)",
    )
    args = parser.parse_args()
    n, repeats = (1_500, 3) if args.quick else (10_000, 5)

    catalog = Catalog()
    print(
        f"pricing bench: {n} calls per case, best of {repeats} runs; "
        f"{catalog.source}; Python {platform.python_version()} on {platform.machine()}"
    )
    began = time.perf_counter()
    ratios: list[float] = []
    for name, calls in cases(catalog, n).items():
        # Check both sides agree before timing, and warm every cache.
        for c in calls[:200]:
            ours = catalog.price(c.provider, c.model, c.usage, c.at).total
            theirs = genai_prices.calc_price(
                c.genai_usage, c.model, provider_id=c.provider, genai_request_timestamp=c.at
            ).total_price
            assert ours == theirs, (name, c, ours, theirs)
        aibill_rate = genai_rate = 0.0
        for _ in range(repeats):
            aibill_rate = max(aibill_rate, len(calls) / run_aibill(catalog, calls))
            genai_rate = max(genai_rate, len(calls) / run_genai(calls))
        ratio = aibill_rate / genai_rate
        ratios.append(ratio)
        print(
            f"{name:<44} aibill={aibill_rate:>10,.0f}/s genai-prices={genai_rate:>10,.0f}/s "
            f"ratio={ratio:.2f}"
        )
    for backend, url in service_databases(args.pg_url):
        calls = cases(catalog, n)["mixed 3 providers"][: n // 3]
        with url as database_url:
            pricing = service_pricing(database_url, catalog)
            service_rate = genai_rate = 0.0
            for _ in range(repeats):
                service_rate = max(service_rate, len(calls) / run_service(pricing, calls))
                genai_rate = max(genai_rate, len(calls) / run_genai(calls))
            pricing_engine(pricing).dispose()
        print(
            f"{'service quote, ' + backend:<44} aibill={service_rate:>10,.0f}/s "
            f"genai-prices={genai_rate:>10,.0f}/s ratio={service_rate / genai_rate:.2f}"
        )
    print(f"elapsed={time.perf_counter() - began:.1f}s ratio_min={min(ratios):.2f}")


class _Database:
    """A throwaway database for the service lines, dropped afterwards."""

    def __init__(self, backend: str, admin_url: str) -> None:
        self.backend, self.admin_url, self.url = backend, admin_url, ""

    def __enter__(self) -> str:
        name = f"aibill_pricing_bench_{uuid.uuid4().hex[:8]}"
        if self.backend == "sqlite":
            self.url = f"sqlite:///{tempfile.mkdtemp()}/{name}.db"
        else:
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            self.url = make_url(self.admin_url).set(database=name).render_as_string(False)
        return self.url

    def __exit__(self, *_: object) -> None:
        if self.backend == "postgres":
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                name = make_url(self.url).database
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def service_databases(pg_url: str) -> list[tuple[str, _Database]]:
    out = [("sqlite", _Database("sqlite", ""))]
    if pg_url != "none":
        out.append(("postgres", _Database("postgres", pg_url)))
    return out


def service_pricing(url: str, catalog: Catalog) -> Pricing:
    billing = aibill.connect(url, catalog=catalog)
    billing.create_mandate("bench", currency="CHF")
    billing.pricing.set_exchange_rate(
        "USD", "CHF", Decimal("0.80"), valid_from=datetime(2020, 1, 1, tzinfo=UTC)
    )
    return billing.pricing


def pricing_engine(pricing: Pricing) -> Engine:
    return pricing._engine  # the bench owns this throwaway database


def run_service(pricing: Pricing, calls: Sequence[Call]) -> float:
    start = time.perf_counter()
    for c in calls:
        pricing.price("bench", "CHF", c.provider, c.model, c.usage, c.at)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
