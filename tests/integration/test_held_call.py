"""The hold as gateway code uses it: ``with billing.hold(...) as call`` captures
or releases the hold, embedded exactly as through ``aibill.Client``. Exact
figures, on SQLite and PostgreSQL; the client runs against the HTTP API in
process."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import aibill
from aibill import Billing, HoldStatus, ManualClock, Usage
from aibill.api import create_app
from aibill.client import Client
from aibill.domain.held import HeldCall
from tests.e2e.test_serve import Served, free_port
from tests.integration.test_client import BASE, Wire


def gpt4o(ledger: Billing | Client, key: str, mandate: str = "acme") -> HeldCall:
    """A hold for gpt-4o, 1,200 tokens in and at most 800 out, for alice."""
    return ledger.hold(
        mandate,
        user="alice",
        provider="openai",
        model="gpt-4o",
        input_tokens=1200,
        max_output_tokens=800,
        idempotency_key=key,
    )


class ModelDown(Exception):
    """What a model call raises in these tests."""


@pytest.fixture
def acme(billing: Billing, clock: ManualClock) -> str:
    """A CHF mandate with 100, USD->CHF at 0.80, alice a member, openai registered.
    gpt-4o's estimate for 1,200 in and 800 out is 0.0132 CHF (see test_priced_billing)."""
    billing.create_mandate("acme", currency="CHF")
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    billing.credit("acme", D("100"), idempotency_key="topup")
    billing.pricing.set_exchange_rate("USD", "CHF", D("0.80"), valid_from=clock() - timedelta(1))
    billing.access.register_provider("openai")
    return "acme"


def test_a_call_captured_by_its_usage(billing: Billing, acme: str) -> None:
    with gpt4o(billing, "call-1", acme) as call:
        assert isinstance(call, aibill.Hold) and isinstance(call, HeldCall)
        assert (call.amount, call.status, call.currency) == (
            D("0.013200"),
            HoldStatus.PENDING,
            "CHF",
        )
        assert billing.balance(acme).pending == D("0.013200")
        entry = call.capture(Usage(input_tokens=1200, output_tokens=512))
    assert call.entry == entry and call.released is None and call.resolved
    assert (entry.amount, entry.hold_id, entry.provider_cost) == (
        D("0.009744"),
        call.id,
        D("0.00812"),
    )
    assert billing.get_hold(call.id).status is HoldStatus.CAPTURED
    after = billing.balance(acme)
    assert (after.balance, after.pending) == (D("99.990256"), D("0"))
    assert billing.verify() == []


def test_a_call_captured_by_an_amount(billing: Billing, acme: str) -> None:
    with billing.hold(acme, amount=D("0.6"), user="alice", idempotency_key="call-1") as call:
        entry = call.capture(D("0.25"), description="summary", idempotency_key="cap-1")
    assert (entry.amount, entry.description, entry.reason) == (D("0.25"), "summary", "usage")
    assert call.entry == entry and call.released is None
    captured = billing.get_hold(call.id)
    assert (captured.status, captured.captured_amount) == (HoldStatus.CAPTURED, D("0.25"))
    assert billing.balance(acme).balance == D("99.75")


def test_leaving_the_block_without_capture_releases(billing: Billing, acme: str) -> None:
    with billing.hold(acme, amount=D("0.6"), user="alice", idempotency_key="call-1") as call:
        assert billing.balance(acme).available == D("99.4")
    assert call.entry is None and call.resolved
    assert call.released is not None and call.released.status is HoldStatus.RELEASED
    assert billing.get_hold(call.id).status is HoldStatus.RELEASED
    after = billing.balance(acme)
    assert (after.balance, after.available, after.pending) == (D("100"), D("100"), D("0"))
    assert [e.reason for e in billing.history(acme).entries] == ["payment"]


def test_a_block_that_raises_releases_and_its_exception_propagates_unchanged(
    billing: Billing, acme: str
) -> None:
    failure = ModelDown("the model timed out")
    with (
        pytest.raises(ModelDown) as raised,
        gpt4o(billing, "call-1", acme) as call,
    ):
        raise failure
    assert raised.value is failure and not getattr(failure, "__notes__", [])
    assert billing.get_hold(call.id).status is HoldStatus.RELEASED
    assert billing.balance(acme).pending == D("0")


def test_a_failed_release_does_not_hide_the_blocks_exception(billing: Billing, acme: str) -> None:
    with (
        pytest.raises(ModelDown) as raised,
        billing.hold(acme, amount=D("0.6"), idempotency_key="call-1") as call,
    ):
        billing.capture(call.id, amount=D("0.6"))  # settled elsewhere, behind this object's back
        raise ModelDown("boom")
    assert any("releasing hold" in note for note in raised.value.__notes__)
    assert billing.get_hold(call.id).status is HoldStatus.CAPTURED
    assert billing.balance(acme).balance == D("99.4")


def test_an_explicit_release_is_not_repeated(billing: Billing, acme: str) -> None:
    with billing.hold(acme, amount=D("0.6"), idempotency_key="call-1") as call:
        released = call.release()
    assert call.released == released and released.status is HoldStatus.RELEASED
    assert billing.get_hold(call.id).status is HoldStatus.RELEASED
    with pytest.raises(aibill.HoldAlreadyReleased):
        call.capture(D("0.1"))
    assert billing.balance(acme).balance == D("100")


