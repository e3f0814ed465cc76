"""``aibill.Client``'s administrative surface against the HTTP API in process,
on SQLite and PostgreSQL: every method gives what the library gives to the
same principal (the same dataclass values, exact money, aware times), and
refuses what the library refuses with the same class and code; the client
mirrors every public method of ``Billing``, ``Pricing``, ``Access`` and
``Keys``; the CSV exports are streamed."""

from __future__ import annotations

import dataclasses
import inspect
import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import aibill
from aibill import Billing, BillingModel, ManualClock, Usage
from aibill.api import create_app
from aibill.client import AccessClient, Client, KeysClient, PricingClient, ServiceUnavailable
from aibill.domain.errors import UnknownApiKey
from aibill.domain.permissions import Context, Permission
from aibill.service.access import Access
from aibill.service.keys import Keys
from aibill.service.pricing import ModelPrice, PriceTier, Pricing
from tests.integration.test_client import BASE, NOW, Wire, no_floats

# What exists on the library but cannot on a client, and why. Everything else
# public must have a counterpart of the same name and arguments.
LOCAL_ONLY = {
    Billing: {
        "as_principal",  # a client acts for the holder of its API key
        "authenticate",  # ... which the service authenticates on every request
        "engine",  # the database is the service's
        "clock",  # so is the clock
        "principal",  # no route says who a key's holder is
        "may",  # no route: a client learns what it may do by doing it
        "sweep_expired",  # the service sweeps expired holds itself, on a timer
        "group_commit",  # the service's own commits (AIBILL_GROUP_COMMIT)
    },
    Pricing: {
        "bound",  # binds a principal's guard: in process only
        "catalog",  # the service's price catalog; model_price reads it remotely
        "quote",  # runs in the caller's database transaction (conn)
        "quote_cost",  # conn, as quote
        "output_limit",  # conn, as quote
        "price",  # no route: estimate prices a call in the mandate's currency
        "price_cost",  # no route: record_usage(provider_cost=...) posts what it tells
    },
    Access: {
        "bound",
        "admin_decision",  # the decisions run in the caller's transaction (conn)
        "permission_decision",
        "provider_decision",
        "spend_decision",
        "is_mandate_admin",
    },
    Keys: {
        "bound",
        "authenticate",  # the service authenticates keys
        "recall",  # the service's memory of keys it verified (AIBILL_KEY_CACHE_S)
        "forget_holder",  # tells that memory a holder is gone: in process only
    },
}
# A write's idempotency key is required by the library and optional on the
# client, which makes one up (see docs/client.md).
CLIENT_DEFAULTS = {"idempotency_key": None}


def public(cls: type) -> dict[str, Any]:
    return {name: member for name, member in inspect.getmembers(cls) if not name.startswith("_")}


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [
        (p.name, p.kind, CLIENT_DEFAULTS.get(p.name, p.default))
        for p in inspect.signature(function).parameters.values()
    ]


@pytest.mark.parametrize(
    ("library", "remote"),
    [(Billing, Client), (Pricing, PricingClient), (Access, AccessClient), (Keys, KeysClient)],
)
def test_the_client_mirrors_every_public_method(library: type, remote: type) -> None:
    ours = public(remote)
    missing, different = [], []
    for name, member in public(library).items():
        if name in LOCAL_ONLY[library]:
            assert name not in ours, f"{name} is local only, but the client has it"
            continue
        if name not in ours:
            missing.append(name)
        elif callable(member) and parameters(member) != parameters(ours[name]):
            different.append(
                f"{name}{inspect.signature(member)} != {inspect.signature(ours[name])}"
            )
    assert missing == [] and different == []


# ------------------------------------------------------------------- parity


@dataclasses.dataclass
class Pair:
    """The same principal twice: through the library and through the client."""

    lib: Billing
    client: Client

    def same(self, call: Callable[[Any], Any]) -> Any:
        """``call`` on both gives equal values (and nothing parsed is a float)."""
        ours, theirs = call(self.lib), call(self.client)
        assert theirs == ours
        assert type(theirs) is type(ours) or isinstance(theirs, type(ours))
        no_floats(theirs)
        return theirs

    def refused(self, call: Callable[[Any], Any], cls: type[aibill.AibillError]) -> None:
        """``call`` on both raises the same class with the same code, and the
        same message (but for a request the service's own validation refused
        before the library saw it: its message says what the schema wants)."""
        raised = []
        for target in (self.lib, self.client):
            with pytest.raises(cls) as caught:
                call(target)
            raised.append(caught.value)
        assert type(raised[1]) is type(raised[0]) and raised[1].code == raised[0].code
        if "errors" not in raised[1].details:
            assert raised[1].message == raised[0].message


