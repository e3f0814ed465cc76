"""Reads on a big ledger: history pages, usage reports, a spending-limit check
and a full export, next to the database's own limit.

Each ledger is built by bulk insert: entries shaped exactly like the ones
``record_usage`` writes (a real entry is copied, with new ids, times over the
last 180 days, users, providers and models), half of them in one big tenant,
its heavy user holding a tenth of those; the accounts' counters are set to
what the entries add up to and ``verify`` must be clean before anything is
measured. Times are medians of 3, warm.

- a history page of 1,000 at the top and at 90 % depth (``deep_page_ratio``:
  deep over first);
- a 90-day usage report grouped by day and provider, and by user (both read
  the daily rollup ``usage_days``), grouped by feature instance (read from
  ``usage_days_by_instance``) and for one workflow (read from its entries);
  *raw* is the same GROUP BY by user run bare on the entries;
- a check for the heavy user, who has a monthly spending limit, and the same
  check for a user without one (``limit_share_ms``: the difference);
- the big tenant's full history as CSV (rows/s); *raw* reads the same rows bare.

    .venv/bin/python bench/reads.py --quick     # 100k and 1M entries
    .venv/bin/python bench/reads.py             # 100k, 1M and 10M entries
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

import aibill
from aibill import Billing, ManualClock, Usage
from aibill.domain.requests import encode_cursor
from aibill.store.schema import entries

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BIG, HEAVY = "big", "heavy"
USERS = [f"user-{i}" for i in range(50)]
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")]
PAGE = 1000


def _median_s(run: Callable[[], Any], times: int = 3) -> float:
    run()  # warm
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        taken.append(time.perf_counter() - started)
    return statistics.median(taken)


def _setup(billing: Billing) -> dict[str, Any]:
    """The tenants, users and one real entry to copy."""
    for provider in ("openai", "anthropic"):
        billing.access.register_provider(provider)
    for mandate in (BIG, "other-1", "other-2", "other-3"):
        billing.create_mandate(mandate, currency="USD", billing_model="unlimited")
        for user in [HEAVY, *USERS]:
            if mandate == BIG or user != HEAVY:
                billing.add_member(mandate, user)
    entry = billing.record_usage(
        BIG,
        user=HEAVY,
        provider="openai",
        model="gpt-4o",
        usage=Usage(input_tokens=1200, output_tokens=300),
        feature_code="chat",
        idempotency_key="template",
    )
    with billing.engine.connect() as conn:
        query = select(entries).where(entries.c.mandate_id == BIG, entries.c.entry_id == entry.id)
        row = conn.execute(query).mappings().one()
    return dict(row)


def _rows(template: dict[str, Any], count: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    span_s = 180 * 24 * 3600
    for i in range(count):
        mandate = BIG if i % 2 == 0 else f"other-{1 + i % 3}"
        user = HEAVY if mandate == BIG and i % 20 == 0 else rng.choice(USERS)
        provider, model = rng.choice(MODELS)
        at = NOW - timedelta(seconds=rng.randrange(span_s), microseconds=rng.randrange(10**6))
        amount = rng.randrange(1, 50_000)
        yield {
            **template,
            "mandate_id": mandate,
            "entry_id": f"e{i:012d}{uuid.uuid4().hex[:8]}",
            "account_id": "pool",
            "user_id": user,
            "provider": provider,
            "model": model,
            "workflow_id": f"wf-{rng.randrange(10_000)}",
            "feature_instance": f"fi-{rng.randrange(100)}",
            "posted_at": at,
            "amount_micros": amount,
            "balance_after_micros": -amount,
        }


def _load(billing: Billing, template: dict[str, Any], count: int) -> None:
    """Insert ``count`` entries through SQLAlchemy Core in chunks, then set the
    accounts' counters to what they add up to."""
    chunk: list[dict[str, Any]] = []
    with billing.engine.begin() as conn:
        for row in _rows(template, count, seed=count):
            chunk.append(row)
            if len(chunk) == 20_000:
                conn.execute(entries.insert(), chunk)
                chunk = []
        if chunk:
            conn.execute(entries.insert(), chunk)
        conn.execute(
            text(
                "UPDATE accounts SET debits_posted = (SELECT COALESCE(SUM(amount_micros), 0)"
                " FROM entries e WHERE e.mandate_id = accounts.mandate_id"
                " AND e.account_id = accounts.account_id AND e.kind = 'debit')"
            )
        )
    # What autovacuum keeps up on PostgreSQL: the planner's statistics, and the
    # rollups' dead row versions (a bulk load updates each rollup row many
    # times in a few seconds) cleared. SQLite keeps no dead versions.
    sqlite = billing.engine.dialect.name == "sqlite"
    with billing.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE" if sqlite else "VACUUM ANALYZE"))
    billing.set_spending_limit(BIG, Decimal("1000000"), user=HEAVY, period="month")
    drift = billing.verify()
    assert drift == [], drift[:3]


def _deep_cursor(billing: Billing) -> str:
    with billing.engine.connect() as conn:
        total = conn.execute(
            text("SELECT COUNT(*) FROM entries WHERE mandate_id = :m"), {"m": BIG}
        ).scalar_one()
        at, entry_id = conn.execute(
            text(
                "SELECT posted_at, entry_id FROM entries WHERE mandate_id = :m"
                " ORDER BY posted_at DESC, entry_id DESC LIMIT 1 OFFSET :n"
            ),
            {"m": BIG, "n": int(total * 0.9)},
        ).one()
    if isinstance(at, str):
        at = datetime.fromisoformat(at).replace(tzinfo=UTC)
    entry = billing.history(BIG, limit=1).entries[0]
    return encode_cursor(entry.__class__(**{**_fields(entry), "posted_at": at, "id": entry_id}))


