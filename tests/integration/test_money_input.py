"""Money strings are ASCII digits wherever money enters (DESIGN rule 12), on
SQLite and PostgreSQL: the API's bodies, the dashboard's forms, the CLI's
arguments, the rate-import CSV, custom prices, and the compatibility module's
``str()`` conversion. ``"١٢"`` (Arabic-Indic twelve) used to become 12.000000.
Integers that arrive as text (query parameters, CLI options) are ASCII too.
Each refusal is a 422 (exit 2 on the CLI) naming the field, and writes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal as D
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import aibill
from aibill import Billing, ManualClock
from aibill.api import create_app
from aibill.cli import app
from aibill.cli.core import EXIT_MISUSE
from aibill.compat import gateway
from tests.integration.test_web import csrf_of, sign_in

TWELVE = (
    "\u0661\u0662",
    "\u0967\u0968",
    "\uff11\uff12",
    "12.\u0665",
)  # Arabic-Indic, Devanagari, full width, mixed


@dataclass
class World:
    billing: Billing
    root: str
    hold_id: str

    def written(self) -> tuple[Any, ...]:
        """Everything a refused request must leave as it was."""
        b = self.billing
        return (
            [(e.id, e.amount) for e in b.history("acme", limit=1000).entries],
            [(h.id, h.status) for h in b.open_holds("acme")],
            b.balance("acme"),
            b.spending_limits("acme"),
            [(r.base, r.quote, r.rate) for r in b.pricing.exchange_rates()],
            b.pricing.markups(None),
            b.pricing.markups("acme"),
            b.pricing.custom_prices(),
        )


@pytest.fixture
def world(billing: Billing) -> World:
    b = billing
    b.add_user("root")
    b.access.add_sysadmin("root")
    b.create_mandate("acme", currency="CHF")
    b.add_user("alice")
    b.add_member("acme", "alice", role="admin")
    b.pricing.set_exchange_rate("USD", "CHF", D("0.80"), valid_from=b.clock())
    b.credit("acme", D("100"), idempotency_key="c0")
    hold = b.hold("acme", amount=D("1"), user="alice", idempotency_key="h0")
    scopes = ["billing:use", "billing:read", "billing:admin"]
    root = b.keys.create_key(user="root", mandate=None, scopes=scopes).secret
    return World(b, root, hold.id)


def named(body: dict[str, Any]) -> set[str]:
    fields = {e["field"] for e in body.get("errors") or []}
    details = body.get("details") or {}
    return fields | ({details["field"]} if "field" in details else set())


# ------------------------------------------------------------------ the API

# (method, path, body, the money field)
API_MONEY = [
    ("POST", "/v1/mandates/acme/credits", {}, "amount"),
    ("POST", "/v1/mandates/acme/holds", {"user": "alice"}, "amount"),
    ("POST", "/v1/mandates/acme/usage", {"user": "alice"}, "amount"),
    ("POST", "/v1/holds/{hold}/capture", {}, "amount"),
    ("POST", "/v1/mandates/acme/check", {"user": "alice"}, "estimate"),
    ("PUT", "/v1/mandates/acme/overdraft-limit", {}, "amount"),
    ("PUT", "/v1/mandates/acme/limits", {"user": "alice"}, "amount"),
    ("POST", "/v1/exchange-rates", {"base": "USD", "quote": "EUR"}, "rate"),
    ("POST", "/v1/markups", {"mandate": "acme"}, "percent"),
    (
        "POST",
        "/v1/prices",
        {"provider": "p", "model": "m", "output_mtok": "1"},
        "input_mtok",
    ),
]


@pytest.fixture
def api(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.billing, sweep_interval_s=0)) as client:
        client.headers["Authorization"] = f"Bearer {world.root}"
        yield client


@pytest.mark.parametrize(("method", "path", "body", "field"), API_MONEY, ids=str)
def test_api_money_fields(
    world: World, api: TestClient, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    before = world.written()
    for i, text in enumerate(TWELVE):
        r = api.request(
            method,
            path.format(hold=world.hold_id),
            json={**body, field: text},
            headers={"Idempotency-Key": f"k{i}"},
        )
        assert r.status_code == 422, (text, r.text)
        assert r.json()["code"] == "invalid_request" and field in named(r.json()), r.text
    assert world.written() == before


INTEGER_QUERIES = [
    ("/v1/mandates/acme/entries", "limit"),
    ("/v1/mandates/acme/holds", "limit"),
    ("/v1/mandates/acme/audit", "limit"),
    ("/v1/mandates/acme/entries.csv", "page_size"),
]


def test_integers_that_arrive_as_text(world: World, api: TestClient) -> None:
    """Query parameters and JSON strings for integers (refused by the schemas),
    and the dashboard's page number (``"²".isdigit()`` is true, ``int("²")``
    fails): ASCII digits or a clear answer, never a 500."""
    before = world.written()
    for path, name in INTEGER_QUERIES:
        for text in ("\u0661\u0662", "\u00b2", "\uff11\uff12"):
            r = api.get(path, params={name: text})
            assert r.status_code == 422 and name in named(r.json()), r.text
    hold = {"user": "alice", "amount": "1", "ttl_s": "٣٠٠"}
    r = api.post("/v1/mandates/acme/holds", json=hold, headers={"Idempotency-Key": "t"})
    assert r.status_code == 422 and "ttl_s" in named(r.json())
    usage = {"user": "alice", "usage": {"input_tokens": "١٢"}}
    r = api.post("/v1/mandates/acme/usage", json=usage, headers={"Idempotency-Key": "u"})
    assert r.status_code == 422 and "usage.input_tokens" in named(r.json())
    with TestClient(create_app(world.billing, sweep_interval_s=0)) as client:
        assert sign_in(client, world.root).status_code == 303
        for text in ("²", "١٢"):
            r = client.get("/m/acme/transactions", params={"n": text})
            assert r.status_code == 200 and "page 12" not in r.text, r.text[-500:]
    assert world.written() == before


def test_the_rate_import(world: World, api: TestClient) -> None:
    before = world.written()
    for text in ("\u0660.\u0669", "0.\u0669", "9e-1"):
        body = f"base,quote,rate,valid_from\nUSD,EUR,0.9,2026-01-01\nUSD,JPY,{text},2026-01-01\n"
        r = api.post("/v1/exchange-rates/import", content=body.encode())
        assert r.status_code == 422, r.text
        assert (r.json()["details"]["line"], r.json()["details"]["field"]) == (3, "rate")
    assert world.written() == before


# ------------------------------------------------------------------ the library


def test_library_money_arguments(world: World) -> None:
    b = world.billing
    before = world.written()
    calls: list[tuple[str, Callable[[str], object]]] = [
        ("amount", lambda t: b.credit("acme", t, idempotency_key="x")),
        ("amount", lambda t: b.hold("acme", amount=t, user="alice", idempotency_key="y")),
        ("amount", lambda t: b.capture(world.hold_id, amount=t, idempotency_key="z")),
        ("estimate", lambda t: b.check("acme", estimate=t, user="alice")),
        ("rate", lambda t: b.pricing.set_exchange_rate("USD", "EUR", t)),
        ("percent", lambda t: b.pricing.set_markup(t, mandate="acme")),
        ("input_mtok", lambda t: b.pricing.set_custom_price("p", "m", input_mtok=t, output_mtok=1)),
        (
            "per_request",
            lambda t: b.pricing.set_custom_price(
                "p", "m", input_mtok=1, output_mtok=1, per_request=t
            ),
        ),
        ("overdraft_limit", lambda t: b.set_overdraft_limit("acme", t)),
    ]
    for field, call in calls:
        for text in TWELVE:
            with pytest.raises(aibill.InvalidAmount) as info:
                call(text)
            assert info.value.details["field"] == field, (field, info.value)
    with pytest.raises(aibill.InvalidRequest):
        b.pricing.import_exchange_rates(
            io.StringIO("base,quote,rate,valid_from\nUSD,EUR,\u0661,2026-01-01\n")
        )
    assert world.written() == before


class ForeignFloat(float):
    """A float whose text is written in another script's digits."""

    def __str__(self) -> str:
        return "١٢"


