"""Against a real ``aibill serve`` with 4 worker processes on PostgreSQL:
64 concurrent clients race holds on one account funded for exactly N; and the
Python client's common flow end to end."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import httpx
import pytest

import aibill
from tests.conftest import PostgresServer, need_pg
from tests.e2e.test_serve import free_port, headers

FUNDED_HOLDS = 10
CLIENTS = 64


@pytest.mark.slow
@pytest.mark.postgres
def test_64_clients_race_holds_on_4_workers(launch: Any, pg_server: PostgresServer) -> None:
    need_pg(pg_server)
    url = pg_server.create()
    try:
        served = launch(["--db", url, "--port", str(free_port()), "--workers", "4"])
        base = served.wait_ready()
        key = served.bootstrap_key()
        assert "4 worker processes" in served.stdout, served.stdout
        with httpx.Client(base_url=base, timeout=30) as api:
            assert (
                api.post("/v1/mandates", json={"id": "acme"}, headers=headers(key)).status_code
                == 201
            )
            r = api.post(
                "/v1/mandates/acme/credits",
                json={"amount": str(Decimal("0.50") * FUNDED_HOLDS)},
                headers=headers(key, "fund"),
            )
            assert r.status_code == 201
        start = threading.Barrier(CLIENTS)
        statuses: list[int] = []
        lock = threading.Lock()

        def client(i: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as api:
                start.wait()
                r = api.post(
                    "/v1/mandates/acme/holds",
                    json={"amount": "0.50"},
                    headers=headers(key, f"race-{i}"),
                )
                with lock:
                    statuses.append(r.status_code)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [201] * FUNDED_HOLDS + [402] * (CLIENTS - FUNDED_HOLDS)
        with httpx.Client(base_url=base, timeout=30) as api:
            balance = api.get("/v1/mandates/acme/balance", headers=headers(key)).json()
            assert (balance["pending"], balance["available"]) == ("5.000000", "0.000000")
            assert api.get("/v1/mandates/acme/verify", headers=headers(key)).json() == []
        assert served.stop() == 0, served.stderr
    finally:
        pg_server.drop(url)


@pytest.mark.slow
def test_the_python_client_against_a_real_server(launch: Any, db_url: str) -> None:
    served = launch(["--db", db_url, "--port", str(free_port())])
    base = served.wait_ready()
    key = served.bootstrap_key()
    assert key
    with aibill.Client(base, key) as client:
        client.create_mandate("acme", currency="CHF")
        client.add_user("alice")
        client.add_member("acme", "alice")
        client.credit("acme", Decimal("10"), reason="payment")
        with client.hold("acme", amount=Decimal("2"), user="alice") as call:
            call.capture(Decimal("1.25"))
        with client.hold("acme", amount=Decimal("2"), user="alice"):
            pass  # the call never happened: released
        balance = client.balance("acme")
        assert (balance.balance, balance.pending) == (Decimal("8.75"), Decimal("0"))
        with pytest.raises(aibill.InsufficientBalance):
            client.hold("acme", amount=Decimal("9"), user="alice")
        assert client.verify("acme") == []
    assert served.stop() == 0, served.stderr