def _fields(entry: Any) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__slots__}


def measure(billing: Billing, raw: Callable[[str], Callable[[], Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    cursor = _deep_cursor(billing)
    out["first_page_s"] = _median_s(lambda: billing.history(BIG, limit=PAGE))
    out["deep_page_s"] = _median_s(lambda: billing.history(BIG, limit=PAGE, cursor=cursor))
    since = NOW - timedelta(days=90)
    out["report_day_provider_s"] = _median_s(
        lambda: billing.usage_report(BIG, group_by=("day", "provider"), since=since, until=NOW)
    )
    out["report_user_s"] = _median_s(
        lambda: billing.usage_report(BIG, group_by=("user",), since=since, until=NOW)
    )
    out["report_instance_s"] = _median_s(
        lambda: billing.usage_report(BIG, group_by=("feature_instance",), since=since, until=NOW)
    )
    out["report_workflow_s"] = _median_s(
        lambda: billing.usage_report(
            BIG, group_by=("day",), since=since, until=NOW, workflow_id="wf-7"
        )
    )
    out["report_raw_s"] = _median_s(
        raw(
            "SELECT user_id, COUNT(*), SUM(amount_micros) FROM entries WHERE mandate_id = 'big'"
            f" AND posted_at >= '{since.strftime('%Y-%m-%d %H:%M:%S')}' GROUP BY user_id"
        )
    )
    out["limit_check_s"] = _median_s(
        lambda: billing.check(BIG, user=HEAVY, estimate=Decimal("0.01")), times=20
    )
    out["check_without_limit_s"] = _median_s(
        lambda: billing.check(BIG, user=USERS[0], estimate=Decimal("0.01")), times=20
    )
    started = time.perf_counter()
    written = billing.export_history_csv(BIG, io.StringIO())
    out["export_rows_per_s"] = written / (time.perf_counter() - started)
    started = time.perf_counter()
    raw("SELECT * FROM entries WHERE mandate_id = 'big' ORDER BY posted_at DESC, entry_id DESC")()
    out["export_raw_rows_per_s"] = written / (time.perf_counter() - started)
    return out


@contextmanager
def sqlite_ledger(size: int) -> Iterator[tuple[Billing, Callable[[str], Callable[[], Any]]]]:
    import sqlite3

    path = Path(tempfile.mkdtemp(prefix="aibill-reads-")) / "reads.db"
    billing = aibill.connect(f"sqlite:///{path}", clock=ManualClock(NOW))

    def raw(sql: str) -> Callable[[], Any]:
        def run() -> Any:
            conn = sqlite3.connect(path)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()

        return run

    try:
        yield billing, raw
    finally:
        billing.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def pg_ledger(
    admin_url: str, size: int
) -> Iterator[tuple[Billing, Callable[[str], Callable[[], Any]]]]:
    database = f"aibill_reads_{uuid.uuid4().hex[:10]}"
    server = make_url(admin_url).set(drivername="postgresql")
    admin = psycopg.connect(server.render_as_string(hide_password=False), autocommit=True)
    admin.execute(f'CREATE DATABASE "{database}"')
    conninfo = server.set(database=database).render_as_string(hide_password=False)
    url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
    billing = aibill.connect(url, clock=ManualClock(NOW))

    def raw(sql: str) -> Callable[[], Any]:
        def run() -> Any:
            with psycopg.connect(conninfo) as conn:
                return conn.execute(sql).fetchall()  # type: ignore[arg-type]

        return run

    try:
        yield billing, raw
    finally:
        billing.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100k and 1M entries")
    parser.add_argument("--pg-url", default=os.environ.get("AIBILL_BENCH_PG", DEFAULT_PG_URL))
    parser.add_argument("--sizes", default=None, help="comma-separated entry counts")
    args = parser.parse_args()
    sizes = [100_000, 1_000_000] if args.quick else [100_000, 1_000_000, 10_000_000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# aibill {aibill.__version__}  cpus {os.cpu_count()}  sizes {sizes}")
    results: list[tuple[str, int, dict[str, float]]] = []
    for size in sizes:
        for name in ("sqlite", "pg"):
            opener = sqlite_ledger(size) if name == "sqlite" else pg_ledger(args.pg_url, size)
            with opener as (billing, raw):
                started = time.perf_counter()
                _load(billing, _setup(billing), size)
                built = time.perf_counter() - started
                figures = measure(billing, raw)
            results.append((name, size, figures))
            shown = "  ".join(f"{k}={v:.4g}" for k, v in figures.items())
            print(f"{name:<6} entries={size:<9,} built_s={built:.0f}  {shown}", flush=True)
    reports = [max(f["report_day_provider_s"], f["report_user_s"]) for _, _, f in results]
    print(f"report_90d_s_max={max(reports):.3f}")
    instance = max(f["report_instance_s"] for _, _, f in results)
    print(f"report_instance_s_max={instance:.3f}")
    print(f"report_workflow_s_max={max(f['report_workflow_s'] for _, _, f in results):.3f}")
    ratios = [f["deep_page_s"] / f["first_page_s"] for _, _, f in results]
    print(f"deep_page_ratio_max={max(ratios):.2f}")
    print(f"limit_check_ms_max={max(f['limit_check_s'] for _, _, f in results) * 1000:.2f}")
    extra = [f["limit_check_s"] - f["check_without_limit_s"] for _, _, f in results]
    print(f"limit_share_ms_max={max(extra) * 1000:.2f}")
    print(f"export_rows_per_s_min={min(f['export_rows_per_s'] for _, _, f in results):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
