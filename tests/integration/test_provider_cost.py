"""A usage priced from the provider's own cost: ``record_usage(provider_cost=...)``
converts it at the rate in force, marks it up and rounds once, like a call
priced from tokens, and keeps the whole breakdown. In the library, over HTTP
and through ``aibill.Client``; exact figures, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import aibill
from aibill import Billing, ManualClock
from aibill.api import create_app
from aibill.client import Client


@pytest.fixture
def acme(billing: Billing, clock: ManualClock) -> str:
    """A CHF pool with 1 CHF, a USD->CHF rate of 0.80, alice a member who may use openai."""
    billing.create_mandate("acme", billing_model="prepay_mandate", currency="CHF")
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    billing.credit("acme", D("1"), idempotency_key="topup")
    billing.pricing.set_exchange_rate(
        "USD", "CHF", D("0.80"), valid_from=clock() - timedelta(days=1)
    )
    billing.access.register_provider("openai")
    return "acme"


def record(billing: Billing | Client, key: str = "u", **kw: Any) -> aibill.Entry:
    args: dict[str, Any] = {"user": "alice", "provider": "openai", "provider_cost": D("0.10")}
    args.update(kw)
    return billing.record_usage("acme", idempotency_key=key, **args)


def test_a_provider_cost_is_converted_marked_up_and_kept(billing: Billing, acme: str) -> None:
    """0.10 USD * 0.80 = 0.08 CHF, plus 50 % = 0.12 CHF."""
    told = billing.pricing.price_cost(acme, D("0.10"), provider="openai")
    entry = record(billing, workflow_id="wf-1")
    assert told.amount == entry.amount == D("0.120000") and entry.currency == "CHF"
    assert (entry.provider_cost, entry.provider_currency) == (D("0.1"), "USD")
    assert (entry.fx_rate, entry.markup_percent, entry.price_source) == (
        D("0.8"),
        D("50"),
        "caller",
    )
    assert (entry.provider, entry.model, entry.input_tokens) == ("openai", None, None)
    assert entry.breakdown is not None and entry.breakdown["usage"] is None
    assert entry.breakdown["price"] == {"source": "caller", "scope": "caller"}
    assert D(entry.breakdown["converted_cost"]) == D("0.08")
    assert billing.balance(acme).balance == D("0.88")
    [stored] = billing.history(acme, kind="debit").entries
    assert stored == entry


def test_the_markup_of_the_named_provider_and_model_applies(billing: Billing, acme: str) -> None:
    billing.pricing.set_markup(D("25"), mandate=acme, provider="openai", model="gpt-4o")
    entry = record(billing, model="gpt-4o", provider_cost=D("0.2"))
    assert entry.amount == D("0.200000") and entry.markup_percent == D("25")  # 0.16 * 1.25
    assert entry.model == "gpt-4o"


def test_another_provider_currency_needs_its_own_rate(billing: Billing, acme: str) -> None:
    with pytest.raises(aibill.MissingExchangeRate) as err:
        record(billing, provider_currency="EUR")
    assert err.value.code == "missing_exchange_rate"
    assert billing.history(acme, kind="debit").entries == []
    entry = record(billing, key="chf", provider_currency="CHF", provider_cost=D("0.1"))
    assert entry.amount == D("0.150000") and entry.fx_rate == D("1")


def test_a_retry_with_the_same_key_posts_once(billing: Billing, acme: str) -> None:
    first = record(billing)
    again = record(billing, provider_cost=D("0.100"))  # the same cost, written otherwise
    assert again.id == first.id and again.replayed
    assert billing.balance(acme).balance == D("0.88")
    with pytest.raises(aibill.IdempotencyConflict):
        record(billing, provider_cost=D("0.11"))
    with pytest.raises(aibill.IdempotencyConflict):
        record(billing, provider_currency="EUR")


def test_a_prepaid_mandate_refuses_what_it_cannot_pay(billing: Billing, acme: str) -> None:
    with pytest.raises(aibill.InsufficientBalance):
        record(billing, provider_cost=D("1"))  # 1.20 CHF of 1 CHF
    assert billing.balance(acme).balance == D("1")
    entry = record(billing, key="done", provider_cost=D("1"), already_happened=True)
    assert entry.over_balance and entry.shortfall == D("0.200000")


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"provider_cost": 0.1}, "provider_cost"),
        ({"provider_cost": D("0")}, "provider_cost"),
        ({"provider_cost": D("-0.1")}, "provider_cost"),
        ({"provider_cost": D("0.0000000000001")}, "provider_cost"),  # finer than 10^-12
        ({"provider_cost": D("1e7")}, "provider_cost"),
        ({"provider_currency": "usd"}, "provider_currency"),
        ({"amount": D("1")}, "amount"),
        (
            {"provider_cost": None, "provider_currency": "USD", "amount": D("1")},
            "provider_currency",
        ),
    ],
)
def test_a_bad_request_writes_nothing(
    billing: Billing, acme: str, kw: dict[str, Any], field: str
) -> None:
    with pytest.raises(aibill.InvalidRequest) as err:
        record(billing, **kw)
    assert err.value.details.get("field") == field
    assert billing.history(acme, kind="debit").entries == []


# ------------------------------------------------------------------- HTTP


@pytest.fixture
def remote(billing: Billing, acme: str) -> Iterator[Client]:
    """alice's client to the API in process."""
    key = billing.keys.create_key(user="alice", mandate=acme, scopes=["billing:use"]).secret
    with TestClient(create_app(billing, sweep_interval_s=0)) as app:
        http = httpx.Client(transport=_Transport(app))
        with Client("http://testserver", key, http=http, retries=0) as client:
            yield client


