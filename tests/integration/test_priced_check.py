"""``check`` prices a call itself from provider, model and tokens, as ``hold``
does: the same estimate as ``estimate()``, the same refusals as ``hold`` (as an
answer instead of an error), nothing written. In the library, over HTTP and
through ``aibill.Client``, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
from tests.integration.test_client import BASE, Wire

CALL: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-4o",
    "input_tokens": 1200,
    "max_output_tokens": 800,
}


@pytest.fixture
def acme(billing: Billing, clock: ManualClock) -> str:
    """A CHF mandate with 100, USD->CHF at 0.80, alice a member, vera a viewer,
    openai registered. gpt-4o for 1,200 in and at most 800 out: 0.0132 CHF."""
    billing.create_mandate("acme", currency="CHF")
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    billing.add_user("vera")
    billing.add_member("acme", "vera", role="viewer")
    billing.credit("acme", D("100"), idempotency_key="topup")
    billing.pricing.set_exchange_rate("USD", "CHF", D("0.80"), valid_from=clock() - timedelta(1))
    billing.access.register_provider("openai")
    return "acme"


def unchanged(billing: Billing, mandate: str) -> tuple[Any, ...]:
    """What a check must not change: the balance, the entries, the open holds."""
    return (
        billing.balance(mandate),
        billing.history(mandate).entries,
        billing.open_holds(mandate),
    )


def test_a_priced_check_answers_with_the_estimate_a_hold_reserves(
    billing: Billing, acme: str
) -> None:
    before = unchanged(billing, acme)
    est = billing.estimate(acme, **CALL)
    answer = billing.check(acme, user="alice", **CALL)
    assert unchanged(billing, acme) == before
    assert answer == aibill.CheckResult(
        allowed=True,
        reason="ok",
        balance=D("100"),
        available=D("100"),
        billing_model=aibill.BillingModel.PREPAY_MANDATE,
        account="pool",
        currency="CHF",
        estimate=D("0.013200"),
    )
    assert answer.estimate == est.amount == D("0.0132")
    assert str(answer.estimate) == "0.013200"
    assert billing.hold(acme, user="alice", idempotency_key="h", **CALL).amount == answer.estimate


def test_a_priced_check_caps_the_output_as_estimate_does(billing: Billing, acme: str) -> None:
    huge = {**CALL, "max_output_tokens": 10**9}
    est = billing.estimate(acme, **huge)
    assert billing.check(acme, user="alice", **huge).estimate == est.amount
    assert billing.check(acme, user="alice", **{**CALL, "input_tokens": 0}).estimate == (
        billing.estimate(acme, **{**CALL, "input_tokens": 0}).amount
    )


def test_the_estimate_is_priced_at_the_checks_time(
    billing: Billing, acme: str, clock: ManualClock
) -> None:
    billing.pricing.set_exchange_rate("USD", "CHF", D("1.00"), valid_from=clock() + timedelta(1))
    assert billing.check(acme, user="alice", **CALL).estimate == D("0.0132")
    clock.advance(2 * 24 * 3600)
    assert billing.check(acme, user="alice", **CALL).estimate == D("0.0165")


@pytest.mark.parametrize(
    ("setup", "user", "reason", "refusal"),
    [
        ("poor", "alice", "insufficient_balance", aibill.InsufficientBalance),
        ("limit", "alice", "limit_exceeded", aibill.LimitExceeded),
        ("viewer", "vera", "provider_not_allowed", aibill.ProviderNotAllowed),
        ("disabled", "alice", "provider_not_allowed", aibill.ProviderNotAllowed),
    ],
)
def test_check_answers_what_hold_raises(
    billing: Billing,
    clock: ManualClock,
    setup: str,
    user: str,
    reason: str,
    refusal: type[aibill.Refused],
) -> None:
    billing.create_mandate("lean", currency="USD")
    for name, role in (("alice", "member"), ("vera", "viewer")):
        billing.add_user(name)
        billing.add_member("lean", name, role=role)
    billing.access.register_provider("openai")
    # gpt-4o for 1,200 in and at most 800 out: 0.011 USD, plus 50 % = 0.0165 USD.
    billing.credit("lean", D("0.0165") if setup != "poor" else D("0.016499"), idempotency_key="t")
    if setup == "limit":
        billing.set_spending_limit("lean", D("0.0164"), user="alice", period="month")
    if setup == "disabled":
        billing.access.set_provider_enabled("openai", False)
    before = unchanged(billing, "lean")
    answer = billing.check("lean", user=user, **CALL)
    assert (answer.allowed, answer.reason, answer.estimate) == (False, reason, D("0.0165"))
    with pytest.raises(refusal) as raised:
        billing.hold("lean", user=user, idempotency_key="h", **CALL)
    assert raised.value.code == reason
    assert unchanged(billing, "lean") == before


def test_an_unlimited_mandate_prices_and_allows(billing: Billing) -> None:
    billing.create_mandate("open", billing_model="unlimited", currency="USD")
    billing.access.register_provider("openai")
    billing.add_user("alice")
    billing.add_member("open", "alice")
    answer = billing.check("open", user="alice", **CALL)
    assert (answer.allowed, answer.reason, answer.estimate, answer.balance) == (
        True,
        "ok",
        D("0.0165"),
        D("0"),
    )


@pytest.mark.parametrize(
    ("args", "error", "field", "says"),
    [
        ({**CALL, "estimate": D("1")}, aibill.InvalidRequest, "estimate", "not both"),
        ({"estimate": D("1"), "input_tokens": 5}, aibill.InvalidRequest, "estimate", "input_tok"),
        ({"estimate": D("1"), "model": "gpt-4o"}, aibill.InvalidRequest, "provider", "provider"),
        ({}, aibill.InvalidRequest, "estimate", "Give estimate="),
        ({"provider": "openai"}, aibill.InvalidRequest, "model", "missing: model"),
        ({**CALL, "max_output_tokens": None}, aibill.InvalidRequest, "max_output_tokens", "max_"),
        ({**CALL, "provider": None}, aibill.InvalidRequest, "provider", "provider"),
        ({**CALL, "input_tokens": -1}, aibill.InvalidRequest, "input_tokens", "whole number"),
        ({**CALL, "input_tokens": True}, aibill.InvalidRequest, "input_tokens", "whole number"),
        ({**CALL, "model": "gpt-nonesuch"}, aibill.UnknownModel, None, "gpt-nonesuch"),
    ],
)
def test_a_check_that_cannot_be_priced_is_an_error(
    billing: Billing,
    acme: str,
    args: dict[str, Any],
    error: type[aibill.AibillError],
    field: str | None,
    says: str,
) -> None:
    with pytest.raises(error, match=says) as raised:
        billing.check(acme, user="alice", **args)
    if field is not None:
        assert raised.value.details.get("field") == field


def test_a_missing_exchange_rate_is_an_error(billing: Billing) -> None:
    billing.create_mandate("euro", currency="EUR")
    with pytest.raises(aibill.MissingExchangeRate):
        billing.check("euro", **CALL)


# ----------------------------------------------------------- over HTTP


@pytest.fixture
def app(billing: Billing, acme: str) -> Iterator[TestClient]:
    with TestClient(create_app(billing, sweep_interval_s=0)) as client:
        yield client


@pytest.fixture
def alice_key(billing: Billing, acme: str) -> str:
    return billing.keys.create_key(user="alice", mandate="acme", scopes=["billing:use"]).secret


def test_the_priced_check_over_http(app: TestClient, alice_key: str) -> None:
    auth = {"Authorization": f"Bearer {alice_key}"}
    answer = app.post("/v1/mandates/acme/check", headers=auth, json={"user": "alice", **CALL})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "allowed": True,
        "reason": "ok",
        "balance": "100.000000",
        "available": "100.000000",
        "billing_model": "prepay_mandate",
        "account": "pool",
        "currency": "CHF",
        "estimate": "0.013200",
    }
    both = app.post("/v1/mandates/acme/check", headers=auth, json={"estimate": "1", **CALL})
    assert both.status_code == 422
    problem = both.json()
    assert problem["code"] == "invalid_request" and "not both" in problem["detail"]
    assert both.headers["content-type"].startswith("application/problem+json")


@pytest.fixture
def pair(billing: Billing, app: TestClient, alice_key: str) -> Iterator[tuple[Billing, Client]]:
    http = httpx.Client(transport=Wire(app))
    with Client(BASE, alice_key, http=http, backoff_s=0) as client:
        yield billing.authenticate(alice_key), client


def test_the_client_checks_as_the_library_does(
    billing: Billing, pair: tuple[Billing, Client]
) -> None:
    lib, client = pair
    billing.set_spending_limit("acme", D("0.01"), user="alice", period="day")
    asks: list[Callable[[Billing | Client], aibill.CheckResult]] = [
        lambda b: b.check("acme", user="alice", **CALL),
        lambda b: b.check("acme", user="alice", estimate=D("0.005")),
        lambda b: b.check("acme", user="vera", **CALL),
        lambda b: b.check("acme", user="alice", **{**CALL, "input_tokens": 100}),
    ]
    answers = [(ask(lib), ask(client)) for ask in asks]
    for ours, theirs in answers:
        assert theirs == ours
    assert [a.reason for a, _ in answers] == ["limit_exceeded", "ok", "provider_not_allowed", "ok"]
    for bad in ({}, {**CALL, "estimate": D("1")}, {**CALL, "model": None}):
        raised = []
        for target in (lib, client):
            with pytest.raises(aibill.InvalidRequest) as caught:
                target.check("acme", user="alice", **bad)
            raised.append(caught.value)
        assert (raised[1].code, raised[1].message) == (raised[0].code, raised[0].message)
    with pytest.raises(aibill.UnknownModel):
        client.check("acme", user="alice", **{**CALL, "model": "gpt-nonesuch"})