@pytest.fixture
def app(billing: Billing) -> Iterator[TestClient]:
    with TestClient(create_app(billing, sweep_interval_s=0)) as client:
        yield client


def pair(billing: Billing, app: TestClient, key: str) -> Pair:
    return Pair(
        billing.authenticate(key),
        Client(BASE, key, http=httpx.Client(transport=Wire(app)), backoff_s=0),
    )


@pytest.fixture
def world(billing: Billing, clock: ManualClock) -> dict[str, str]:
    """acme (CHF, pool) with alice (admin), bob (viewer) and carol (member);
    beta (USD, wallets) with dave; openai and mistral registered; rates, a
    markup, custom prices, limits, money and a call. Keys by user."""
    billing.add_user("root")
    billing.access.add_sysadmin("root")
    keys = {
        "root": billing.keys.create_key(user="root", mandate=None, scopes=["billing:admin"]).secret
    }
    billing.create_mandate("acme", currency="CHF")
    billing.create_mandate("beta", billing_model="prepay_user", currency="USD")
    for user, mandate, role in (
        ("alice", "acme", "admin"),
        ("bob", "acme", "viewer"),
        ("carol", "acme", "member"),
        ("dave", "beta", "member"),
    ):
        billing.add_user(user)
        billing.add_member(mandate, user, role=role)
    keys["alice"] = billing.keys.create_key(
        user="alice", mandate="acme", scopes=["billing:admin"]
    ).secret
    keys["bob"] = billing.keys.create_key(
        user="bob", mandate="acme", scopes=["billing:read"]
    ).secret
    billing.access.register_provider("openai", display_name="OpenAI")
    billing.access.register_provider("mistral", enabled=False)
    billing.pricing.set_exchange_rate("USD", "CHF", D("0.80"), valid_from=NOW - timedelta(days=30))
    billing.pricing.set_markup(D("20"), mandate="acme", provider="openai")
    billing.pricing.set_custom_price(
        "private", "tuned-1", input_mtok=D("1"), output_mtok=D("2"), mandate="acme"
    )
    billing.set_spending_limit("acme", D("50"), user="carol", period="month")
    billing.credit("acme", D("100"), idempotency_key="pay-1", description="=cmd|' /C calc'!A0")
    held = billing.hold(
        "acme",
        user="carol",
        provider="openai",
        model="gpt-4o",
        input_tokens=1200,
        max_output_tokens=800,
        feature_code="chat",
        idempotency_key="call-1",
    )
    billing.capture(held.id, usage=Usage(input_tokens=1200, output_tokens=512))
    clock.advance(60)
    billing.record_usage(
        "acme", amount=D("0.25"), user="alice", feature_code="batch", idempotency_key="u-1"
    )
    clock.advance(60)
    billing.hold("acme", amount=D("0.5"), user="carol", idempotency_key="call-2")
    clock.advance(60)
    billing.hold("acme", amount=D("0.75"), user="alice", idempotency_key="call-3")
    return keys