def test_the_compatibility_modules_str_conversion(world: World) -> None:
    b = world.billing
    before = world.written()
    with pytest.raises(aibill.InvalidAmount):
        gateway.to_decimal(ForeignFloat(12.0), "priceCHF")
    gateway.configure(b)
    try:
        service = gateway.getService(SimpleNamespace(id="alice"), "acme")
        with pytest.raises(aibill.InvalidAmount):
            service.addCredit(ForeignFloat(12.0))
        with pytest.raises(aibill.InvalidAmount):
            service.recordUsage(ForeignFloat(12.0), aicoreProvider="openai")
    finally:
        gateway.configure(None)
    assert world.written() == before
    assert gateway.to_decimal(0.1, "x") == D("0.1") and gateway.to_decimal(1e-06, "x") == D(
        "0.000001"
    )


# ------------------------------------------------------------------ the dashboard


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/m/acme/admin/credit", {"amount": "١٢", "idempotency_key": "w1"}),
        ("/m/acme/admin/limit", {"amount": "١٢", "subject": "alice", "scope": "user"}),
        ("/m/acme/admin/markup", {"percent": "١٢"}),
        ("/platform/rate", {"base": "USD", "quote": "EUR", "rate": "\u0660.\u0669"}),
        (
            "/platform/price",
            {"provider": "p", "model": "m", "input_mtok": "\u0661", "output_mtok": "1"},
        ),
    ],
)
def test_dashboard_forms(world: World, path: str, form: dict[str, str]) -> None:
    before = world.written()
    with TestClient(create_app(world.billing, sweep_interval_s=0)) as client:
        assert sign_in(client, world.root).status_code == 303
        token = csrf_of(client.get(path.rsplit("/", 1)[0]).text)
        r = client.post(path, data={"csrf": token, **form}, follow_redirects=False)
        assert r.status_code == 422 and "invalid_amount" in r.text, r.text[-1500:]
    assert world.written() == before


# ------------------------------------------------------------------ the CLI

CLI_CASES = [
    ["credit", "acme", "{}"],
    ["hold", "acme", "--user", "alice", "--amount", "{}"],
    ["check", "acme", "--user", "alice", "--estimate", "{}"],
    ["fx", "set", "USD", "EUR", "{}"],
    ["markup", "set", "{}", "--mandate", "acme"],
    ["price", "set", "p", "m", "--input", "{}", "--output", "1"],
    ["limit", "set", "acme", "{}", "--user", "alice"],
    ["history", "acme", "--limit", "{}"],
    ["hold", "acme", "--user", "alice", "--amount", "1", "--ttl", "{}"],
]


def test_cli_arguments(world: World, db_url: str, clock: ManualClock) -> None:
    runner = CliRunner()
    before = world.written()
    for args in CLI_CASES:
        for text in ("\u0661\u0662", "\uff11\uff12"):
            argv = ["--db", db_url, *(a.format(text) for a in args)]
            result = runner.invoke(app, argv, env={"COLUMNS": "400"})
            assert result.exit_code == EXIT_MISUSE, (args, result.output)
            assert "ASCII" in " ".join(result.output.split()), (args, result.output)
    assert world.written() == before
