"""Hold+capture throughput of aibill, next to the bare driver's limit.

One *cycle* is ``billing.hold(...)`` followed by ``billing.capture(...)``:
two write transactions. The *raw limit* is the same number of transactions
(two per cycle) run through the bare driver (``sqlite3`` / ``psycopg``), each
transaction one balance-row ``UPDATE`` plus one ``INSERT``, with the same
durability, the same number of clients and the same account distribution.
Both are reported in cycles (= raw transaction pairs) per second.

The *floor* is aibill's own cycle without aibill: the exact statements one
hold and one capture sent to the driver (recorded from a real cycle), replayed
through the bare driver on aibill's database, in the same two transactions,
with only the keys and ids changed. It is what the ledger's schema and
statements cost before any Python of aibill runs, so ``floor / raw`` bounds
what ``aibill / raw`` could ever reach with this schema.

Cases: SQLite (a file, WAL + synchronous=FULL) and PostgreSQL (a throwaway
database, server defaults), 1 and 16 clients, one hot account and 1,000
accounts picked at random, and 64 clients on PostgreSQL's hot account.
Clients are threads; PostgreSQL with 16 clients is also run with processes,
because threads share one GIL.

    .venv/bin/python bench/ledger.py            # full: steadier, a few minutes
    .venv/bin/python bench/ledger.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import platform
import random
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import make_url

import aibill
from aibill import Billing
from aibill.store import fast

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
HOLD_AMOUNT = Decimal("0.50")
CAPTURE_AMOUNT = Decimal("0.31")
FUNDING = Decimal("1000000")  # per account: far more than any run can spend
SPREAD = 1000  # accounts in the "many accounts" cases
FLOOR_MAX_CLIENTS = 16
"""Above this many clients the floor is not measured and aibill's pool stays at
this size: 64 clients' raw connections, and aibill's, already take most of
PostgreSQL's 100."""
HOT_MANDATE = "bench-hot"
FLOOR_MANDATE = "bench-floor"  # where the floor's template cycle is recorded
BARRIER_TIMEOUT_S = 120.0

Op = Callable[[], None]


# --------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Timing:
    """A case runs aibill and the raw limit in alternating time slices.

    The disk's fsync latency can change several-fold from one second to the
    next (a virtual disk shared with others), so the kinds (aibill, floor,
    raw) are interleaved in the same run rather than measured one after the
    other. Cycles that finish
    in the first ``settle_s`` of a slice are not counted: the previous slice's
    last cycles may still be running then.
    """

    warmup_s: float  # both kinds run, nothing is counted
    slice_s: float
    slices: int  # a multiple of len(KINDS): as many slices for each kind
    settle_s: float

    @property
    def counted_s(self) -> float:
        """Seconds of counted time per kind."""
        return self.slices // len(KINDS) * (self.slice_s - self.settle_s)


AIBILL, FLOOR, RAW = 0, 1, 2
KINDS = ("aibill", "floor", "raw")
QUICK = Timing(warmup_s=0.4, slice_s=0.5, slices=6, settle_s=0.1)
FULL = Timing(warmup_s=2.0, slice_s=1.0, slices=24, settle_s=0.2)


@dataclass(frozen=True)
class Case:
    backend: str  # "sqlite" or "postgres"
    clients: int
    accounts: int  # 1 (hot) or SPREAD
    via: str  # "threads" or "processes"


Params = dict[str, Any] | tuple[Any, ...]
Recorded = tuple[tuple[str, Params], ...]


@dataclass(frozen=True)
class Template:
    """The statements of one real hold and capture, as aibill sent them to the driver,
    and the values in them that must change from one replayed cycle to the next."""

    hold: Recorded
    capture: Recorded
    mandate: str
    hold_id: str
    entry_id: str
    keys: tuple[str, str]  # the hold's and the capture's idempotency keys


@dataclass(frozen=True)
class Job:
    """Everything a client needs for one case."""

    case: Case
    aibill_url: str  # SQLAlchemy URL
    floor_target: str  # aibill's database: sqlite path or libpq conninfo
    raw_target: str  # sqlite path or libpq conninfo
    mandates: tuple[str, ...]
    raw_accounts: tuple[int, ...]
    tag: str  # makes idempotency keys and entry ids unique across cases
    timing: Timing
    template: Template


