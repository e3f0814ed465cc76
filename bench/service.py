"""HTTP throughput: check + hold + capture cycles through a running ``aibill serve``.

For SQLite and PostgreSQL, the benchmark starts ``python -m aibill serve`` on a
fresh database, then N concurrent clients (threads, one ``httpx.Client`` each)
run cycles of ``POST check``, ``POST holds``, ``POST capture`` against one
funded mandate. It prints cycles/s and the p50/p99 latency of each step; in
the same run, the same cycles through the in-process library on the same
kind of database (``library=``), so ``ratio`` is what HTTP costs on top, and
the CPU time the server's processes spent per HTTP request (``server_cpu=``,
on Linux), which moves less than a rate when other work shares the machine.

    .venv/bin/python bench/service.py --quick     # about a minute
    .venv/bin/python bench/service.py             # longer, steadier
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on the path, and this file
# would stand in for the standard library's ``http`` package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import aibill

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pg_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    name = f"aibill_http_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(False), drop


class Server:
    def __init__(self, url: str, workdir: Path, workers: int) -> None:
        self.out = workdir / "serve.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIBILL_")}
        port = free_port()
        with self.out.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aibill",
                    "serve",
                    "--db",
                    url,
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                ],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            found = re.search(r"export AIBILL_KEY=(\S+)", self.out.read_text())
            if found and "listening on" in self.out.read_text():
                try:
                    if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                        self.key = found.group(1)
                        return
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"aibill serve did not start:\n{self.out.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def cpu_s(self) -> float | None:
        """CPU seconds used so far by the server and its worker processes (Linux's
        /proc; None elsewhere). Steadier than a rate on a shared machine."""
        total, pending = 0.0, [self.proc.pid]
        try:
            while pending:
                pid = pending.pop()
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                pending += [int(c) for c in children]
        except (OSError, ValueError, IndexError):
            return None
        return total


def http_cycles(
    base: str, key: str, clients: int, seconds: float
) -> tuple[float, dict[str, list[float]]]:
    auth = {"Authorization": f"Bearer {key}"}
    steps: dict[str, list[float]] = {"check": [], "hold": [], "capture": []}
    lock = threading.Lock()
    done = [0]
    stop_at = time.perf_counter() + seconds

    def client(n: int) -> None:
        local: dict[str, list[float]] = {k: [] for k in steps}
        count = 0
        with httpx.Client(base_url=base, timeout=30) as api:
            while time.perf_counter() < stop_at:
                tag = f"{n}-{count}-{uuid.uuid4().hex[:6]}"
                t0 = time.perf_counter()
                r = api.post("/v1/mandates/bench/check", json={"estimate": "0.50"}, headers=auth)
                t1 = time.perf_counter()
                r = api.post(
                    "/v1/mandates/bench/holds",
                    json={"amount": "0.50"},
                    headers={**auth, "Idempotency-Key": f"h-{tag}"},
                )
                t2 = time.perf_counter()
                r = api.post(
                    f"/v1/holds/{r.json()['id']}/capture",
                    json={"amount": "0.31"},
                    headers={**auth, "Idempotency-Key": f"c-{tag}"},
                )
                t3 = time.perf_counter()
                assert r.status_code == 200, r.text
                local["check"].append(t1 - t0)
                local["hold"].append(t2 - t1)
                local["capture"].append(t3 - t2)
                count += 1
        with lock:
            done[0] += count
            for k, v in local.items():
                steps[k].extend(v)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.perf_counter() - started), steps


def library_cycles(url: str, clients: int, seconds: float) -> float:
    billing = aibill.connect(url, pool_size=max(5, clients))
    billing.create_mandate("lib")
    billing.credit("lib", Decimal("1000000"), idempotency_key="fund")
    done = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(n: int) -> None:
        count = 0
        while time.perf_counter() < stop_at:
            tag = f"{n}-{count}"
            billing.check("lib", estimate=Decimal("0.50"))
            hold = billing.hold("lib", amount=Decimal("0.50"), idempotency_key=f"h{tag}")
            billing.capture(hold.id, amount=Decimal("0.31"), idempotency_key=f"c{tag}")
            count += 1
        with lock:
            done[0] += count

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    billing.close()
    return done[0] / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--pg-url", default=PG_ADMIN, help="PostgreSQL server; 'none' skips it")
    args = parser.parse_args()
    seconds = 4.0 if args.quick else 15.0
    print(f"# aibill {aibill.__version__}  python {sys.version.split()[0]}  cpus {os.cpu_count()}")
    print(f"# cycle = POST check + POST holds + POST capture; {seconds:.0f} s per case")
    backends = ["sqlite"] + ([] if args.pg_url == "none" else ["postgres"])
    ratios_8: list[float] = []
    p99s_8: list[float] = []
    for backend in backends:
        workdir = Path(tempfile.mkdtemp(prefix="aibill-http-bench-"))
        drop: Callable[[], None] = lambda: None  # noqa: E731
        if backend == "sqlite":
            url, lib_url, workers = (
                f"sqlite:///{workdir / 'serve.db'}",
                f"sqlite:///{workdir / 'lib.db'}",
                1,
            )
        else:
            url, drop = pg_database(args.pg_url)
            lib_url, workers = url, 2
        server = Server(url, workdir, workers)
        try:
            auth = {"Authorization": f"Bearer {server.key}"}
            httpx.post(f"{server.base}/v1/mandates", json={"id": "bench"}, headers=auth)
            httpx.post(
                f"{server.base}/v1/mandates/bench/credits",
                json={"amount": "1000000"},
                headers={**auth, "Idempotency-Key": "fund"},
            )
            for clients in (1, 8):
                cpu_before = server.cpu_s()
                rate, steps = http_cycles(server.base, server.key, clients, seconds)
                cpu_after = server.cpu_s()
                lib = library_cycles(lib_url, clients, seconds)
                latency = "  ".join(
                    f"{k}_p50={pct(v, 0.5):.1f}ms {k}_p99={pct(v, 0.99):.1f}ms"
                    for k, v in steps.items()
                )
                requests = sum(len(v) for v in steps.values())
                cpu = "n/a"
                if cpu_before is not None and cpu_after is not None and requests:
                    cpu = f"{1000 * (cpu_after - cpu_before) / requests:.2f}ms"
                print(
                    f"{backend:<8} workers={workers} clients={clients:<2} http={rate:.1f}/s "
                    f"library={lib:.1f}/s ratio={rate / lib:.2f}  server_cpu={cpu}/request"
                    f"  {latency}",
                    flush=True,
                )
                if clients == 8:
                    ratios_8.append(rate / lib)
                    p99s_8 += [pct(v, 0.99) for v in steps.values()]
        finally:
            server.stop()
            drop()
    # The headline figures, at 8 clients over both backends.
    if ratios_8:
        print(f"http_library_ratio_min={min(ratios_8):.2f}")
        print(f"p99_ms_max={max(p99s_8):.1f}")


if __name__ == "__main__":
    main()