def test_a_bad_capture_writes_nothing_and_the_block_still_releases(
    billing: Billing, acme: str
) -> None:
    with gpt4o(billing, "call-1", acme) as call:
        with pytest.raises(aibill.InvalidAmount):
            call.capture(0.5)  # type: ignore[arg-type]
        with pytest.raises(aibill.InvalidRequest, match="Usage"):
            call.capture({"input_tokens": 5})  # type: ignore[arg-type]
        assert call.entry is None and billing.get_hold(call.id).status is HoldStatus.PENDING
    assert billing.get_hold(call.id).status is HoldStatus.RELEASED
    assert billing.balance(acme).balance == D("100")


def test_the_hold_equals_the_same_hold_read_back(billing: Billing, acme: str) -> None:
    placed = billing.hold(acme, amount=D("1.5"), user="alice", idempotency_key="call-1")
    read = billing.get_hold(placed.id)
    assert type(read) is aibill.Hold
    assert placed == read and read == placed
    assert dataclasses.asdict(placed) == dataclasses.asdict(read)
    replay = billing.hold(acme, amount=D("1.5"), user="alice", idempotency_key="call-1")
    assert isinstance(replay, HeldCall) and replay.replayed and replay != placed
    assert dataclasses.replace(replay, replayed=False) == placed
    # A replay settles the same hold.
    with replay:
        pass
    assert billing.get_hold(placed.id).status is HoldStatus.RELEASED
    assert billing.balance(acme).pending == D("0")


def test_a_copy_is_not_tied_to_the_ledger(billing: Billing, acme: str) -> None:
    placed = billing.hold(acme, amount=D("1"), idempotency_key="call-1")
    copy = dataclasses.replace(placed, metadata={})
    with pytest.raises(aibill.InvalidRequest, match="by id"):
        copy.capture(D("1"))
    assert billing.get_hold(placed.id).status is HoldStatus.PENDING


# ---------------------------------------------- one gateway, embedded and remote


def gateway(ledger: Billing | Client, request_id: str, *, fail: bool) -> HeldCall:
    """A gateway's handler, written once for either surface."""
    with gpt4o(ledger, request_id) as call:
        if fail:
            raise ModelDown(request_id)
        call.capture(Usage(input_tokens=1200, output_tokens=512))
    return call


@pytest.fixture
def remote(billing: Billing, acme: str) -> Iterator[Client]:
    key = billing.keys.create_key(user="alice", mandate="acme", scopes=["billing:use"]).secret
    with TestClient(create_app(billing, sweep_interval_s=0)) as app:
        http = httpx.Client(transport=Wire(app))
        with Client(BASE, key, http=http, backoff_s=0) as client:
            yield client


@pytest.mark.parametrize("surface", ["embedded", "client"])
def test_the_same_gateway_code_runs_embedded_and_remote(
    billing: Billing, acme: str, remote: Client, surface: str
) -> None:
    ledger: Billing | Client = billing if surface == "embedded" else remote
    done = gateway(ledger, "req-1", fail=False)
    assert isinstance(done, HeldCall) and done.entry is not None
    assert (done.amount, done.entry.amount) == (D("0.013200"), D("0.009744"))
    with pytest.raises(ModelDown, match="req-2"):
        gateway(ledger, "req-2", fail=True)
    assert billing.get_hold(done.id).status is HoldStatus.CAPTURED
    failed = gpt4o(billing, "req-2")  # the same request again: its hold, replayed
    assert failed.replayed and billing.get_hold(failed.id).status is HoldStatus.RELEASED
    assert billing.open_holds(acme) == []
    after = billing.balance(acme)
    assert (after.balance, after.pending) == (D("99.990256"), D("0"))
    assert [e.reason for e in billing.history(acme).entries] == ["usage", "payment"]
    assert billing.verify() == []


@pytest.mark.slow
def test_the_gateway_against_a_real_server(tmp_path: Path) -> None:
    """The same handler through ``aibill.Client`` against ``aibill serve``, with
    the priced check first, as a gateway would run it."""
    db = f"sqlite:///{tmp_path / 'served.db'}"
    served = Served(tmp_path, ["--db", db, "--port", str(free_port())])
    try:
        run_the_gateway_against(served)
    finally:
        served.kill()


def run_the_gateway_against(served: Served) -> None:
    url = served.wait_ready()
    key = served.bootstrap_key()
    assert key is not None, served.stdout
    with Client(url, key) as client:
        client.create_mandate("acme", currency="USD")
        client.add_user("alice")
        client.add_member("acme", "alice")
        client.access.register_provider("openai")
        client.credit("acme", D("1"))
        # gpt-4o, 1,200 in and at most 800 out: 0.011 USD, plus 50 % = 0.0165 USD.
        asked = client.check(
            "acme",
            user="alice",
            provider="openai",
            model="gpt-4o",
            input_tokens=1200,
            max_output_tokens=800,
        )
        assert (asked.allowed, asked.reason, asked.estimate) == (True, "ok", D("0.016500"))
        done = gateway(client, "req-1", fail=False)
        assert done.entry is not None and done.entry.amount == D("0.012180")
        with pytest.raises(ModelDown, match="req-2"):
            gateway(client, "req-2", fail=True)
        assert client.get_hold(done.id).status is HoldStatus.CAPTURED
        assert client.open_holds("acme") == []
        after = client.balance("acme")
        assert (after.balance, after.pending) == (D("0.987820"), D("0.000000"))
    assert served.stop(signal.SIGTERM) == 0, served.stderr