def test_the_ledger_directory_and_reports_agree(
    billing: Billing, app: TestClient, world: dict[str, str], clock: ManualClock
) -> None:
    root = pair(billing, app, world["root"])
    alice = pair(billing, app, world["alice"])
    assert [m.id for m in root.same(lambda b: b.mandates())] == ["acme", "beta"]
    assert [m.id for m in alice.same(lambda b: b.mandates())] == ["acme"]
    assert root.same(lambda b: b.users()) == ["alice", "bob", "carol", "dave", "root"]
    members = alice.same(lambda b: b.members("acme"))
    assert [(m.user, m.roles) for m in members] == [
        ("alice", ("admin",)),
        ("bob", ("viewer",)),
        ("carol", ("member",)),
    ]
    assert alice.same(lambda b: b.get_mandate("acme")).currency == "CHF"
    pool = alice.same(lambda b: b.accounts("acme"))
    assert [(a.account, a.balance, a.pending) for a in pool] == [
        ("pool", D("99.742205"), D("1.250000"))
    ]
    holds = alice.same(lambda b: b.open_holds("acme", limit=1))
    assert [h.amount for h in holds] == [D("0.750000")]
    assert len(alice.same(lambda b: b.open_holds("acme"))) == 2
    assert alice.same(lambda b: b.allowed_providers("acme", "carol")) == ["openai"]
    assert alice.same(lambda b: b.is_provider_allowed("acme", "carol", "openai")) is True
    assert alice.same(lambda b: b.is_provider_allowed("acme", "carol", "mistral")) is False
    # Another mandate's question is "no" on any doubt, embedded and remote.
    assert alice.same(lambda b: b.is_provider_allowed("beta", "dave", "openai")) is False

    assert alice.same(lambda b: b.set_overdraft_limit("acme", D("5"))).overdraft_limit == D(
        "5.000000"
    )
    limit = alice.same(lambda b: b.set_spending_limit("acme", D("20"), user="carol", period="day"))
    assert (limit.amount, limit.period, limit.subject) == (D("20.000000"), "day", "carol")
    assert (
        alice.same(lambda b: b.set_spending_limit("acme", None, user="carol", period="day")) is None
    )
    assert len(alice.same(lambda b: b.spending_limits("acme"))) == 1

    charge = alice.same(
        lambda b: b.estimate(
            "acme",
            provider="openai",
            model="gpt-4o",
            input_tokens=1000,
            max_output_tokens=1000,
            at=NOW,
        )
    )
    assert (charge.provider_cost, charge.fx_rate, charge.amount) == (
        D("0.0125"),
        D("0.80"),
        D("0.012000"),
    )

    days = alice.same(lambda b: b.usage_report("acme", group_by=["day", "feature_code"]))
    assert [(r.keys, r.calls, r.amount) for r in days] == [
        ({"day": datetime(2026, 3, 1, tzinfo=UTC), "feature_code": "batch"}, 1, D("0.250000")),
        ({"day": datetime(2026, 3, 1, tzinfo=UTC), "feature_code": "chat"}, 1, D("0.007795")),
    ]
    assert days[1].provider_cost == {"USD": D("0.00812")}
    mine = alice.same(lambda b: b.usage_report("acme", group_by=("user",), user="carol", since=NOW))
    assert [r.keys for r in mine] == [{"user": "carol"}]
    assert [b.mandate for b in alice.same(lambda b: b.balances_for_user("alice"))] == ["acme"]
    assert [b.mandate for b in root.same(lambda b: b.balances_for_user("bob"))] == ["acme"]

    lines = alice.same(lambda b: list(b.iter_history_csv("acme", page_size=1)))
    assert len(lines) == 4 and all(line.endswith("\r\n") for line in lines)
    assert "'=cmd" in alice.same(
        lambda b: "".join(b.iter_history_csv("acme", kind="credit", spreadsheet_safe=True))
    )
    assert len(alice.same(lambda b: list(b.iter_history_csv("acme", user="carol", since=NOW)))) == 2
    report = alice.same(
        lambda b: list(b.iter_usage_report_csv("acme", group_by=["provider"], feature_code="chat"))
    )
    assert report[1].startswith("openai,1,")
    for export in (
        lambda b, out: b.export_history_csv("acme", out, kind="debit"),
        lambda b, out: b.export_usage_report_csv("acme", out, group_by=["user"]),
    ):
        written = []
        for target in (alice.lib, alice.client):
            out = io.StringIO()
            written.append((export(target, out), out.getvalue()))
        assert written[1] == written[0] and written[0][0] == 2

    clock.advance(120)
    assert root.same(lambda b: b.verify()) == []
    assert alice.same(lambda b: b.verify("acme")) == []
    alice.refused(lambda b: b.set_billing_model("acme", "prepay_user"), aibill.HoldsInFlight)
    for h in billing.open_holds("acme"):
        billing.release(h.id)
    assert alice.same(
        lambda b: b.set_billing_model("acme", BillingModel.PREPAY_USER)
    ).billing_model is (BillingModel.PREPAY_USER)
    page = alice.same(lambda b: b.audit_log("acme", limit=2))
    assert [r.action for r in page.records] == ["mandate.billing_model", "limit.remove"]
    assert alice.same(lambda b: b.audit_log("acme", cursor=page.cursor)).records
    assert root.same(lambda b: b.audit_log(limit=3)).records[0].action == "exchange_rate.set"


