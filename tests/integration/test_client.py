"""``aibill.client.Client`` against the HTTP API in process, on SQLite and
PostgreSQL: the library's surface and value types over HTTP, exact money,
errors as aibill's classes, automatic idempotency keys, safe retries, and the
hold as a context manager."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import aibill
from aibill import Billing, HoldStatus, ManualClock, Usage
from aibill.api import create_app
from aibill.client import Client, HeldCall, ServiceUnavailable

BASE = "http://testserver"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Wire(httpx.BaseTransport):
    """The app in process behind a wire that can fail on cue.

    Each scripted fault applies to one request, in order: ``refuse`` (a
    connection error before the service sees the request), ``drop`` (the
    service handles it, then the connection breaks before the answer
    arrives), ``503`` / ``502`` (a proxy answers instead of the service).
    """

    def __init__(self, app: TestClient) -> None:
        self.app = app
        self.script: list[str | None] = []
        self.requests: list[httpx.Request] = []
        self.handled = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        fault = self.script.pop(0) if self.script else None
        if fault == "refuse":
            raise httpx.ConnectError("connection refused", request=request)
        if fault in ("502", "503"):
            return httpx.Response(int(fault), text="bad gateway", request=request)
        answer = self.app.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.content
        )
        self.handled += 1
        if fault == "drop":
            raise httpx.ConnectError("connection reset by peer", request=request)
        return httpx.Response(
            answer.status_code,
            headers=list(answer.headers.multi_items()),
            content=answer.content,
            request=request,
        )

    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.requests]


@dataclasses.dataclass
class Service:
    app: TestClient
    billing: Billing
    clock: ManualClock
    root_key: str
    alice_key: str

    def client(self, key: str, *, retries: int = 3) -> tuple[Client, Wire]:
        wire = Wire(self.app)
        http = httpx.Client(transport=wire)
        return Client(BASE, key, http=http, retries=retries, backoff_s=0), wire


@pytest.fixture
def service(billing: Billing, clock: ManualClock) -> Iterator[Service]:
    """The API in process; keys of a system admin (root) and of a member of acme (alice)."""
    billing.add_user("root")
    billing.access.add_sysadmin("root")
    root = billing.keys.create_key(user="root", mandate=None, scopes=["billing:admin"]).secret
    billing.access.register_provider("openai")
    billing.create_mandate("acme", currency="USD")
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    alice = billing.keys.create_key(
        user="alice", mandate="acme", scopes=["billing:use", "billing:read"]
    ).secret
    with TestClient(create_app(billing, sweep_interval_s=0)) as app:
        yield Service(app, billing, clock, root, alice)


@pytest.fixture
def admin(service: Service) -> Iterator[Client]:
    client, _ = service.client(service.root_key)
    with client:
        yield client


@pytest.fixture
def member(service: Service) -> Iterator[Client]:
    client, _ = service.client(service.alice_key)
    with client:
        yield client


def no_floats(value: Any, where: str = "result") -> None:
    """Nothing parsed is a float, and every datetime is timezone-aware."""
    assert not isinstance(value, float), f"{where} is a float: {value!r}"
    if isinstance(value, datetime):
        assert value.tzinfo is not None, f"{where} is a naive datetime"
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            no_floats(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, dict):
        for k, v in value.items():
            no_floats(v, f"{where}[{k!r}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            no_floats(v, f"{where}[{i}]")


# ------------------------------------------------------------------ the flow


def test_the_full_flow_with_exact_figures(service: Service, admin: Client, member: Client) -> None:
    results: list[object] = []
    mandate = admin.create_mandate("acme", currency="USD")  # exists: returned as it is
    assert (mandate.id, mandate.billing_model, mandate.currency) == (
        "acme",
        aibill.BillingModel.PREPAY_MANDATE,
        "USD",
    )
    assert mandate == member.get_mandate("acme")
    assert admin.add_user("carol") == "carol"
    admin.add_member("acme", "carol", role="member")

    credit = admin.credit("acme", D("10"), idempotency_key="payment-1")
    assert (credit.kind, credit.amount, credit.balance_after) == (
        aibill.EntryKind.CREDIT,
        D("10.000000"),
        D("10.000000"),
    )
    assert credit.posted_at == NOW and not credit.replayed
    assert admin.credit("acme", D("10"), idempotency_key="payment-1").replayed

    check = member.check("acme", estimate=D("0.0165"), user="alice", provider="openai")
    assert (check.allowed, check.reason, check.available, check.estimate) == (
        True,
        "ok",
        D("10.000000"),
        D("0.016500"),
    )
    charge = member.estimate(
        "acme", provider="openai", model="gpt-4o", input_tokens=1200, max_output_tokens=800
    )
    assert isinstance(charge, aibill.Charge)
    assert (charge.provider_cost, charge.fx_rate, charge.markup_percent, charge.amount) == (
        D("0.011"),
        D("1"),
        D("50"),
        D("0.016500"),
    )
    assert charge.usage == Usage(input_tokens=1200, output_tokens=800)
    assert (charge.amount_micros, charge.at) == (16500, NOW)

    with member.hold(
        "acme",
        user="alice",
        provider="openai",
        model="gpt-4o",
        input_tokens=1200,
        max_output_tokens=800,
        metadata={"request": "r-1", "attempt": 1},
    ) as h:
        assert isinstance(h, aibill.Hold) and isinstance(h, HeldCall)
        assert (h.amount, h.status, h.user, h.model_matched) == (
            D("0.016500"),
            HoldStatus.PENDING,
            "alice",
            "gpt-4o",
        )
        assert h.expires_at == NOW + timedelta(seconds=900)
        assert h.metadata == {"request": "r-1", "attempt": 1}
        pending = member.balance("acme")
        assert (pending.balance, pending.pending, pending.available) == (
            D("10.000000"),
            D("0.016500"),
            D("9.983500"),
        )
        entry = h.capture(Usage(input_tokens=1200, output_tokens=512))
    assert h.entry == entry and h.released is None
    assert (entry.amount, entry.provider_cost, entry.balance_after, entry.hold_id) == (
        D("0.012180"),
        D("0.00812"),
        D("9.987820"),
        h.id,
    )
    captured = member.get_hold(h.id)
    assert (captured.status, captured.captured_amount, captured.entry_id) == (
        HoldStatus.CAPTURED,
        D("0.012180"),
        entry.id,
    )

    usage = member.record_usage(
        "acme",
        amount=D("0.5"),
        user="alice",
        feature_code="summary",
        description="batch job",
    )
    assert (usage.amount, usage.balance_after, usage.feature_code) == (
        D("0.500000"),
        D("9.487820"),
        "summary",
    )
    balance = member.balance("acme")
    assert balance == aibill.Balance(
        balance=D("9.487820"),
        available=D("9.487820"),
        pending=D("0.000000"),
        currency="USD",
        account="pool",
        mandate="acme",
        credits_posted=D("10.000000"),
        debits_posted=D("0.512180"),
        overdraft_limit=D("0.000000"),
    )
    # The same figures as the library reports for the same ledger.
    assert balance == service.billing.balance("acme")

    first = member.history("acme", limit=2)
    assert [e.amount for e in first.entries] == [D("0.500000"), D("0.012180")]
    assert first.cursor is not None
    rest = member.history("acme", limit=2, cursor=first.cursor)
    assert [e.amount for e in rest.entries] == [D("10.000000")] and rest.cursor is None
    debits = member.history(
        "acme", kind=aibill.EntryKind.DEBIT, since=NOW, until=NOW + timedelta(1)
    )
    assert len(debits.entries) == 2
    assert member.history("acme", hold_id=h.id).entries == [entry]
    assert member.verify("acme") == []

    results += [mandate, credit, check, charge, h, entry, captured, usage, balance, first, rest]
    no_floats(results)


def test_parsed_results_equal_the_librarys(service: Service, admin: Client) -> None:
    entry = admin.credit("acme", D("3.25"), idempotency_key="c", description="top-up")
    assert entry == dataclasses.replace(service.billing.history("acme").entries[0], replayed=False)
    held = admin.hold("acme", amount=D("1.5"), ttl_s=60)
    assert dataclasses.asdict(service.billing.get_hold(held.id)) == dataclasses.asdict(held)


# --------------------------------------------------------------------- errors


def test_errors_are_raised_as_aibills_classes(service: Service, admin: Client) -> None:
    alice, _ = service.client(service.alice_key)
    with pytest.raises(aibill.InsufficientBalance) as short:
        alice.hold("acme", amount=D("5"), user="alice")
    assert short.value.required == D("5.000000") and short.value.available == D("0.000000")
    assert short.value.details["currency"] == "USD"
    assert "Insufficient balance" in short.value.message

    with pytest.raises(aibill.PermissionDenied):
        alice.credit("acme", D("1"))
    with pytest.raises(aibill.PermissionDenied):
        alice.create_mandate("gamma")
    with pytest.raises(aibill.InvalidApiKey) as bad:
        service.client(service.alice_key[:-4] + "0000")[0].balance("acme")
    assert bad.value.message == "The API key is not valid."
    with pytest.raises(aibill.HoldNotFound):
        alice.get_hold("acme:hold_nope")
    with pytest.raises(aibill.ProviderNotAllowed) as forbidden:
        alice.hold("acme", user="alice", provider="mistral", amount=D("0.01"))
    assert forbidden.value.details["provider"] == "mistral"

    admin.credit("acme", D("1"), idempotency_key="same")
    with pytest.raises(aibill.IdempotencyConflict) as conflict:
        admin.credit("acme", D("2"), idempotency_key="same")
    assert conflict.value.field == "amount"

    with pytest.raises(aibill.InvalidRequest):
        admin.create_mandate("gamma", currency="usd")
    with pytest.raises(aibill.InvalidRequest) as page:
        admin.history("acme", limit=5000)
    assert page.value.details["errors"][0]["field"] == "limit"

    service.billing.set_spending_limit("acme", D("0.5"), user="alice", period="day")
    with pytest.raises(aibill.LimitExceeded) as limited:
        alice.hold("acme", user="alice", amount=D("0.75"))
    assert limited.value.details["limit"] == "0.500000"

    held = admin.hold("acme", amount=D("0.25"))
    held.capture(D("0.25"))
    with pytest.raises(aibill.HoldAlreadyCaptured):
        admin.release(held.id)


def test_a_refusal_is_sent_once_and_replayed_under_its_key(service: Service) -> None:
    alice, wire = service.client(service.alice_key)
    for _ in range(2):
        with pytest.raises(aibill.InsufficientBalance):
            alice.hold("acme", amount=D("5"), idempotency_key="big")
    assert len(wire.requests) == 2  # a 4xx is never retried
    assert wire.keys() == ["big", "big"]


def test_unknown_codes_and_foreign_errors_are_aibill_errors() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/balance"):
            return httpx.Response(
                418,
                json={
                    "type": "x",
                    "title": "Teapot",
                    "status": 418,
                    "detail": "I am a teapot",
                    "code": "teapot",
                },
                headers={"content-type": "application/problem+json"},
            )
        return httpx.Response(500, text="Internal Server Error")

    http = httpx.Client(transport=httpx.MockTransport(answer))
    client = Client(BASE, "key", http=http, backoff_s=0)
    with pytest.raises(aibill.AibillError) as teapot:
        client.balance("acme")
    assert type(teapot.value) is aibill.AibillError
    assert teapot.value.message == "I am a teapot"
    assert teapot.value.details == {"code": "teapot", "status": 418}
    with pytest.raises(aibill.AibillError) as crash:
        client.get_hold("acme:hold_x")
    assert type(crash.value) is aibill.AibillError and crash.value.details["status"] == 500


def test_bad_money_is_refused_before_anything_is_sent(service: Service) -> None:
    alice, wire = service.client(service.alice_key)
    with pytest.raises(aibill.InvalidAmount):
        alice.hold("acme", amount=0.1)  # type: ignore[arg-type]
    with pytest.raises(aibill.InvalidAmount):
        alice.check("acme", estimate=D("0.0000001"))
    with pytest.raises(aibill.InvalidAmount):
        alice.record_usage("acme", amount=D("-1"))
    with pytest.raises(aibill.InvalidRequest):
        alice.capture("acme:hold_x")
    assert wire.requests == []


# ----------------------------------------------------------- idempotency keys


def test_every_write_gets_its_own_key(service: Service, admin: Client) -> None:
    admin.credit("acme", D("10"), idempotency_key="pay")
    alice, wire = service.client(service.alice_key)
    first = alice.hold("acme", amount=D("1"), user="alice")
    second = alice.hold("acme", amount=D("1"), user="alice")
    assert first.id != second.id and not first.replayed and not second.replayed
    assert alice.balance("acme").pending == D("2.000000")
    first.release()
    second.capture(D("0.4"))
    keys = wire.keys()
    assert keys[2] is None  # a read carries no key
    writes = [k for k in keys if k is not None]
    assert len(writes) == 4 == len(set(writes))
    assert all(uuid.UUID(k).version == 4 for k in writes)


def test_a_lost_answer_is_retried_under_the_same_key_and_holds_once(
    service: Service, admin: Client
) -> None:
    admin.credit("acme", D("10"), idempotency_key="pay")
    alice, wire = service.client(service.alice_key)
    wire.script = ["drop"]  # the service places the hold; its answer is lost
    hold = alice.hold("acme", amount=D("2.5"), user="alice")
    assert wire.handled == 2 and len(wire.requests) == 2
    assert wire.keys()[0] == wire.keys()[1] is not None
    assert hold.replayed and hold.amount == D("2.500000") and hold.status is HoldStatus.PENDING
    balance = alice.balance("acme")
    assert (balance.pending, balance.available) == (D("2.500000"), D("7.500000"))

    wire.script = ["drop", "503"]  # the capture too: it posts one debit
    entry = hold.capture(D("2"))
    assert entry.replayed and entry.amount == D("2.000000")
    assert len(set(wire.keys()[-3:])) == 1
    debits = alice.history("acme", kind="debit").entries
    assert [e.id for e in debits] == [entry.id]
    assert alice.balance("acme").balance == D("8.000000")
    assert alice.verify("acme") == []


def test_reads_are_retried_and_retries_are_bounded(service: Service) -> None:
    alice, wire = service.client(service.alice_key, retries=2)
    wire.script = ["refuse", "502"]
    assert alice.balance("acme").balance == D("0.000000")
    assert len(wire.requests) == 3 and wire.handled == 1

    wire.script = ["refuse"] * 3
    with pytest.raises(ServiceUnavailable) as down:
        alice.balance("acme")
    assert isinstance(down.value, aibill.AibillError) and "3 attempt" in down.value.message
    wire.script = ["503"] * 3
    with pytest.raises(ServiceUnavailable) as busy:
        alice.hold("acme", amount=D("1"), idempotency_key="h-503")
    assert busy.value.details["status"] == 503 and busy.value.details["idempotency_key"] == "h-503"
    assert wire.handled == 1  # none of the failed attempts reached the service


def test_backoff_grows_and_is_capped(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    for backoff_s, bounds in (
        (0.1, [(0.05, 0.1), (0.1, 0.2), (0.2, 0.4)]),
        (2.0, [(1.0, 2.0), (2.0, 4.0), (2.5, 5.0)]),
    ):
        wire = Wire(service.app)
        http = httpx.Client(transport=wire)
        client = Client(BASE, service.alice_key, http=http, retries=3, backoff_s=backoff_s)
        waits: list[float] = []
        monkeypatch.setattr(client, "_sleep", waits.append)
        wire.script = ["refuse"] * 3
        assert client.balance("acme").balance == D("0.000000")
        assert len(waits) == 3
        for wait, (low, high) in zip(waits, bounds, strict=True):
            assert low <= wait <= high


# ------------------------------------------------------- the context manager


def test_leaving_the_block_without_capture_releases(service: Service, admin: Client) -> None:
    admin.credit("acme", D("1"), idempotency_key="pay")
    with admin.hold("acme", amount=D("0.6")) as h:
        assert admin.balance("acme").available == D("0.400000")
    assert h.released is not None and h.released.status is HoldStatus.RELEASED
    assert h.entry is None
    assert admin.get_hold(h.id).status is HoldStatus.RELEASED
    assert admin.balance("acme").available == D("1.000000")


def test_an_exception_in_the_block_releases_and_propagates(service: Service, admin: Client) -> None:
    admin.credit("acme", D("1"), idempotency_key="pay")
    with (
        pytest.raises(TimeoutError, match="the model timed out"),
        admin.hold("acme", amount=D("0.6")) as h,
    ):
        raise TimeoutError("the model timed out")
    assert admin.get_hold(h.id).status is HoldStatus.RELEASED
    assert admin.balance("acme").pending == D("0.000000")


def test_a_failed_release_does_not_hide_the_blocks_exception(
    service: Service, admin: Client
) -> None:
    admin.credit("acme", D("1"), idempotency_key="pay")
    with (
        pytest.raises(ValueError, match="boom") as raised,
        admin.hold("acme", amount=D("0.6")) as h,
    ):
        service.billing.capture(h.id, amount=D("0.6"))  # captured behind the client's back
        raise ValueError("boom")
    assert any("releasing hold" in note for note in raised.value.__notes__)
    assert admin.get_hold(h.id).status is HoldStatus.CAPTURED


def test_a_captured_hold_is_not_released(service: Service, admin: Client) -> None:
    admin.credit("acme", D("1"), idempotency_key="pay")
    with admin.hold("acme", amount=D("0.6")) as h:
        entry = h.capture(D("0.25"))
    assert h.released is None and h.entry == entry
    assert admin.get_hold(h.id).status is HoldStatus.CAPTURED
    assert admin.balance("acme").balance == D("0.750000")


# ------------------------------------------------------------------ lifecycle


def test_the_client_closes_what_it_opened(service: Service) -> None:
    with Client(BASE, "key") as own:
        pass
    assert own._http.is_closed
    http = httpx.Client(transport=Wire(service.app))
    with Client(BASE, service.alice_key, http=http) as borrowed:
        borrowed.balance("acme")
    assert not http.is_closed
    assert service.alice_key not in repr(borrowed)
    with pytest.raises(aibill.InvalidRequest):
        Client("testserver", "key")