@dataclass
class Outcome:
    """What one client reports: cycles completed inside counted time, per kind."""

    index: int
    cycles: list[int] = field(default_factory=lambda: [0] * len(KINDS))
    error: str | None = None


@dataclass
class Figures:
    case: Case
    aibill: float  # cycles/s
    floor: float  # aibill's statements through the bare driver, cycles/s
    raw: float  # raw transaction pairs/s
    client_cpu: float  # CPU cores used by the clients during aibill slices
    machine_cpu: float  # CPU cores busy machine-wide (clients + database) during aibill slices

    @property
    def ratio(self) -> float:
        return self.aibill / self.raw if self.raw else 0.0

    @property
    def floor_ratio(self) -> float:
        return self.floor / self.raw if self.raw else 0.0


# ---------------------------------------------------------------------- clients


def _aibill_op(job: Job, index: int, billing: Billing) -> Op:
    rng = random.Random(f"{job.tag}/aibill/{index}")
    names = job.mandates
    keys = itertools.count()
    prefix = f"{job.tag}-{index}-"

    def op() -> None:
        mandate = names[rng.randrange(len(names))]
        n = next(keys)
        hold = billing.hold(mandate, amount=HOLD_AMOUNT, idempotency_key=f"{prefix}{n}h")
        billing.capture(hold.id, amount=CAPTURE_AMOUNT, idempotency_key=f"{prefix}{n}c")

    return op


RAW_UPDATE = "UPDATE raw_accounts SET balance = balance - {p} WHERE account_id = {p}"
RAW_INSERT = (
    "INSERT INTO raw_entries (entry_id, account_id, amount, posted_at) VALUES ({p}, {p}, {p}, {p})"
)


def _raw_cycle(job: Job, index: int, txn: Callable[[int, int, str], None]) -> Op:
    """Two raw transactions on one account, picked like aibill's mandates."""
    rng = random.Random(f"{job.tag}/raw/{index}")
    accounts = job.raw_accounts
    keys = itertools.count()
    prefix = f"{job.tag}-{index}-"

    def op() -> None:
        account = accounts[rng.randrange(len(accounts))]
        n = next(keys)
        txn(account, 500_000, f"{prefix}{n}a")
        txn(account, 310_000, f"{prefix}{n}b")

    return op