class _Transport(httpx.BaseTransport):
    def __init__(self, app: TestClient) -> None:
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.app.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.content
        )
        return httpx.Response(
            answer.status_code,
            headers=list(answer.headers.multi_items()),
            content=answer.content,
            request=request,
        )


def test_the_client_posts_what_the_library_posts(
    billing: Billing, acme: str, remote: Client
) -> None:
    entry = record(remote, key="wire", provider_cost=D("0.123456789012"))
    assert entry == billing.history(acme, kind="debit").entries[0]
    # 0.123456789012 * 0.80 * 1.5 = 0.1481481468144 -> 0.148148
    assert entry.amount == D("0.148148") and entry.provider_cost == D("0.123456789012")
    assert entry.breakdown is not None and entry.breakdown["provider_cost"] == "0.123456789012"
    again = record(remote, key="wire", provider_cost=D("0.123456789012"))
    assert again.id == entry.id and billing.balance(acme).balance == D("0.851852")
    with pytest.raises(aibill.InvalidAmount):
        record(remote, key="float", provider_cost=0.1)


def test_the_route_takes_a_provider_cost_as_a_decimal_string(billing: Billing, acme: str) -> None:
    key = billing.keys.create_key(user="alice", mandate=acme, scopes=["billing:use"]).secret
    with TestClient(create_app(billing, sweep_interval_s=0)) as app:

        def post(idempotency_key: str, **body: Any) -> httpx.Response:
            return app.post(
                "/v1/mandates/acme/usage",
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key},
                json={"user": "alice", **body},
            )

        for bad in ({"provider_cost": "0.1e3"}, {"provider_cost": 0.1}, {"provider_cost": "-1"}):
            answer = post("bad", **bad)
            assert answer.status_code == 422, bad
            assert answer.headers["content-type"].startswith("application/problem+json")
        assert post("eur", provider_cost="0.10", provider_currency="EUR").json()["code"] == (
            "missing_exchange_rate"
        )
        assert billing.history(acme, kind="debit").entries == []
        answer = post("good", provider_cost="0.10", provider_currency="USD")
    assert answer.status_code == 201
    body = answer.json()
    assert (body["amount"], body["provider_cost"]) == ("0.120000", "0.1")
    assert D(body["fx_rate"]) == D("0.8") and body["price_source"] == "caller"
    assert body["breakdown"]["price"] == {"source": "caller", "scope": "caller"}
