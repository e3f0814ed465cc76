"""Hostile text (DESIGN rule 12): whatever text is sent, drawn from all of
Unicode (lone surrogates, NUL, control and bidirectional characters, Rich
markup, formulas, texts longer than any field), into any text field of any
write, through the library, over HTTP or through the dashboard's forms, on
SQLite and on PostgreSQL alike:

* either the write is refused with 422 ``invalid_request`` naming the field,
  and nothing at all is written;
* or it is stored, and every read gives it back intact: the history, the
  holds, the audit log, the CSV and JSON exports, the settings lists, the
  dashboard's pages and the CLI's tables and JSON.

Before the text checks, one lone surrogate in a hold's metadata was stored
and made every later read of the mandate answer 500, forever.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from html import unescape
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette import testclient
from typer.testing import CliRunner

import aibill
from aibill import Billing
from aibill.api import create_app
from aibill.cli import app as cli_app
from aibill.domain import errors as e
from aibill.store.schema import metadata as schema

EVERY_CHARACTER = st.characters(codec=None, categories=None)  # lone surrogates included
NASTY = [
    "\ud800",
    "\udfff",
    "\x00",
    "\x1b[31mred",
    "line\r\nfeed",
    "\u202egnp.exe",
    "\u2028",
    "\x85",
    "\ufeff",
    "[bold red]x[/]",
    "[/]",
    ":smile:",
    '=HYPERLINK("http://x")',
    "+1+1",
    "@SUM(1,1)",
    "-2",
    "<script>alert(1)</script>",
    "&amp;",
    '"quoted",comma',
    "tab\there",
    "multi\nline",
    "Zürich 東京 مرحبا 👩‍👩‍👧",
    " padded ",
    "",
    "   ",
]
HOSTILE = st.one_of(
    st.text(EVERY_CHARACTER, max_size=12),
    st.sampled_from(NASTY),
    st.tuples(st.sampled_from(NASTY), st.text(EVERY_CHARACTER, max_size=4)).map("".join),
    st.sampled_from([63, 64, 65, 127, 128, 129, 200, 201, 500, 501]).map(lambda n: "é" * n),
)
httpx = testclient.httpx  # the HTTP client the test client is built on (httpx or httpx2)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ROOT_SCOPES = ["billing:read", "billing:admin"]


class NotSent(Exception):
    """The text cannot be put on the wire at all (an HTTP client refuses it)."""


# ------------------------------------------------------------------ the world


@dataclass
class World:
    """One database, with a mandate ``acme`` (alice its admin), the provider
    ``openai``, a system admin's key, the API and the dashboard in process."""

    billing: Billing
    db_url: str
    api: TestClient
    web: TestClient
    root_key: str
    count: int = 0
    stored: list[tuple[str, str]] = field(default_factory=list)

    def unique(self) -> str:
        self.count += 1
        return f"u{self.count}"

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A request as a client would put it on the wire: JSON with ``\\uXXXX``
        escapes (a lone surrogate travels as ``"\\ud800"``), headers as bytes."""
        raw: dict[str, bytes] = {"Authorization": f"Bearer {self.root_key}".encode()}
        for name, value in (headers or {}).items():
            raw[name] = value.encode("utf-8", "surrogatepass")
        content = None
        if body is not None:
            raw["Content-Type"] = b"application/json"
            content = json.dumps(body).encode("ascii")
        try:
            return self.api.request(method, path, content=content, headers=raw)  # type: ignore[arg-type]
        except (UnicodeError, httpx.LocalProtocolError, ValueError) as exc:
            raise NotSent(str(exc)) from None

    def fingerprint(self) -> tuple[int, ...]:
        """How many rows each table holds: unchanged means nothing was written."""
        with self.billing.engine.connect() as conn:
            return tuple(
                conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in schema.sorted_tables
            )


def url_text(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    b = aibill.connect(db_url)
    b.add_user("root")
    b.access.add_sysadmin("root")
    b.add_user("alice")
    b.create_mandate("acme", billing_model="unlimited")
    b.add_member("acme", "alice", role="admin")
    b.access.register_provider("openai", display_name="OpenAI")
    b.pricing.set_exchange_rate(
        "USD", "CHF", D("0.80"), valid_from=datetime(2020, 1, 1, tzinfo=UTC)
    )
    root = b.keys.create_key(user="root", mandate=None, scopes=ROOT_SCOPES).secret
    app = create_app(b, sweep_interval_s=0)
    with TestClient(app) as api, TestClient(app) as web:
        form = web.get("/sign-in")
        signed = web.post(
            "/sign-in",
            data={"csrf": CSRF.search(form.text).group(1), "api_key": root},  # type: ignore[union-attr]
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        yield World(b, db_url, api, web, root)
    b.close()


# ------------------------------------------------------------------ the writes


@dataclass(frozen=True)
class Write:
    """One text field of one write: how to send ``text`` into it through the
    library and over HTTP (``None``: not that way), and how to read back what
    was stored (``None``: the field is not shown back, as for idempotency keys)."""

    name: str
    lib: Callable[[World, str, str], Any] | None
    http: Callable[[World, str, str], httpx.Response] | None
    stored: Callable[[World, str, str], Any] | None = None

    def __repr__(self) -> str:
        return self.name


def _entry(w: World, entry_id: str) -> Any:
    found = [x for x in w.billing.history("acme", limit=1000).entries if x.id == entry_id]
    assert found, f"entry {entry_id} is not in the history"
    return found[0]


def _hold(w: World, u: str) -> str:
    return w.billing.hold("acme", amount=D("0.01"), user="alice", idempotency_key=f"{u}-h").id


def _ledger_writes() -> list[Write]:
    writes: list[Write] = []

    def credit_http(fld: str) -> Callable[[World, str, str], httpx.Response]:
        def go(w: World, t: str, u: str) -> httpx.Response:
            if fld == "idempotency_key":
                return w.send(
                    "POST", "/v1/mandates/acme/credits", {"amount": "1"}, {"Idempotency-Key": u + t}
                )
            return w.send(
                "POST", "/v1/mandates/acme/credits", {"amount": "1", fld: t}, {"Idempotency-Key": u}
            )

        return go

    writes.append(
        Write(
            "credit.description",
            lambda w, t, u: w.billing.credit("acme", D("1"), description=t, idempotency_key=u).id,
            credit_http("description"),
            lambda w, ident, t: _entry(w, ident).description,
        )
    )
    writes.append(
        Write(
            "credit.idempotency_key",
            lambda w, t, u: w.billing.credit("acme", D("1"), idempotency_key=u + t).id,
            credit_http("idempotency_key"),
        )
    )
    for kind in ("hold", "usage"):
        for fld in (
            "feature_code",
            "feature_instance",
            "workflow_id",
            "model",
            "metadata",
            "metadata key",
            "idempotency_key",
            "description",
        ):
            if kind == "hold" and fld == "description":
                continue
            writes.append(_tagged_write(kind, fld))
    writes.append(
        Write(
            "capture.description",
            lambda w, t, u: w.billing.capture(_hold(w, u), amount=D("0.01"), description=t).id,
            lambda w, t, u: w.send(
                "POST", f"/v1/holds/{_hold(w, u)}/capture", {"amount": "0.01", "description": t}
            ),
            lambda w, ident, t: _entry(w, ident).description,
        )
    )
    writes.append(
        Write(
            "release.idempotency_key",
            lambda w, t, u: w.billing.release(_hold(w, u), idempotency_key=u + t).id,
            lambda w, t, u: w.send(
                "POST", f"/v1/holds/{_hold(w, u)}/release", None, {"Idempotency-Key": u + t}
            ),
        )
    )
    return writes


def _tagged_write(kind: str, fld: str) -> Write:
    """A hold or a usage record (by amount, for alice) with ``text`` in one field."""

    def args(t: str, u: str) -> tuple[dict[str, Any], str]:
        body: dict[str, Any] = {"amount": "0.01", "user": "alice"}
        key = u
        if fld == "metadata":
            body["metadata"] = {"note": t}
        elif fld == "metadata key":
            body["metadata"] = {t: "v"}
        elif fld == "idempotency_key":
            key = u + t
        elif fld == "model":
            body.update(provider="openai", model=t)
        else:
            body[fld] = t
        return body, key

    def lib(w: World, t: str, u: str) -> str:
        body, key = args(t, u)
        body["amount"] = D(body["amount"])
        if kind == "hold":
            return w.billing.hold("acme", idempotency_key=key, **body).id
        return w.billing.record_usage("acme", idempotency_key=key, **body).id

    def http(w: World, t: str, u: str) -> httpx.Response:
        body, key = args(t, u)
        path = "/v1/mandates/acme/holds" if kind == "hold" else "/v1/mandates/acme/usage"
        return w.send("POST", path, body, {"Idempotency-Key": key})

    def stored(w: World, ident: str, t: str) -> Any:
        found = w.billing.get_hold(ident) if kind == "hold" else _entry(w, ident)
        if fld == "metadata":
            return found.metadata["note"]
        if fld == "metadata key":
            return next(iter(found.metadata))
        return getattr(found, fld)

    return Write(f"{kind}.{fld}", lib, http, None if fld == "idempotency_key" else stored)


def _admin_writes() -> list[Write]:
    b = lambda w: w.billing  # noqa: E731
    return [
        Write(
            "price.model",
            lambda w, t, u: (
                b(w).pricing.set_custom_price("openai", t, input_mtok="1", output_mtok="2").model
            ),
            lambda w, t, u: w.send(
                "POST",
                "/v1/prices",
                {"provider": "openai", "model": t, "input_mtok": "1", "output_mtok": "2"},
            ),
            lambda w, ident, t: next(p.model for p in b(w).pricing.custom_prices() if p.model == t),
        ),
        Write(
            "markup.model",
            lambda w, t, u: (
                b(w).pricing.set_markup("10", mandate="acme", provider="openai", model=t).model
            ),
            lambda w, t, u: w.send(
                "POST",
                "/v1/markups",
                {"percent": "10", "mandate": "acme", "provider": "openai", "model": t},
            ),
            lambda w, ident, t: next(m.model for m in b(w).pricing.markups("acme") if m.model == t),
        ),
        Write(
            "rate.source",
            lambda w, t, u: (
                b(w).pricing.set_exchange_rate(
                    "USD", "EUR", D("0.9"), valid_from=_when(u), source=t
                )
                and u
            ),
            lambda w, t, u: w.send(
                "POST",
                "/v1/exchange-rates",
                {
                    "base": "USD",
                    "quote": "EUR",
                    "rate": "0.9",
                    "valid_from": _when(u).isoformat(),
                    "source": t,
                },
            ),
            lambda w, ident, t: next(
                r.source for r in b(w).pricing.exchange_rates() if r.valid_from == _when(ident)
            ),
        ),
        Write(
            "role.description",
            lambda w, t, u: b(w).access.define_role("acme", f"r{u}", t).role,
            lambda w, t, u: w.send(
                "POST", "/v1/mandates/acme/roles", {"role": f"r{u}", "description": t}
            ),
            lambda w, ident, t: next(
                r.description for r in b(w).access.custom_roles("acme") if r.role == ident
            ),
        ),
        Write(
            "provider.display_name",
            lambda w, t, u: b(w).access.register_provider(f"p{u}", display_name=t).provider,
            lambda w, t, u: w.send(
                "POST", "/v1/providers", {"provider": f"p{u}", "display_name": t}
            ),
            lambda w, ident, t: next(
                p.display_name for p in b(w).access.providers() if p.provider == ident
            ),
        ),
        Write(
            "key.name",
            lambda w, t, u: b(w).keys.create_key(user="alice", mandate="acme", name=t).info.key_id,
            lambda w, t, u: w.send(
                "POST",
                "/v1/mandates/acme/keys",
                {"user": "alice", "scopes": ["billing:use"], "name": t},
            ),
            lambda w, ident, t: next(
                k.name for k in b(w).keys.list_keys("acme") if k.key_id == ident
            ),
        ),
        Write(
            "limit.feature_instance",
            lambda w, t, u: _subject(b(w).set_spending_limit("acme", D("100"), feature_instance=t)),
            lambda w, t, u: w.send(
                "PUT", "/v1/mandates/acme/limits", {"amount": "100", "feature_instance": t}
            ),
            lambda w, ident, t: next(
                x.subject for x in b(w).spending_limits("acme") if x.subject == t
            ),
        ),
        Write(
            "user.id",
            lambda w, t, u: b(w).add_user(t),
            lambda w, t, u: w.send("POST", "/v1/users", {"id": t}),
            lambda w, ident, t: next(x for x in b(w).users() if x == t),
        ),
        Write(
            "rule.item",
            lambda w, t, u: b(w).access.add_rule("acme", "viewer", "resource", t, ["view"]).rule_id,
            lambda w, t, u: w.send(
                "POST",
                "/v1/mandates/acme/rules",
                {"role": "viewer", "context": "resource", "item": t, "permissions": ["view"]},
            ),
            lambda w, ident, t: next(r.item for r in b(w).access.rules("acme") if r.item == t),
        ),
    ]


def _when(u: str) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=int(u.lstrip("u")))


def _subject(limit: Any) -> str:
    assert limit is not None
    return str(limit.subject)


WRITES = _ledger_writes() + _admin_writes()


# ------------------------------------------------------------------ the reads


def read_everything(w: World) -> None:
    """Every read of what acme and the platform hold, through the library, over
    HTTP and on the dashboard: each must work and be well formed."""
    b = w.billing
    entries = b.history("acme", limit=1000).entries
    json.dumps(aibill_json(entries), ensure_ascii=False).encode("utf-8")
    json.dumps(aibill_json(b.open_holds("acme", limit=1000)), ensure_ascii=False).encode("utf-8")
    for mandate in ("acme", None):
        json.dumps(
            aibill_json(b.audit_log(mandate, limit=1000).records), ensure_ascii=False
        ).encode("utf-8")
    for safe in (True, False):
        out = io.StringIO()
        b.export_history_csv("acme", out, spreadsheet_safe=safe)
        rows = list(csv.reader(io.StringIO(out.getvalue())))
        assert len(rows) == len(entries) + 1
        out.getvalue().encode("utf-8")
    group = ["feature_code", "feature_instance", "workflow_id", "model"]
    "".join(b.iter_usage_report_csv("acme", group_by=group)).encode("utf-8")
    for path in (
        "/v1/mandates/acme/entries?limit=1000",
        "/v1/mandates/acme/holds?limit=1000",
        "/v1/mandates/acme/audit?limit=1000",
        "/v1/audit?limit=1000",
        "/v1/mandates/acme/usage-report?" + "&".join(f"group_by={g}" for g in group),
        "/v1/prices",
        "/v1/markups?mandate=acme",
        "/v1/exchange-rates",
        "/v1/mandates/acme/roles",
        "/v1/mandates/acme/rules",
        "/v1/providers",
        "/v1/mandates/acme/keys",
        "/v1/mandates/acme/limits",
        "/v1/mandates/acme/members",
        "/v1/users",
    ):
        r = w.send("GET", path)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
        r.json()
    for path in (
        "/v1/mandates/acme/entries.csv",
        "/v1/mandates/acme/usage-report.csv?group_by=workflow_id",
    ):
        r = w.send("GET", path)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
        list(csv.reader(io.StringIO(r.text)))
    for path in (
        "/",
        "/m/acme",
        "/m/acme/transactions",
        "/m/acme/transactions.csv",
        "/m/acme/usage",
        "/m/acme/admin",
        "/platform",
    ):
        r = w.web.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])


def aibill_json(value: Any) -> Any:
    from aibill.cli.core import to_json

    return to_json(value)


def probe_filters(w: World, t: str) -> None:
    """The text as a filter, a query parameter and a path parameter: found, or
    refused with 422 or 404, never a server error."""
    try:
        w.billing.history("acme", workflow_id=t, model=t)
        w.billing.usage_report("acme", group_by=["day"], feature_code=t)
    except e.InvalidRequest:
        pass
    q = url_text(t)
    for path in (
        f"/v1/mandates/acme/entries?workflow_id={q}&user={q}",
        f"/v1/mandates/acme/usage-report?provider={q}",
        f"/v1/mandates/{q}/entries",
        f"/v1/holds/acme:{q}",
        f"/v1/mandates/acme/keys/{q}",
    ):
        r = w.send("GET", path)
        assert r.status_code in (200, 403, 404, 422), (path, r.status_code, r.text[:500])
        r.json()
    r = w.web.get(f"/m/acme/transactions?workflow_id={q}")
    assert r.status_code in (200, 422), r.text[:500]
    r = w.web.get(f"/m/{q}/transactions")
    assert r.status_code in (200, 404, 422), r.text[:500]


# ------------------------------------------------------------------ the property


def refused_with_422(outcome: Any) -> bool:
    """Whether the outcome is the refusal rule 12 asks for: 422 invalid_request
    naming a field."""
    if isinstance(outcome, e.AibillError):
        assert outcome.code == "invalid_request", outcome
        assert outcome.details.get("field"), outcome
        json.dumps(outcome.to_dict(), ensure_ascii=False).encode("utf-8")
        return True
    if isinstance(outcome, httpx.Response) and outcome.status_code >= 400:
        assert outcome.status_code == 422, (outcome.status_code, outcome.text[:500])
        problem = outcome.json()
        assert problem["code"] == "invalid_request", problem
        named = (problem.get("details") or {}).get("field") or (problem.get("errors") or [{}])[
            0
        ].get("field")
        assert named, problem
        return True
    return False


def ident_of(write: Write, outcome: Any, t: str, u: str) -> str:
    """What identifies the stored thing: the library's answer, or the HTTP body's."""
    if not isinstance(outcome, httpx.Response):
        return str(outcome)
    body = outcome.json()
    named = {"role.description": f"r{u}", "provider.display_name": f"p{u}", "rate.source": u}
    if write.name in named:
        return named[write.name]
    if write.name == "key.name":
        return str(body["key"]["id"])
    if isinstance(body, dict) and "id" in body:
        return str(body["id"])
    return t


def attempt(w: World, write: Write, channel: str, t: str) -> None:
    """Send ``t`` into one field; check that it is refused with nothing written,
    or stored and read back intact, and that every read still works."""
    u = w.unique()
    send = write.lib if channel == "lib" else write.http
    assert send is not None
    before = w.fingerprint() if not write.name.startswith(("capture.", "release.")) else None
    try:
        outcome: Any = send(w, t, u)
    except NotSent:
        return
    except e.AibillError as exc:
        outcome = exc
    if refused_with_422(outcome):
        if before is not None:
            assert w.fingerprint() == before, f"{write.name}: refused, yet something was written"
    else:
        if isinstance(outcome, httpx.Response):
            assert outcome.status_code in (200, 201), (outcome.status_code, outcome.text[:500])
        if write.stored is not None:
            ident = ident_of(write, outcome, t, u)
            assert write.stored(w, ident, t) == t, f"{write.name}: not stored intact"
            w.stored.append((write.name, t))
    read_everything(w)
    probe_filters(w, t)


@pytest.mark.parametrize("channel", ["lib", "http"])
def test_any_text_into_any_field_is_refused_or_kept_intact(world: World, channel: str) -> None:
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(write=st.sampled_from(WRITES), text=HOSTILE)
    def check(write: Write, text: str) -> None:
        attempt(world, write, channel, text)

    check()
    cli_reads_everything(world)


# ------------------------------------------------------------------ the CLI


def cli_reads_everything(w: World) -> None:
    """The CLI's tables render whatever was stored (exit 0), and its JSON gives
    every stored description back."""
    runner = CliRunner()
    base = ["--db", w.db_url]
    for args in (
        ["history", "acme", "--limit", "1000"],
        ["holds", "acme", "--limit", "1000"],
        ["audit", "acme"],
        ["audit"],
        ["export", "acme", "history"],
        ["export", "acme", "history", "--format", "json"],
        ["report", "acme", "--by", "feature_code,workflow_id"],
        ["key", "list", "--mandate", "acme"],
        ["rule", "list", "acme"],
        ["role", "list", "acme"],
        ["provider", "list"],
        ["price", "list"],
        ["markup", "list", "--mandate", "acme"],
        ["fx", "list"],
        ["limit", "list", "acme"],
        ["member", "list", "acme"],
        ["user", "list"],
    ):
        result = runner.invoke(cli_app, [*base, *args], env={"COLUMNS": "120"})
        assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
    out = runner.invoke(cli_app, [*base, "history", "acme", "--limit", "1000", "--json"])
    assert out.exit_code == 0, out.stderr
    texts = json.dumps(json.loads(out.stdout), ensure_ascii=False)
    for name, t in w.stored:
        if name.endswith("description") and name.startswith(("credit", "usage", "capture")):
            assert json.dumps(t, ensure_ascii=False)[1:-1] in texts, (name, t)


# ------------------------------------------------------------------ pinned cases


def test_a_lone_surrogate_in_metadata_is_refused_and_the_history_stays_readable(
    world: World,
) -> None:
    """The report's probe: ``"\\ud800"`` in a hold's metadata, sent by a
    client, is 422 naming ``metadata.note``; nothing is written; every read works."""
    before = world.fingerprint()
    r = world.send(
        "POST",
        "/v1/mandates/acme/holds",
        {"amount": "0.01", "user": "alice", "metadata": {"note": "\ud800"}},
        {"Idempotency-Key": "poison"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"
    assert r.json()["details"]["field"] == "metadata.note"
    assert world.fingerprint() == before
    with pytest.raises(e.InvalidRequest) as caught:
        world.billing.hold(
            "acme", amount=D("0.01"), metadata={"note": "\ud800"}, idempotency_key="p"
        )
    assert caught.value.details["field"] == "metadata.note"
    assert world.fingerprint() == before
    read_everything(world)


@pytest.mark.parametrize(
    ("body", "headers", "field_named"),
    [
        ({"amount": "1", "description": "a\x00b"}, {"Idempotency-Key": "n1"}, "description"),
        ({"amount": "1"}, {"Idempotency-Key": "n\x01"}, "Idempotency-Key"),
        ({"amount": "1", "description": "\x1b[2J"}, {"Idempotency-Key": "n3"}, "description"),
    ],
)
def test_nul_and_controls_are_the_same_422_on_both_databases(
    world: World, body: dict[str, str], headers: dict[str, str], field_named: str
) -> None:
    """NUL was a retryable 503 on PostgreSQL and stored on SQLite."""
    before = world.fingerprint()
    r = world.send("POST", "/v1/mandates/acme/credits", body, headers)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "invalid_request"
    assert field_named in json.dumps(problem)
    assert "Retry-After" not in r.headers
    assert world.fingerprint() == before


def test_a_tag_longer_than_its_column_is_refused_not_a_503(world: World) -> None:
    """feature_code is 64 characters in the ledger: 65 was a 503 on PostgreSQL
    and stored on SQLite."""
    r = world.send(
        "POST",
        "/v1/mandates/acme/usage",
        {"amount": "0.01", "user": "alice", "feature_code": "f" * 65},
        {"Idempotency-Key": "long"},
    )
    assert r.status_code == 422, r.text
    with pytest.raises(e.InvalidRequest) as caught:
        world.billing.record_usage(
            "acme", amount=D("0.01"), feature_code="f" * 65, idempotency_key="l"
        )
    assert caught.value.details["field"] == "feature_code"


def test_rich_markup_and_html_in_stored_text_are_shown_literally(world: World) -> None:
    """Stored text is data, never markup: the CLI's tables show Rich markup as
    typed (a lone ``[/]`` used to end the command with a MarkupError), and the
    dashboard escapes HTML."""
    markup = "[bold red]x[/] :smile: [/]"
    html = '<img src=x onerror="alert(1)"> &amp;'
    b = world.billing
    b.keys.create_key(user="alice", mandate="acme", name=markup)
    b.record_usage(
        "acme", amount=D("1"), workflow_id=markup, description=html, idempotency_key="m1"
    )
    held = b.hold("acme", amount=D("1"), metadata={"note": markup}, idempotency_key="m2")
    b.access.register_provider("evil", display_name=html)
    b.pricing.set_custom_price("openai", markup, input_mtok="1", output_mtok="2")
    runner = CliRunner()
    for args in (
        ["key", "list", "--mandate", "acme"],
        ["report", "acme", "--by", "workflow_id"],
        ["hold-status", held.id],
        ["price", "show", "openai", markup],  # the model in the title
    ):
        out = runner.invoke(cli_app, ["--db", world.db_url, *args], env={"COLUMNS": "250"})
        assert out.exit_code == 0, (args, out.stdout, out.stderr, out.exception)
        assert markup in out.stdout, (args, out.stdout)  # not bold, no emoji, no MarkupError
    page = world.web.get("/m/acme/admin")  # keys' names, providers' display names
    assert page.status_code == 200
    assert "<img src=x" not in page.text and 'onerror="alert' not in page.text
    assert html in unescape(page.text) and markup in unescape(page.text)
    # An error quoting such text in the CLI stays literal, too.
    bad = runner.invoke(cli_app, ["--db", world.db_url, "history", "[/]acme"])
    assert bad.exit_code == 2, (bad.stdout, bad.stderr, bad.exception)
    assert "[/]acme" in bad.stderr


def test_the_dashboards_credit_form_refuses_a_nul_and_writes_nothing(world: World) -> None:
    page = world.web.get("/m/acme/admin")
    token = CSRF.search(page.text)
    assert token
    before = world.fingerprint()
    form = (
        f"csrf={token.group(1)}&amount=1&reason=payment&idempotency_key=web-1"
        "&description=" + url_text("top\x00up")
    )
    r = world.web.post(
        "/m/acme/admin/credit",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert r.status_code == 422, r.text[:500]
    assert "NUL" in unescape(r.text)
    assert world.fingerprint() == before


@dataclass
class SeedUser:
    id: str


def test_the_seeds_record_usage_keeps_the_usage_and_escapes_what_the_ledger_refuses(
    billing: Billing,
) -> None:
    """The seed's ``recordUsage`` records usage that happened: a description
    with a NUL or a lone surrogate does not lose it; those characters are
    written as visible escapes instead."""
    from aibill.compat.gateway import configure, getService

    billing.create_mandate("acme", billing_model="unlimited", currency="USD")
    billing.add_user("alice")
    billing.add_member("acme", "alice")
    configure(billing)  # base prices in USD, the mandate's currency: no rate needed
    try:
        tx = getService(SeedUser("alice"), "acme").recordUsage(0.1, description="a\x00b\ud800\tc")
    finally:
        configure(None)
    assert tx is not None and tx.description == "a\\x00b\\ud800\tc"
    [entry] = [x for x in billing.history("acme").entries if x.reason == "usage"]
    assert entry.description == "a\\x00b\\ud800\tc"