def _raw_sqlite_op(job: Job, index: int) -> tuple[Op, Callable[[], None]]:
    conn = sqlite_connect(job.raw_target)
    update = RAW_UPDATE.format(p="?")
    insert = RAW_INSERT.format(p="?")

    def txn(account: int, amount: int, entry_id: str) -> None:
        conn.execute("BEGIN IMMEDIATE")  # as aibill does: take the write lock up front
        try:
            conn.execute(update, (amount, account))
            conn.execute(insert, (entry_id, account, amount, datetime.now(UTC).isoformat()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    return _raw_cycle(job, index, txn), conn.close


def _raw_pg_op(job: Job, index: int) -> tuple[Op, Callable[[], None]]:
    conn = psycopg.connect(job.raw_target)  # not autocommit: BEGIN ... COMMIT, like SQLAlchemy
    cur = conn.cursor()
    update = RAW_UPDATE.format(p="%s")
    insert = RAW_INSERT.format(p="%s")

    def txn(account: int, amount: int, entry_id: str) -> None:
        with conn.transaction():
            cur.execute(update, (amount, account))
            cur.execute(insert, (entry_id, account, amount, datetime.now(UTC)))

    return _raw_cycle(job, index, txn), conn.close


def _floor_cycle(job: Job, index: int, txn: Callable[[Recorded, dict[str, str]], None]) -> Op:
    """aibill's recorded hold and capture, on a mandate picked like aibill's, with new
    keys and ids: the same rows aibill would write, without aibill's Python."""
    rng = random.Random(f"{job.tag}/floor/{index}")
    names = job.mandates
    keys = itertools.count()
    prefix = f"{job.tag}-{index}-"
    t = job.template

    def op() -> None:
        mandate = names[rng.randrange(len(names))]
        n = next(keys)
        values = {
            t.mandate: mandate,
            t.hold_id: f"{mandate}:hold_f{prefix}{n}",
            t.entry_id: f"f{prefix}{n}",
            t.keys[0]: f"{prefix}{n}fh",
            t.keys[1]: f"{prefix}{n}fc",
        }
        txn(t.hold, values)
        txn(t.capture, values)

    return op


def _substitute(params: Params, values: dict[str, str]) -> Params:
    """``params`` with every value that names the template's mandate, hold, entry or
    keys replaced by this cycle's (JSON texts keep the template's: nothing keys on them)."""
    if isinstance(params, dict):
        return {k: values.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    return tuple(values.get(v, v) if isinstance(v, str) else v for v in params)


def _floor_sqlite_op(job: Job, index: int) -> tuple[Op, Callable[[], None]]:
    conn = sqlite_connect(job.floor_target)
    conn.execute("PRAGMA foreign_keys = ON")  # as aibill's connections

    def txn(statements: Recorded, values: dict[str, str]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                conn.execute(sql, _substitute(params, values)).fetchall()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    return _floor_cycle(job, index, txn), conn.close


def _floor_pg_op(job: Job, index: int) -> tuple[Op, Callable[[], None]]:
    conn = psycopg.connect(job.floor_target)  # BEGIN ... COMMIT, like SQLAlchemy
    cur = conn.cursor()

    def txn(statements: Recorded, values: dict[str, str]) -> None:
        with conn.transaction():
            for sql, params in statements:
                cur.execute(sql, _substitute(params, values))
                if cur.description is not None:
                    cur.fetchall()

    return _floor_cycle(job, index, txn), conn.close


GROUP_COMMIT = {"auto": None, "on": True, "off": False}


def _open_billing(url: str, pool_size: int) -> Billing:
    # The schema was migrated during setup; a client only connects. Process
    # clients read the choice from the environment the parent set.
    group_commit = GROUP_COMMIT[os.environ.get("AIBILL_BENCH_GROUP_COMMIT", "auto")]
    return aibill.connect(url, pool_size=pool_size, migrate=False, group_commit=group_commit)


class _Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...

    def abort(self) -> None: ...


class _Sink(Protocol):
    def put(self, item: Outcome) -> None: ...


def _client(job: Job, index: int, barrier: _Barrier, sink: _Sink, shared: Billing | None) -> None:
    """One client: get ready, wait for the others, warm up, then run the slices."""
    outcome = Outcome(index)
    closers: list[Callable[[], None]] = []
    try:
        billing = shared
        if billing is None:
            billing = _open_billing(job.aibill_url, pool_size=1)
            closers.append(billing.close)
        sqlite = job.case.backend == "sqlite"
        floor: Callable[[], None] | None = None
        if job.case.clients <= FLOOR_MAX_CLIENTS:
            floor, close_floor = (
                _floor_sqlite_op(job, index) if sqlite else _floor_pg_op(job, index)
            )
            closers.append(close_floor)
        raw, close_raw = _raw_sqlite_op(job, index) if sqlite else _raw_pg_op(job, index)
        closers.append(close_raw)
        ops = (_aibill_op(job, index, billing), floor, raw)
        for op in ops:
            if op is not None:
                op()  # connect, fill caches, prepare statements
        t = job.timing
        barrier.wait(BARRIER_TIMEOUT_S)  # released at the same instant for all (and the meter)
        start = time.monotonic() + t.warmup_s
        end = start + t.slices * t.slice_s
        warm = itertools.cycle(range(len(KINDS)))
        while (now := time.monotonic()) < end:
            if now < start:
                warm_op = ops[next(warm)]
                if warm_op is not None:
                    warm_op()
                continue
            k = int((now - start) / t.slice_s)
            kind = k % len(KINDS)
            op = ops[kind]
            if op is None:  # not measured in this case: sit the slice out
                time.sleep(max(0.0, start + (k + 1) * t.slice_s - now))
                continue
            op()
            done = time.monotonic()
            # Count a cycle that ended in the slice it began in, after the settling time.
            into = done - (start + k * t.slice_s)
            if done < end and t.settle_s <= into < t.slice_s:
                outcome.cycles[kind] += 1
    except BaseException as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        barrier.abort()
    finally:
        try:
            for close in closers:
                close()
        finally:
            sink.put(outcome)


class _ListSink:
    def __init__(self) -> None:
        self.items: list[Outcome] = []
        self._lock = threading.Lock()

    def put(self, item: Outcome) -> None:
        with self._lock:
            self.items.append(item)


def _ticks(path: str) -> int:
    """utime + stime of a process, in clock ticks (Linux /proc)."""
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _machine_busy_ticks() -> int:
    try:
        cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0
    values = [int(v) for v in cpu[:8]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


def _background_cpu(seconds: float = 0.5) -> float:
    """CPU cores busy machine-wide while this program idles (other work on the machine)."""
    hz = os.sysconf("SC_CLK_TCK")
    before, t0 = _machine_busy_ticks(), time.monotonic()
    time.sleep(seconds)
    return (_machine_busy_ticks() - before) / hz / (time.monotonic() - t0)


class _CpuMeter:
    """Samples client and machine CPU at every slice boundary (from the coordinator)."""

    def __init__(self, pids: list[int] | None) -> None:
        self.paths = [f"/proc/{pid}/stat" for pid in pids] if pids else ["/proc/self/stat"]
        self.samples: list[tuple[float, int, int]] = []

    def sample(self) -> None:
        client = sum(_ticks(p) for p in self.paths)
        self.samples.append((time.monotonic(), client, _machine_busy_ticks()))

    def follow(self, timing: Timing) -> None:
        """Call right after the barrier: samples at each slice boundary."""
        start = time.monotonic() + timing.warmup_s
        for k in range(timing.slices + 1):
            time.sleep(max(0.0, start + k * timing.slice_s - time.monotonic()))
            self.sample()

    def cores(self, kind: int) -> tuple[float, float]:
        """Client and machine CPU cores busy, averaged over the slices of ``kind``."""
        hz = os.sysconf("SC_CLK_TCK")
        wall = client = machine = 0.0
        for k in range(kind, len(self.samples) - 1, len(KINDS)):
            (t0, c0, m0), (t1, c1, m1) = self.samples[k], self.samples[k + 1]
            wall += t1 - t0
            client += (c1 - c0) / hz
            machine += (m1 - m0) / hz
        return (client / wall, machine / wall) if wall else (0.0, 0.0)


def _run_threads(job: Job) -> tuple[list[Outcome], _CpuMeter]:
    n = job.case.clients
    barrier = threading.Barrier(n + 1)
    sink = _ListSink()
    meter = _CpuMeter(None)
    # One Billing shared by all threads, its pool big enough for all of them.
    shared = _open_billing(job.aibill_url, pool_size=max(5, min(n, FLOOR_MAX_CLIENTS)))
    try:
        threads = [
            threading.Thread(target=_client, args=(job, i, barrier, sink, shared), daemon=True)
            for i in range(n)
        ]
        for t in threads:
            t.start()
        try:
            barrier.wait(BARRIER_TIMEOUT_S)
            meter.follow(job.timing)
        except threading.BrokenBarrierError:
            pass
        for t in threads:
            t.join()
    finally:
        shared.close()
    return sink.items, meter


def _run_processes(job: Job) -> tuple[list[Outcome], _CpuMeter]:
    n = job.case.clients
    ctx = mp.get_context("fork")  # children inherit the imports; each opens its own engine
    barrier = ctx.Barrier(n + 1)
    queue: Any = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(job, i, barrier, queue, None), daemon=True)
        for i in range(n)
    ]
    for p in procs:
        p.start()
    meter = _CpuMeter([p.pid for p in procs if p.pid is not None])
    try:
        barrier.wait(BARRIER_TIMEOUT_S)
        meter.follow(job.timing)
    except threading.BrokenBarrierError:
        pass
    t = job.timing
    deadline = time.monotonic() + BARRIER_TIMEOUT_S + t.warmup_s + t.slices * t.slice_s
    outcomes = [queue.get(timeout=max(1.0, deadline - time.monotonic())) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    return outcomes, meter


def measure(job: Job) -> Figures:
    runner = _run_processes if job.case.via == "processes" else _run_threads
    outcomes, meter = runner(job)
    errors = [o.error for o in outcomes if o.error]
    if errors:
        raise RuntimeError(f"{job.case}: {errors[0]}")
    seconds = job.timing.counted_s
    rates = [sum(o.cycles[kind] for o in outcomes) / seconds for kind in range(len(KINDS))]
    client_cpu, machine_cpu = meter.cores(AIBILL)
    return Figures(job.case, rates[AIBILL], rates[FLOOR], rates[RAW], client_cpu, machine_cpu)


# ------------------------------------------------------------------------ setup


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A bare connection with aibill's durability: WAL, synchronous=FULL, busy timeout."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def mandate_names() -> tuple[str, ...]:
    return tuple(f"bench-{i:04d}" for i in range(SPREAD))


def fund(billing: Billing, names: tuple[str, ...]) -> None:
    """One prepay_mandate per name, with a pool funded far beyond what a run spends."""
    for name in names:
        billing.create_mandate(name, billing_model="prepay_mandate", currency="CHF")
        billing.credit(name, FUNDING, idempotency_key=f"fund-{name}")


RAW_ACCOUNTS_DDL = "CREATE TABLE raw_accounts (account_id INTEGER PRIMARY KEY, balance BIGINT)"
RAW_ENTRIES_DDL = (
    "CREATE TABLE raw_entries (entry_id VARCHAR(64) PRIMARY KEY, account_id INTEGER NOT NULL,"
    " amount BIGINT NOT NULL, posted_at {ts} NOT NULL)"
)


@dataclass
class Backend:
    name: str
    aibill_url: str
    floor_target: str  # aibill's database for the bare driver
    raw_target: str
    info: dict[str, str]
    template: Template


def record_cycle(billing: Billing) -> Template:
    """Run one real hold and capture on a fresh mandate and keep every statement it
    sent to the driver, in order: the fast path's and any through SQLAlchemy Core
    (but not BEGIN: the floor opens its transactions as the raw limit does)."""
    billing.create_mandate(FLOOR_MANDATE, billing_model="prepay_mandate", currency="CHF")
    billing.credit(FLOOR_MANDATE, FUNDING, idempotency_key=f"fund-{FLOOR_MANDATE}")
    seen: list[tuple[str, Params]] = []

    def core(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            seen.append((statement, parameters))

    def on_fast(sql: str, parameters: Any) -> None:
        if not sql.startswith("BEGIN"):
            seen.append((sql, dict(parameters)))

    keys = ("floor-h", "floor-c")
    event.listen(billing.engine, "before_cursor_execute", core)
    try:
        with fast.observing(on_fast):
            hold = billing.hold(FLOOR_MANDATE, amount=HOLD_AMOUNT, idempotency_key=keys[0])
            split = len(seen)
            entry = billing.capture(hold.id, amount=CAPTURE_AMOUNT, idempotency_key=keys[1])
    finally:
        event.remove(billing.engine, "before_cursor_execute", core)
    return Template(
        tuple(seen[:split]), tuple(seen[split:]), FLOOR_MANDATE, hold.id, entry.id, keys
    )


@contextmanager
def sqlite_backend(directory: str | None) -> Iterator[Backend]:
    owned = directory is None
    root = Path(directory or tempfile.mkdtemp(prefix="aibill-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    stem = f"bench-{uuid.uuid4().hex[:8]}"
    ledger, raw = root / f"{stem}-aibill.db", root / f"{stem}-raw.db"
    try:
        # Setup runs with synchronous=OFF (it is not measured); clients reopen with FULL.
        with aibill.connect(f"sqlite:///{ledger}", sqlite_synchronous="OFF") as billing:
            fund(billing, (HOT_MANDATE, *mandate_names()))
            template = record_cycle(billing)
        conn = sqlite_connect(str(raw))
        conn.execute(RAW_ACCOUNTS_DDL)
        conn.execute(RAW_ENTRIES_DDL.format(ts="TEXT"))
        conn.executemany(
            "INSERT INTO raw_accounts VALUES (?, ?)", [(i, 10**12) for i in range(SPREAD + 1)]
        )
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        conn.close()
        yield Backend(
            "sqlite",
            f"sqlite:///{ledger}",
            str(ledger),
            str(raw),
            {"dir": str(root), "journal_mode": mode, "synchronous": str(sync)},
            template,
        )
    finally:
        for path in root.glob(f"{stem}-*"):
            path.unlink(missing_ok=True)
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def pg_backend(admin_url: str) -> Iterator[Backend]:
    database = f"aibill_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(_conninfo(admin_url), autocommit=True)
    admin.execute(f'CREATE DATABASE "{database}"')
    url = make_url(admin_url).set(database=database)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    ledger_url = url.render_as_string(hide_password=False)
    try:
        # Setup is not measured: commit without waiting for the WAL flush, then put
        # the server default back before any client connects.
        admin.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
        with aibill.connect(ledger_url) as billing:
            fund(billing, (HOT_MANDATE, *mandate_names()))
            template = record_cycle(billing)
        admin.execute(f'ALTER DATABASE "{database}" RESET synchronous_commit')
        raw = _conninfo(ledger_url)
        with psycopg.connect(raw) as conn:
            conn.execute(RAW_ACCOUNTS_DDL)
            conn.execute(RAW_ENTRIES_DDL.format(ts="TIMESTAMPTZ"))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO raw_accounts VALUES (%s, %s)",
                    [(i, 10**12) for i in range(SPREAD + 1)],
                )
        with psycopg.connect(raw) as conn:
            info = {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
            }
        yield Backend("postgres", ledger_url, raw, raw, info, template)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


# -------------------------------------------------------------------------- run


def cases_for(backend: str) -> list[Case]:
    out = [Case(backend, c, a, "threads") for c in (1, 16) for a in (1, SPREAD)]
    if backend == "postgres":
        # 64 clients on one account: the raw limit opens 64 connections of the
        # server's 100, so only this case and only as threads.
        out.append(Case(backend, 64, 1, "threads"))
        out += [Case(backend, 16, a, "processes") for a in (1, SPREAD)]
    return out


# What-ifs for the floor: what storing less per cycle would give, as upper bounds.
# Each applies to the throwaway database after the measured cases, cumulatively.
OPTIONAL_INDEXES = (  # used by reports, limits and a belt-and-braces check, not by the cycle
    "ix_holds_mandate_id_status_user_id",
    "ix_entries_mandate_id_user_id_posted_at",
    "ix_entries_mandate_id_feature_instance_posted_at",
    "ix_entries_mandate_id_hold_id",
)
WHAT_IFS = ("no-idempotency-rows", "and-fewer-indexes")


def _without_idempotency_rows(template: Template) -> Template:
    def keep(recorded: Recorded) -> Recorded:
        return tuple(x for x in recorded if not x[0].startswith("INSERT INTO idempotency_keys"))

    return replace(template, hold=keep(template.hold), capture=keep(template.capture))


def apply_what_if(backend: Backend, name: str) -> Backend:
    """The backend with ``name`` applied: a template without the idempotency record
    inserts (as if a successful key cost nothing to keep), then also without the
    indexes the cycle itself never reads."""
    if name == "no-idempotency-rows":
        return replace(backend, template=_without_idempotency_rows(backend.template))
    drops = [f"DROP INDEX {ix}" for ix in OPTIONAL_INDEXES]
    if backend.name == "sqlite":
        conn = sqlite_connect(backend.floor_target)
        for sql in drops:
            conn.execute(sql)
        conn.close()
    else:
        with psycopg.connect(backend.floor_target, autocommit=True) as pg:
            for sql in drops:
                pg.execute(sql)
    return backend


def run_case(backend: Backend, case: Case, timing: Timing) -> Figures:
    mandates: tuple[str, ...]
    raw_accounts: tuple[int, ...]
    if case.accounts == 1:
        mandates, raw_accounts = (HOT_MANDATE,), (0,)
    else:
        mandates, raw_accounts = mandate_names(), tuple(range(1, SPREAD + 1))
    tag = uuid.uuid4().hex[:10]
    return measure(
        Job(
            case,
            backend.aibill_url,
            backend.floor_target,
            backend.raw_target,
            mandates,
            raw_accounts,
            tag,
            timing,
            backend.template,
        )
    )


def line(f: Figures) -> str:
    c = f.case
    return (
        f"{c.backend:<8} clients={c.clients:<3} accounts={c.accounts:<5} "
        f"aibill={f.aibill:.1f}/s floor={f.floor:.1f}/s raw={f.raw:.1f}/s "
        f"ratio={f.ratio:.2f} floor_ratio={f.floor_ratio:.2f}  "
        f"via={c.via} client_cpu={f.client_cpu:.2f} machine_cpu={f.machine_cpu:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs (under a minute)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("AIBILL_BENCH_PG", DEFAULT_PG_URL),
        help="PostgreSQL server to create the throwaway database on "
        f"(default: {DEFAULT_PG_URL}); 'none' skips PostgreSQL",
    )
    parser.add_argument(
        "--sqlite-dir", default=None, help="directory for the SQLite files (default: a temp dir)"
    )
    parser.add_argument(
        "--what-if",
        action="store_true",
        help="after the cases, measure the single-client floor again without the idempotency "
        "record inserts, then also without the indexes the cycle never reads",
    )
    parser.add_argument(
        "--group-commit",
        choices=sorted(GROUP_COMMIT),
        default="auto",
        help="aibill's group commit: auto (the library's default: on for SQLite, off for "
        "PostgreSQL), on or off",
    )
    args = parser.parse_args(argv)
    os.environ["AIBILL_BENCH_GROUP_COMMIT"] = args.group_commit
    timing = QUICK if args.quick else FULL
    began = time.monotonic()

    print(
        f"# aibill {aibill.__version__}  python {platform.python_version()}  "
        f"sqlite {sqlite3.sqlite_version}  psycopg {psycopg.__version__}  "
        f"cpus {os.cpu_count()}  {platform.machine()}  group_commit={args.group_commit}"
    )
    print(
        f"# mode={'quick' if args.quick else 'full'}  warmup={timing.warmup_s}s  "
        f"{timing.slices} alternating slices of {timing.slice_s}s "
        f"(first {timing.settle_s}s of each not counted)  "
        f"cycle = hold({HOLD_AMOUNT}) + capture({CAPTURE_AMOUNT}); "
        "floor = the cycle's recorded statements through the bare driver; "
        "raw = 2 x (UPDATE+INSERT)"
    )
    print(f"# background load before the run: {_background_cpu():.2f} CPU cores busy")
    results: list[Figures] = []
    backends: list[tuple[str, Callable[[], AbstractContextManager[Backend]]]] = [
        ("sqlite", lambda: sqlite_backend(args.sqlite_dir))
    ]
    if args.pg_url.lower() != "none":
        backends.append(("postgres", lambda: pg_backend(args.pg_url)))
    for name, opener in backends:
        with ExitStack() as stack:
            try:
                backend = stack.enter_context(opener())
            except Exception as exc:
                print(f"# {name}: skipped, cannot set up: {type(exc).__name__}: {exc}")
                continue
            print(f"# {name}: " + " ".join(f"{k}={v}" for k, v in backend.info.items()))
            for case in cases_for(name):
                figures = run_case(backend, case, timing)
                results.append(figures)
                print(line(figures), flush=True)
            if args.what_if:
                for what_if in WHAT_IFS:
                    backend = apply_what_if(backend, what_if)
                    for accounts in (1, SPREAD):
                        figures = run_case(backend, Case(name, 1, accounts, "threads"), timing)
                        print(
                            f"# what-if {what_if}: {name} clients=1 accounts={accounts:<5} "
                            f"floor={figures.floor:.1f}/s raw={figures.raw:.1f}/s "
                            f"floor_ratio={figures.floor_ratio:.2f}",
                            flush=True,
                        )

    by_case = {(f.case.backend, f.case.clients, f.case.accounts, f.case.via): f for f in results}
    for accounts in (1, SPREAD):
        one = by_case.get(("postgres", 1, accounts, "threads"))
        for via in ("threads", "processes"):
            many = by_case.get(("postgres", 16, accounts, via))
            if one and many:
                print(
                    f"# postgres accounts={accounts:<5} 16 clients ({via}) vs 1: "
                    f"{many.aibill / one.aibill:.2f}x"
                )
    print(f"# background load after the run: {_background_cpu():.2f} CPU cores busy")
    singles = [f.ratio for f in results if f.case.clients == 1]
    floors = [f.floor_ratio for f in results if f.case.clients == 1]
    if floors:
        print(
            "# floor: aibill's own statements through the bare driver, single client, "
            f"reach {min(floors):.2f}-{max(floors):.2f} of the raw limit"
        )
    print(f"# elapsed {time.monotonic() - began:.1f}s")
    if singles:
        print(f"ratio_min_single_client={min(singles):.2f}")
    for name, (backend, clients, accounts) in HEADLINES.items():
        ratios = [
            f.ratio
            for f in results
            if (f.case.backend, f.case.clients, f.case.via) == (backend, clients, "threads")
            and accounts in (None, f.case.accounts)
        ]
        if ratios:
            print(f"{name}={min(ratios):.2f}")
    return 0


HEADLINES = {
    "ratio_pg_hot_16": ("postgres", 16, 1),
    "ratio_pg_hot_64": ("postgres", 64, 1),
    "ratio_pg_1000_16": ("postgres", 16, SPREAD),
    "ratio_sqlite_16": ("sqlite", 16, None),
}
"""The issue's headline figures: aibill cycles over raw pairs in the same run
(``None``: the lower of the hot account and the spread)."""


if __name__ == "__main__":
    raise SystemExit(main())
