"""Usage records per second through ``record_usage_batch``, next to the bare
driver's limit.

aibill posts batches of usage records priced from tokens (provider, model and
token counts; each record its own idempotency key, one transaction per batch).
The *raw limit* inserts the same rows that aibill wrote, the ledger entries and
their idempotency records with new keys, through the bare driver
(``sqlite3`` / ``psycopg``) in batches of the same size, one transaction per
batch, with the same durability (SQLite WAL + synchronous=FULL; PostgreSQL's
defaults). ``ratio`` is aibill over raw, in the same run.

    .venv/bin/python bench/ingest.py            # 20 batches of 1,000 per backend
    .venv/bin/python bench/ingest.py --quick    # 5 batches of 1,000
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Json
from sqlalchemy.engine import make_url

import aibill
from aibill import Billing, Usage, UsageRecord

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BATCH = 1000
MANDATE = "ingest"
TABLES = ("entries", "idempotency_keys")
KEYS = {"entries": "entry_id", "idempotency_keys": "idempotency_key"}


def _records(batch: int, size: int) -> list[UsageRecord]:
    return [
        UsageRecord(
            MANDATE,
            f"b{batch}-r{i}",
            user=f"user-{i % 50}",
            provider="openai",
            model="gpt-4o",
            usage=Usage(input_tokens=1000 + i, output_tokens=200 + i % 300),
            feature_code="chat",
            already_happened=True,
        )
        for i in range(size)
    ]


def _setup(billing: Billing) -> None:
    billing.access.register_provider("openai")
    billing.create_mandate(MANDATE, currency="USD")
    for i in range(50):
        billing.add_member(MANDATE, f"user-{i}")
    billing.credit(MANDATE, Decimal("100000000"), idempotency_key="funding")


def run_aibill(url: str, batches: int) -> float:
    """Records per second through ``record_usage_batch``."""
    with aibill.connect(url, migrate=False) as billing:
        billing.record_usage_batch(_records(-1, 50))  # warm up: catalog, statements
        started = time.perf_counter()
        for n in range(batches):
            outcomes = billing.record_usage_batch(_records(n, BATCH))
            assert all(o.ok for o in outcomes), [o.code for o in outcomes if not o.ok][:3]
        return batches * BATCH / (time.perf_counter() - started)


def _rows(conn: Any, table: str, placeholder: str) -> tuple[str, list[tuple[Any, ...]]]:
    """The INSERT of ``table`` and its rows as aibill wrote them, with new keys."""
    cursor = conn.execute(f"SELECT * FROM {table} WHERE mandate_id = {placeholder}", (MANDATE,))
    names = [d[0] for d in cursor.description]
    key = names.index(KEYS[table])
    rows = [
        tuple(f"raw-{v}" if i == key else _stored(v) for i, v in enumerate(row)) for row in cursor
    ]
    marks = ", ".join([placeholder] * len(names))
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", rows


def _stored(value: Any) -> Any:
    """A value read back, ready to be written again (JSON stays JSON)."""
    return Json(value) if isinstance(value, dict | list) else value


def run_raw(connect: Callable[[], Any], placeholder: str) -> float:
    """Rows per second (one entry and its idempotency record per row) inserted
    through the bare driver, ``BATCH`` at a time, one transaction per batch."""
    conn = connect()
    try:
        tables = [_rows(conn, table, placeholder) for table in TABLES]
        conn.rollback()
        count = min(len(rows) for _, rows in tables)
        started = time.perf_counter()
        cursor = conn.cursor()
        for start in range(0, count, BATCH):
            for sql, rows in tables:
                cursor.executemany(sql, rows[start : start + BATCH])
            conn.commit()
        return count / (time.perf_counter() - started)
    finally:
        conn.close()


@contextmanager
def sqlite_target() -> Iterator[tuple[str, Callable[[], Any], str]]:
    path = Path(tempfile.mkdtemp(prefix="aibill-ingest-")) / "ingest.db"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    yield f"sqlite:///{path}", connect, "?"


@contextmanager
def pg_target(admin_url: str) -> Iterator[tuple[str, Callable[[], Any], str]]:
    database = f"aibill_ingest_{uuid.uuid4().hex[:10]}"
    server = make_url(admin_url).set(drivername="postgresql")
    admin = psycopg.connect(server.render_as_string(hide_password=False), autocommit=True)
    admin.execute(f'CREATE DATABASE "{database}"')
    url = make_url(admin_url).set(database=database)
    conninfo = server.set(database=database).render_as_string(hide_password=False)
    try:
        yield url.render_as_string(hide_password=False), lambda: psycopg.connect(conninfo), "%s"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5 batches per backend")
    parser.add_argument("--pg-url", default=os.environ.get("AIBILL_BENCH_PG", DEFAULT_PG_URL))
    args = parser.parse_args()
    batches = 5 if args.quick else 20
    print(f"# aibill {aibill.__version__}  cpus {os.cpu_count()}  batch={BATCH}  batches={batches}")
    found: dict[str, tuple[float, float]] = {}
    targets = [("sqlite", sqlite_target())]
    if args.pg_url.lower() != "none":
        targets.append(("pg", pg_target(args.pg_url)))
    for name, target in targets:
        with target as (url, connect, placeholder):
            with aibill.connect(url) as billing:
                _setup(billing)
            ours = run_aibill(url, batches)
            raw = run_raw(connect, placeholder)
            found[name] = (ours, raw)
            rates = f"aibill={ours:,.0f} records/s  raw={raw:,.0f} rows/s"
            print(f"{name:<7} {rates}  ratio={ours / raw:.3f}", flush=True)
    for name, (ours, _) in found.items():
        print(f"records_per_s_{name}={ours:.0f}")
    if found:
        print(f"ingest_ratio_min={min(o / r for o, r in found.values()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