def test_pricing_access_and_keys_agree(
    billing: Billing, app: TestClient, world: dict[str, str]
) -> None:
    root = pair(billing, app, world["root"])
    alice = pair(billing, app, world["alice"])
    start = NOW - timedelta(days=1)

    rate = root.same(lambda b: b.pricing.set_exchange_rate("EUR", "CHF", "0.95", valid_from=start))
    assert (rate.rate, rate.valid_from) == (D("0.95"), start)
    csv = ["base,quote,rate,valid_from\n", "GBP,CHF,1.10,2026-02-01\n"]
    assert root.client.pricing.import_exchange_rates(iter(csv)) == 1
    assert root.same(lambda b: b.pricing.import_exchange_rates(io.StringIO("".join(csv)))) == 0
    assert root.same(lambda b: b.pricing.import_exchange_rates([x.rstrip("\n") for x in csv])) == 0
    assert [
        (r.base, r.quote) for r in root.same(lambda b: b.pricing.exchange_rates(quote="CHF"))
    ] == [
        ("EUR", "CHF"),
        ("GBP", "CHF"),
        ("USD", "CHF"),
    ]
    assert root.same(lambda b: b.pricing.exchange_rate("GBP", "CHF", NOW)) == D("1.10")
    root.refused(lambda b: b.pricing.exchange_rate("CHF", "JPY", NOW), aibill.MissingExchangeRate)
    root.refused(lambda b: b.pricing.import_exchange_rates("base,quote"), aibill.InvalidRequest)

    markup = alice.same(
        lambda b: b.pricing.set_markup(D("35"), mandate="acme", provider="openai", model="gpt-4o")
    )
    assert (markup.percent, markup.model) == (D("35"), "gpt-4o")
    assert alice.same(lambda b: b.pricing.markup_for("acme", "openai", "gpt-4o")) == D("35")
    assert len(alice.same(lambda b: b.pricing.markups("acme"))) == 2
    assert alice.client.pricing.clear_markup(mandate="acme", provider="openai", model="gpt-4o")
    assert (
        alice.same(
            lambda b: b.pricing.clear_markup(mandate="acme", provider="openai", model="gpt-4o")
        )
        is False
    )
    assert alice.same(lambda b: b.pricing.markup_for("acme", "openai", None)) == D("20")
    assert root.same(lambda b: b.pricing.markups()) == []

    price = alice.same(
        lambda b: b.pricing.set_custom_price(
            "openai",
            "gpt-4o",
            input_mtok="2",
            output_mtok=D("8"),
            cache_read_mtok=1,
            per_request=D("0.000001"),
            valid_from=start,
            mandate="acme",
            output_limit=4096,
        )
    )
    assert (price.input_mtok, price.cache_read_mtok, price.per_request) == (
        D("2"),
        D("1"),
        D("0.000001"),
    )
    assert len(alice.same(lambda b: b.pricing.custom_prices("acme"))) == 2
    assert root.same(lambda b: b.pricing.custom_prices()) == []

    # The price of one model, exactly: the catalog's (genai-prices 0.2.3) ...
    catalog = root.same(lambda b: b.pricing.model_price("openai", "gpt-4o-2024-11-20", at=NOW))
    assert catalog == ModelPrice(
        provider="openai",
        model="gpt-4o-2024-11-20",
        model_matched="gpt-4o",
        model_name="gpt 4o",
        scope="catalog",
        source="genai-prices 0.2.3",
        catalog_version="0.2.3",
        currency="USD",
        input_mtok=D("2.5"),
        output_mtok=D("10"),
        cache_read_mtok=D("1.25"),
        cache_write_mtok=None,
        per_request=None,
        other_prices={"web_searches_kcount": D("10"), "storage_searches_kcount": D("2.5")},
        tiers=(),
        context_window=128000,
        output_limit=None,
        price_id=None,
        valid_from=None,
        mandate=None,
        at=NOW,
    )
    # ... the mandate's custom price over it ...
    custom = alice.same(lambda b: b.pricing.model_price("openai", "gpt-4o", mandate="acme"))
    assert (custom.scope, custom.source, custom.input_mtok, custom.output_limit) == (
        "mandate",
        f"custom:{price.price_id}",
        D("2"),
        4096,
    )
    assert (custom.context_window, custom.valid_from, custom.at) == (128000, start, billing.clock())
    # ... not yet in force the day before, nor for the platform ...
    before = alice.same(
        lambda b: b.pricing.model_price("openai", "gpt-4o", mandate="acme", at=start - timedelta(1))
    )
    assert before.scope == "catalog"
    # ... long-context tiers, and a fee per request (per thousand in the catalog).
    sonnet = root.same(lambda b: b.pricing.model_price("anthropic", "claude-sonnet-4-5", at=NOW))
    assert (sonnet.input_mtok, sonnet.output_mtok, sonnet.context_window) == (
        D("3"),
        D("15"),
        200000,
    )
    assert PriceTier("input_mtok", 200000, D("6")) in sonnet.tiers
    assert PriceTier("output_mtok", 200000, D("22.5")) in sonnet.tiers
    assert root.same(lambda b: b.pricing.model_price("perplexity", "sonar")).per_request == D(
        "0.012"
    )
    root.refused(lambda b: b.pricing.model_price("openai", "gpt-nope"), aibill.UnknownModel)
    root.refused(lambda b: b.pricing.model_price("private", "tuned-1"), aibill.UnknownModel)
    assert (
        alice.same(lambda b: b.pricing.model_price("private", "tuned-1", mandate="acme")).scope
        == "mandate"
    )
    alice.refused(
        lambda b: b.pricing.model_price("openai", "gpt-4o", mandate="beta"), aibill.PermissionDenied
    )

    provider = root.same(
        lambda b: b.access.register_provider("anthropic", display_name="Anthropic")
    )
    assert (provider.display_name, provider.enabled) == ("Anthropic", True)
    assert root.same(lambda b: b.access.set_provider_enabled("mistral", True)).enabled
    assert [p.provider for p in root.same(lambda b: b.access.providers())] == [
        "anthropic",
        "mistral",
        "openai",
    ]
    assert root.same(lambda b: b.access.add_sysadmin("dave")) is None
    assert root.same(lambda b: b.access.is_sysadmin("dave")) is True
    assert root.same(lambda b: b.access.remove_sysadmin("dave")) is None
    assert root.same(lambda b: b.access.is_sysadmin("dave")) is False
    root.refused(lambda b: b.access.remove_sysadmin("root"), aibill.LastSystemAdmin)
    assert alice.same(lambda b: b.access.grant_role("acme", "carol", "viewer")) == [
        "member",
        "viewer",
    ]
    assert alice.same(lambda b: b.access.revoke_role("acme", "carol", "viewer")) == ["member"]
    assert alice.same(lambda b: b.access.roles_of("acme", "bob")) == ["viewer"]
    role = alice.same(lambda b: b.access.define_role("acme", "auditor", "reads the books"))
    assert role.description == "reads the books"
    assert alice.same(lambda b: b.access.custom_roles("acme")) == [role]
    rule = alice.same(
        lambda b: b.access.add_rule("acme", "auditor", "resource", "resource.aicore.*", ["view"])
    )
    assert (rule.context, rule.permissions) == (
        Context.RESOURCE,
        frozenset({Permission.VIEW}),
    )
    assert alice.same(lambda b: b.access.rules("acme")) == [rule]
    assert alice.same(lambda b: b.access.allowed_providers("acme", "carol")) == [
        "anthropic",
        "mistral",
        "openai",
    ]
    assert alice.same(lambda b: b.access.is_provider_allowed("acme", "carol", "mistral")) is True
    assert alice.client.access.remove_rule("acme", rule.rule_id) is None
    alice.refused(lambda b: b.access.remove_rule("acme", rule.rule_id), aibill.NotFound)
    assert alice.client.access.builtin_rules() == Access.builtin_rules()

    created = [
        target.keys.create_key(user="carol", mandate="acme", scopes=["billing:read"], name="report")
        for target in (alice.lib, alice.client)
    ]
    assert created[1].secret.startswith("aibill_acme_") and created[1].secret != created[0].secret
    assert dataclasses.replace(created[1].info, key_id="x") == dataclasses.replace(
        created[0].info, key_id="x"
    )
    key_id = created[1].key_id
    assert alice.same(lambda b: b.keys.get_key(key_id, mandate="acme")).name == "report"
    assert alice.same(lambda b: b.keys.revoke_key(key_id, mandate="acme")).revoked_at == (
        billing.clock()
    )
    assert len(alice.same(lambda b: b.keys.list_keys("acme"))) == 4
    platform = root.client.keys.create_key(user="root", mandate=None, scopes=["billing:read"])
    assert platform.info.mandate is None and platform.secret.startswith("aibill-admin_")
    assert root.same(lambda b: b.keys.get_key(platform.key_id, mandate=None)) == platform.info
    assert len(root.same(lambda b: b.keys.list_keys(None))) == 2
    root.refused(lambda b: b.keys.get_key("0123456789ab", mandate=None), UnknownApiKey)


