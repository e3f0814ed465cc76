"""Times at the edge of what can be represented (DESIGN rule 12): every time
parameter of every route, form, command and library call refuses a time that
cannot be converted to UTC or lies outside 1900-01-01 .. 9999-01-01 (UTC) with
a 422 (``InvalidRequest``) naming the field, writes nothing, and answers the
same on SQLite and PostgreSQL. ``0001-01-01T00:00:00+14:00`` and
``9999-12-31T23:59:59-14:00`` used to overflow into a 500.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal as D
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import aibill
from aibill import Billing
from aibill.api import create_app
from aibill.cli import app
from aibill.cli.core import EXIT_MISUSE
from aibill.domain.times import EARLIEST, LATEST, check_time
from tests.integration.test_web import csrf_of, sign_in

EXTREMES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")
EXTREME_TIMES = (
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
)
# Out of range without any offset trick, and the dashboard's whole days.
OUTSIDE = ("1899-12-31T23:59:59Z", "9999-06-01T00:00:00Z")
EXTREME_DAYS = ("0001-01-01", "9999-12-31")


# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize("when", [*EXTREME_TIMES, EARLIEST - timedelta(microseconds=1), LATEST])
def test_out_of_range_is_refused(when: datetime) -> None:
    with pytest.raises(aibill.InvalidRequest) as info:
        check_time(when, "since")
    assert info.value.details["field"] == "since" and "out of range" in info.value.message


@pytest.mark.parametrize(
    "when",
    [
        EARLIEST,
        LATEST - timedelta(microseconds=1),
        datetime(1900, 1, 1, tzinfo=timezone(timedelta(hours=-14))),
        datetime(9998, 12, 31, 9, 59, tzinfo=timezone(timedelta(hours=14))),
    ],
)
def test_the_edges_are_taken_in_utc(when: datetime) -> None:
    assert check_time(when, "at") == when and check_time(when, "at").tzinfo is UTC


@pytest.mark.parametrize(
    "when",
    [datetime(2026, 1, 1), date(2026, 1, 1), "2026-01-01", None],  # noqa: DTZ001
)
def test_what_is_not_an_aware_datetime_is_refused(when: object) -> None:
    with pytest.raises(aibill.InvalidRequest) as info:
        check_time(when, "until")
    assert info.value.details["field"] == "until"


# ------------------------------------------------------------------ fixtures


@dataclass
class World:
    billing: Billing
    root: str

    def written(self) -> tuple[int, ...]:
        """What a refused call must not have changed."""
        b = self.billing
        return (
            len(b.pricing.exchange_rates()),
            len(b.pricing.custom_prices()),
            len(b.pricing.custom_prices("acme")),
            len(b.keys.list_keys("acme")),
            len(b.keys.list_keys(None)),
            len(b.audit_log(None, limit=1000).records),
            len(b.audit_log("acme", limit=1000).records),
        )


@pytest.fixture
def world(billing: Billing) -> World:
    """acme (CHF) with alice as admin, one rate, one credit; root a system admin."""
    b = billing
    b.add_user("root")
    b.access.add_sysadmin("root")
    b.create_mandate("acme", currency="CHF")
    b.add_user("alice")
    b.add_member("acme", "alice", role="admin")
    b.access.register_provider("openai")
    b.pricing.set_exchange_rate("USD", "CHF", D("0.80"), valid_from=b.clock() - timedelta(days=1))
    b.credit("acme", D("10"), idempotency_key="c1")
    scopes = ["billing:read", "billing:admin"]
    root = b.keys.create_key(user="root", mandate=None, scopes=scopes).secret
    return World(b, root)


def cursor_at(when: str) -> str:
    raw = f"{when}|e0000".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def named(body: dict[str, Any]) -> set[str]:
    """The fields a problem document names."""
    fields = {e["field"] for e in body.get("errors") or []}
    details = body.get("details") or {}
    return fields | ({details["field"]} if "field" in details else set())


# ------------------------------------------------------------------ the API

ESTIMATE = {"provider": "openai", "model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10}
PRICE = {"provider": "private", "model": "tuned-1", "input_mtok": "1", "output_mtok": "2"}
# (method, path, where the time goes, its name, the rest of the body)
API_CASES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    *(
        ("GET", path, "query", name, {})
        for path in (
            "/v1/mandates/acme/entries",
            "/v1/mandates/acme/usage-report",
            "/v1/mandates/acme/entries.csv",
            "/v1/mandates/acme/usage-report.csv",
        )
        for name in ("since", "until")
    ),
    ("GET", "/v1/exchange-rates/USD/CHF", "query", "at", {}),
    ("GET", "/v1/prices/openai/gpt-4o", "query", "at", {}),
    ("POST", "/v1/mandates/acme/estimate", "body", "at", ESTIMATE),
    (
        "POST",
        "/v1/exchange-rates",
        "body",
        "valid_from",
        {"base": "USD", "quote": "CHF", "rate": "0.9"},
    ),
    ("POST", "/v1/prices", "body", "valid_from", PRICE),
    ("POST", "/v1/prices", "body", "valid_from", {**PRICE, "mandate": "acme"}),
    ("POST", "/v1/mandates/acme/keys", "body", "expires_at", {"user": "alice"}),
    ("POST", "/v1/keys", "body", "expires_at", {"user": "root"}),
    ("GET", "/v1/mandates/acme/entries", "cursor", "cursor", {}),
    ("GET", "/v1/mandates/acme/audit", "cursor", "cursor", {}),
    ("GET", "/v1/audit", "cursor", "cursor", {}),
]


@pytest.fixture
def api(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.billing, sweep_interval_s=0)) as client:
        client.headers["Authorization"] = f"Bearer {world.root}"
        yield client


@pytest.mark.parametrize(
    ("method", "path", "where", "name", "body"),
    API_CASES,
    ids=[f"{m} {p} {n}" for m, p, _, n, _ in API_CASES],
)
def test_every_time_parameter_of_the_api(
    world: World,
    api: TestClient,
    method: str,
    path: str,
    where: str,
    name: str,
    body: dict[str, Any],
) -> None:
    before = world.written()
    for i, when in enumerate((*EXTREMES, *OUTSIDE)):
        if where == "query":
            r = api.request(method, path, params={name: when})
        elif where == "cursor":
            r = api.request(method, path, params={"cursor": cursor_at(when)})
        else:
            r = api.request(
                method, path, json={**body, name: when}, headers={"Idempotency-Key": f"k{i}"}
            )
        assert r.status_code == 422, (when, r.text)
        problem = r.json()
        assert problem["code"] == "invalid_request" and name in named(problem), problem
    assert world.written() == before


def test_the_api_takes_the_edges(world: World, api: TestClient) -> None:
    for when in (
        "1900-01-01T00:00:00Z",
        "9998-12-31T23:59:59.999999Z",
        "1900-01-01T00:00:00-14:00",
    ):
        r = api.get("/v1/mandates/acme/entries", params={"since": when})
        assert r.status_code == 200, r.text


def test_the_rate_import_names_the_line(world: World, api: TestClient) -> None:
    before = world.written()
    for when in (*EXTREMES, *EXTREME_DAYS):
        csv_text = f"base,quote,rate,valid_from\nUSD,EUR,0.9,2026-01-01\nUSD,CHF,0.9,{when}\n"
        r = api.post(
            "/v1/exchange-rates/import",
            content=csv_text.encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert r.status_code == 422, r.text
        details = r.json()["details"]
        assert (details["line"], details["field"]) == (3, "valid_from")
    assert world.written() == before


# ------------------------------------------------------------------ the library

LIBRARY_CASES: list[tuple[str, Callable[[Billing, datetime], object]]] = [
    ("since", lambda b, t: b.history("acme", since=t)),
    ("until", lambda b, t: b.history("acme", until=t)),
    ("since", lambda b, t: b.usage_report("acme", since=t)),
    ("until", lambda b, t: b.usage_report("acme", until=t)),
    ("since", lambda b, t: b.iter_history_csv("acme", since=t)),
    ("until", lambda b, t: b.iter_usage_report_csv("acme", until=t)),
    ("since", lambda b, t: b.export_history_csv("acme", io.StringIO(), since=t)),
    (
        "at",
        lambda b, t: b.estimate(
            "acme", provider="openai", model="gpt-4o", input_tokens=1, max_output_tokens=1, at=t
        ),
    ),
    ("at", lambda b, t: b.pricing.exchange_rate("USD", "CHF", t)),
    ("at", lambda b, t: b.pricing.model_price("openai", "gpt-4o", at=t)),
    ("valid_from", lambda b, t: b.pricing.set_exchange_rate("USD", "CHF", D("1"), valid_from=t)),
    (
        "valid_from",
        lambda b, t: b.pricing.set_custom_price(
            "p", "m", input_mtok=1, output_mtok=1, valid_from=t
        ),
    ),
    ("expires_at", lambda b, t: b.keys.create_key(user="alice", mandate="acme", expires_at=t)),
]


@pytest.mark.parametrize(
    ("name", "call"), LIBRARY_CASES, ids=[f"{i}-{n}" for i, (n, _) in enumerate(LIBRARY_CASES)]
)
def test_every_time_argument_of_the_library(
    world: World, name: str, call: Callable[[Billing, datetime], object]
) -> None:
    before = world.written()
    for when in EXTREME_TIMES:
        with pytest.raises(aibill.InvalidRequest) as info:
            call(world.billing, when)
        assert info.value.details["field"] == name
    assert world.written() == before


# ------------------------------------------------------------------ the dashboard


def test_the_dashboards_filters(world: World) -> None:
    with TestClient(create_app(world.billing, sweep_interval_s=0)) as client:
        assert sign_in(client, world.root).status_code == 303
        for day in EXTREME_DAYS:
            for query in (f"from={day}", f"to={day}"):
                for path in ("/m/acme/transactions", "/m/acme/transactions.csv"):
                    r = client.get(f"{path}?{query}")
                    assert r.status_code == 422 and "invalid_request" in r.text, (path, query)
                r = client.get(f"/m/acme/usage?period=custom&{query}")
                assert r.status_code == 422 and "invalid_request" in r.text, query
        # The usage page draws each day: a custom period is bounded.
        r = client.get("/m/acme/usage?period=custom&from=1900-01-01&to=9998-12-30")
        assert r.status_code == 422 and "at most 1096 days" in r.text


@pytest.mark.parametrize(
    ("action", "form"),
    [
        ("rate", {"base": "USD", "quote": "CHF", "rate": "0.9"}),
        ("price", {"provider": "p", "model": "m", "input_mtok": "1", "output_mtok": "1"}),
        ("key", {"user": "root", "scopes": "billing:read"}),
    ],
)
def test_the_dashboards_forms(world: World, action: str, form: dict[str, str]) -> None:
    field = "expires" if action == "key" else "valid_from"
    before = world.written()
    with TestClient(create_app(world.billing, sweep_interval_s=0)) as client:
        assert sign_in(client, world.root).status_code == 303
        for day in EXTREME_DAYS:
            token = csrf_of(client.get("/platform").text)
            r = client.post(
                f"/platform/{action}",
                data={"csrf": token, **form, field: day},
                follow_redirects=False,
            )
            assert r.status_code == 422 and "invalid_request" in r.text, (day, r.text[-2000:])
    assert world.written() == before


# ------------------------------------------------------------------ the CLI

CLI_CASES = [
    ["history", "acme", "--since"],
    ["history", "acme", "--until"],
    ["report", "acme", "--since"],
    ["export", "acme", "history", "--since"],
    ["export", "acme", "usage", "--until"],
    ["fx", "set", "USD", "CHF", "0.9", "--valid-from"],
    ["fx", "show", "USD", "CHF", "--at"],
    ["price", "show", "openai", "gpt-4o", "--at"],
    ["price", "set", "p", "m", "--input", "1", "--output", "1", "--valid-from"],
    ["key", "create", "--user", "root", "--expires"],
]


def test_every_time_option_of_the_cli(world: World, db_url: str) -> None:
    runner = CliRunner()
    before = world.written()
    for args in CLI_CASES:
        for when in (*EXTREMES, *EXTREME_DAYS):
            result = runner.invoke(app, ["--db", db_url, *args, when], env={"COLUMNS": "400"})
            assert result.exit_code == EXIT_MISUSE, (args, when, result.output)
            assert "out of range" in " ".join(result.output.split()), (args, result.output)
    assert world.written() == before
