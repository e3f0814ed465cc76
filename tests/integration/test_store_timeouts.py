"""Nothing waits on the database without bound.

A loopback TCP server that accepts connections and never answers stands in for
a database host that hangs: every request answers a prompt 503
``store_unavailable`` with ``Retry-After`` and a message that names no host or
port, while ``/healthz`` keeps answering at once with many such requests in
flight. A statement stuck behind a lock is cancelled after the statement
timeout, and a pool that stays empty is given up after the pool timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy.engine import make_url

import aibill
from aibill import Billing, StoreUnavailable
from aibill.api import create_app
from aibill.store import tx
from aibill.store.engine import StoreTimeouts, make_engine
from tests.conftest import PostgresServer, need_pg

CONNECT_S = 2  # libpq's smallest connect timeout
POOL_S = 1.0
A_KEY = "aibill-admin_" + "a" * 12 + "_" + "b" * 64  # well formed: it must be looked up


class BlackHole:
    """Accepts TCP connections on loopback and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port: int = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://aibill@127.0.0.1:{self.port}/aibill"

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def hanging_billing(hole: BlackHole) -> Billing:
    engine = make_engine(
        hole.url, timeouts=StoreTimeouts(connect_s=CONNECT_S, statement_s=5, pool_s=POOL_S)
    )
    return Billing(engine)


def test_a_database_that_never_answers_costs_one_connect_timeout(black_hole: BlackHole) -> None:
    billing = hanging_billing(black_hole)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            billing.balance("acme")
        elapsed = time.monotonic() - started
    finally:
        billing.close()
    # One connect timeout, not one per retry (the loop has 8 attempts).
    assert CONNECT_S - 0.5 < elapsed < CONNECT_S + 1.5, elapsed
    assert refused.value.code == "store_unavailable"
    message = refused.value.message
    assert str(black_hole.port) not in message and "127.0.0.1" not in message


class ServerThread:
    """uvicorn serving ``app`` on a free port, in this process."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def test_requests_answer_503_promptly_and_healthz_stays_up(black_hole: BlackHole) -> None:
    billing = hanging_billing(black_hole)
    served = ServerThread(create_app(billing, sweep_interval_s=0))
    in_flight = 90

    def balance(_: int) -> tuple[float, httpx.Response]:
        started = time.monotonic()
        r = httpx.get(
            f"{served.base_url}/v1/mandates/acme/balance",
            headers={"Authorization": f"Bearer {A_KEY}"},
            timeout=60,
        )
        return time.monotonic() - started, r

    try:
        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            answers = pool.map(balance, range(in_flight))
            time.sleep(0.5)  # every request is now waiting on the database
            health: list[float] = []
            for _ in range(5):
                started = time.monotonic()
                r = httpx.get(f"{served.base_url}/healthz", timeout=5)
                health.append(time.monotonic() - started)
                assert r.status_code == 200 and r.json() == {"status": "ok"}
            ready = httpx.get(f"{served.base_url}/readyz", timeout=30)
            results = list(answers)
    finally:
        served.stop()
        billing.close()
    # A /healthz that needed a thread would queue behind the 90 requests, each
    # holding one for a connect timeout: seconds. On the event loop it answers at
    # once; the bound leaves room for a busy machine.
    assert max(health) < 1.5, health
    # Each request waits at most for a connection (connect timeout) or for the
    # pool (pool timeout), then for a thread the ones before it freed.
    bound_s = 3 * (CONNECT_S + POOL_S) + 1
    for elapsed, r in results:
        assert r.status_code == 503, r.text
        assert elapsed < bound_s, elapsed
        body = r.json()
        assert body["code"] == "store_unavailable"
        assert int(r.headers["Retry-After"]) >= 1
        assert str(black_hole.port) not in r.text and "127.0.0.1" not in r.text
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "unreachable"}
    assert str(black_hole.port) not in ready.text and "127.0.0.1" not in ready.text


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    need_pg(pg_server)
    url = pg_server.create()
    yield url
    pg_server.drop(url)


def test_a_statement_stuck_behind_a_lock_is_cancelled(pg_url: str) -> None:
    aibill.connect(pg_url).create_mandate("acme", currency="CHF")
    engine = make_engine(pg_url, timeouts=StoreTimeouts(statement_s=1.0))
    billing = Billing(engine)
    conninfo = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as locker:
        locker.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            billing.credit("acme", Decimal("5.00"), idempotency_key="behind-the-lock")
        elapsed = time.monotonic() - started
        locker.rollback()
    try:
        assert 0.9 < elapsed < 3, elapsed
        assert "statement" not in refused.value.message.lower()  # the driver's text is logged
        # Once the lock is gone the same call goes through: nothing was half-written.
        assert billing.balance("acme").balance == 0
        billing.credit("acme", Decimal("5.00"), idempotency_key="behind-the-lock")
        assert str(billing.balance("acme").balance) == "5.000000"
    finally:
        billing.close()


def test_an_empty_pool_is_given_up_after_the_pool_timeout(db_url: str) -> None:
    aibill.connect(db_url).close()
    engine = make_engine(db_url, pool_size=1, timeouts=StoreTimeouts(pool_s=POOL_S))
    held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]  # type: ignore[attr-defined]
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            tx.run(engine, lambda conn: None)
        elapsed = time.monotonic() - started
        assert POOL_S - 0.2 < elapsed < POOL_S + 1.5, elapsed
    finally:
        for conn in held:
            conn.close()
    assert tx.run(engine, lambda conn: 42) == 42  # a free connection is used again
    engine.dispose()


def test_the_timeouts_are_checked() -> None:
    with pytest.raises(aibill.InvalidRequest, match="connect_s"):
        StoreTimeouts(connect_s=0)
    with pytest.raises(aibill.InvalidRequest, match="statement_s"):
        StoreTimeouts(statement_s=-1)
    args = StoreTimeouts(connect_s=0.5, statement_s=2.5).postgres_connect_args("-c search_path=x")
    assert args == {
        "connect_timeout": 2,
        "options": "-c search_path=x -c statement_timeout=2500",
    }