def test_refusals_are_the_librarys(
    billing: Billing, app: TestClient, world: dict[str, str]
) -> None:
    bob = pair(billing, app, world["bob"])  # a viewer, with a read key
    bob.refused(lambda b: b.pricing.set_markup(D("1"), mandate="acme"), aibill.PermissionDenied)
    bob.refused(lambda b: b.set_billing_model("acme", "unlimited"), aibill.PermissionDenied)
    bob.refused(lambda b: b.users(), aibill.PermissionDenied)
    bob.refused(lambda b: b.members("beta"), aibill.PermissionDenied)
    bob.refused(lambda b: b.access.add_sysadmin("bob"), aibill.PermissionDenied)
    bob.refused(lambda b: b.keys.create_key(user="bob", mandate="acme"), aibill.PermissionDenied)
    bob.refused(lambda b: b.pricing.markup_for("beta", None, None), aibill.PermissionDenied)
    bob.refused(lambda b: b.verify(), aibill.PermissionDenied)
    bob.refused(lambda b: b.audit_log(), aibill.PermissionDenied)
    bob.refused(lambda b: b.iter_history_csv("beta"), aibill.PermissionDenied)
    bob.refused(lambda b: b.pricing.model_price("openai", "gpt-nope"), aibill.UnknownModel)
    assert bob.same(
        lambda b: b.pricing.model_price("private", "tuned-1", mandate="acme")
    ).scope == ("mandate")
    root = pair(billing, app, world["root"])
    root.refused(lambda b: b.members("nope"), aibill.UnknownMandate)
    root.refused(lambda b: b.set_billing_model("acme", "monthly"), aibill.InvalidRequest)


# ------------------------------------------------------------------ streaming


def test_the_csv_is_read_as_it_is_iterated() -> None:
    """The client hands out the first line before the rest has arrived, keeps
    a quoted cell's line break inside its record, and closes the answer."""
    sent: list[bytes] = []
    chunks = [b"a,b\r\n1,", b'"two\r\nlines"\r\n', b"3,x\r\n", b"4,y"]

    class Body(httpx.SyncByteStream):
        closed = False

        def __iter__(self) -> Iterator[bytes]:
            for chunk in chunks:
                sent.append(chunk)
                yield chunk

        def close(self) -> None:
            Body.closed = True

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params.get_list("group_by") == ["day", "user"]
        assert request.url.params["spreadsheet_safe"] == "true"
        return httpx.Response(200, stream=Body(), headers={"content-type": "text/csv"})

    client = Client(BASE, "key", http=httpx.Client(transport=httpx.MockTransport(answer)))
    lines = client.iter_usage_report_csv("acme", group_by=("day", "user"), spreadsheet_safe=True)
    assert next(lines) == "a,b\r\n" and len(sent) == 1
    assert list(lines) == ['1,"two\r\nlines"\r\n', "3,x\r\n", "4,y"]
    assert Body.closed


def test_a_broken_csv_stream_is_service_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        def broken() -> Iterator[bytes]:
            yield b"a,b\r\n"
            raise httpx.RemoteProtocolError("peer closed connection")

        return httpx.Response(200, stream=_Stream(broken()))

    client = Client(BASE, "key", http=httpx.Client(transport=httpx.MockTransport(answer)))
    lines = client.iter_history_csv("acme")
    assert next(lines) == "a,b\r\n"
    with pytest.raises(ServiceUnavailable):
        next(lines)


class _Stream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks
