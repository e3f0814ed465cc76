"""The web dashboard in process (FastAPI's test client), on SQLite and PostgreSQL:
sign-in and sessions, CSRF, what each role sees and may change, balances and
exports that agree with the service, the idempotent top-up, and pages that
need nothing from the internet."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from html import unescape
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import aibill
from aibill import Billing, ManualClock
from aibill.api import create_app
from aibill.service.sessions import SessionPolicy
from aibill.settings import SettingsError, load_settings
from aibill.store.schema import platform_web_sessions, web_sessions

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
IDEM = re.compile(r'name="idempotency_key" value="([^"]+)"')


@dataclass
class Site:
    billing: Billing
    clock: ManualClock
    keys: dict[str, str]

    def client(self, base_url: str = "http://testserver") -> TestClient:
        return TestClient(create_app(self.billing, sweep_interval_s=0), base_url=base_url)


@pytest.fixture
def site(billing: Billing, clock: ManualClock) -> Iterator[Site]:
    """acme (a pool, CHF): alice admin, bob viewer (with an admin-scoped key: his
    role is what refuses him), dave member. globex (wallets, EUR): carol admin.
    root: a system admin. Some credits and priced usage in acme."""
    b = billing
    b.access.register_provider("openai", display_name="OpenAI")
    b.access.register_provider("anthropic", display_name="Anthropic")
    b.pricing.set_exchange_rate("USD", "CHF", D("0.80"), valid_from=clock() - timedelta(days=30))
    b.pricing.set_exchange_rate("USD", "EUR", D("0.90"), valid_from=clock() - timedelta(days=30))
    b.add_user("root")
    b.access.add_sysadmin("root")
    b.create_mandate("acme", currency="CHF")
    b.create_mandate("globex", billing_model="prepay_user", currency="EUR")
    for mandate, user, role in (
        ("acme", "alice", "admin"),
        ("acme", "bob", "viewer"),
        ("acme", "dave", "member"),
        ("globex", "carol", "admin"),
        ("globex", "erin", "member"),
    ):
        b.add_user(user)
        b.add_member(mandate, user, role=role)
    admin = ["billing:read", "billing:admin"]
    keys = {
        "root": b.keys.create_key(user="root", mandate=None, scopes=admin).secret,
        "alice": b.keys.create_key(user="alice", mandate="acme", scopes=admin).secret,
        "bob": b.keys.create_key(user="bob", mandate="acme", scopes=admin).secret,
        # The dashboard reads (billing:read); a use-only key cannot sign in.
        "dave": b.keys.create_key(
            user="dave", mandate="acme", scopes=["billing:use", "billing:read"]
        ).secret,
        "carol": b.keys.create_key(user="carol", mandate="globex", scopes=admin).secret,
    }
    b.credit("acme", D("250.50"), idempotency_key="pay-1")
    b.credit("globex", D("40"), user="erin", idempotency_key="pay-2")
    for i, (provider, model) in enumerate(
        [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5")]
    ):
        b.record_usage(
            "acme",
            user="dave",
            provider=provider,
            model=model,
            usage=aibill.Usage(input_tokens=12_000, output_tokens=800),
            feature_code="chat",
            idempotency_key=f"use-{i}",
        )
    b.hold("acme", amount=D("1.25"), user="dave", idempotency_key="hold-1")
    yield Site(b, clock, keys)


def sign_in(client: TestClient, key: str, next_path: str = "/") -> Any:
    form = client.get("/sign-in")
    token = CSRF.search(form.text)
    assert token, form.text
    return client.post(
        "/sign-in",
        data={"csrf": token.group(1), "api_key": key, "next": next_path},
        follow_redirects=False,
    )


def sign_in_again(client: TestClient, key: str) -> Any:
    """Post the sign-in form while a session exists (another key, another tab)."""
    session = client.cookies.pop("aibill_session")
    form = client.get("/sign-in")
    client.cookies.set("aibill_session", session)
    return client.post(
        "/sign-in", data={"csrf": csrf_of(form.text), "api_key": key}, follow_redirects=False
    )


def signed_in(site: Site, who: str) -> TestClient:
    client = site.client()
    r = sign_in(client, site.keys[who])
    assert r.status_code == 303, r.text
    return client


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def idem_of(html: str) -> str:
    found = IDEM.search(html)
    assert found, "no idempotency key on the page"
    return found.group(1)


def values(html: str, field: str, within: str | None = None) -> list[str]:
    """The exact amounts (``<data value>``) of the elements marked ``data-field``."""
    if within is not None:
        start = html.index(within)
        html = html[start:]
    return re.findall(
        rf'data-field="{field}"[^>]*>\s*[+\u2212]?<data class="money[^"]*" value="([^"]+)"', html
    )


def error_message(html: str) -> str:
    found = re.search(r'role="alert"[^>]*>(.*?)</div>', html, re.S)
    assert found, html
    return unescape(re.sub(r"<[^>]+>", " ", found.group(1))).strip()


# --------------------------------------------------------------- signing in


def test_pages_lead_to_the_sign_in_form(site: Site) -> None:
    client = site.client()
    for path in ("/", "/m/acme", "/m/acme/transactions?kind=debit", "/m/acme/admin", "/platform"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/sign-in?next=/")
    r = client.get("/sign-in")
    assert r.status_code == 200 and 'type="password"' in r.text


def test_sign_in_gives_a_safe_session_cookie(site: Site) -> None:
    client = site.client()
    r = sign_in(client, site.keys["alice"], "/m/acme/usage")
    assert r.status_code == 303 and r.headers["location"] == "/m/acme/usage"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("aibill_session="))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attrs
    assert "samesite=lax" in cookie.lower() and "path=/" in cookie.lower()
    assert "secure" not in attrs and "max-age" not in attrs  # http, and a browser session
    token = cookie.split(";")[0].split("=", 1)[1]
    assert site.keys["alice"] not in token
    key_secret = site.keys["alice"].rsplit("_", 1)[1]
    assert key_secret not in token
    # The store has the session's hash and key id, never the token's secret or the key.
    with site.billing.engine.connect() as conn:
        rows = conn.execute(select(web_sessions)).all()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0])
    assert token.rsplit(".", 1)[1] not in stored and key_secret not in stored
    assert client.get("/m/acme", follow_redirects=False).status_code == 200
    r = client.get("/sign-in?next=/m/acme", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/m/acme"  # signed in already
    # Signing in again replaces this browser's session.
    assert sign_in_again(client, site.keys["alice"]).status_code == 303
    with site.billing.engine.connect() as conn:
        assert len(conn.execute(select(web_sessions)).all()) == 1

    https = site.client("https://dash.example")
    r = sign_in(https, site.keys["alice"])
    assert r.status_code == 303
    assert "secure" in r.headers["set-cookie"].lower()


def test_a_refused_key_gets_the_same_answer_whatever_the_reason(site: Site) -> None:
    b = site.billing
    revoked = b.keys.create_key(user="alice", mandate="acme", scopes=["billing:read"])
    b.keys.revoke_key(revoked.key_id, mandate="acme")
    expiring = b.keys.create_key(
        user="alice", mandate="acme", expires_at=site.clock() + timedelta(seconds=5)
    )
    site.clock.advance(10)
    alice = site.keys["alice"]
    wrong_secret = alice[:-4] + ("0000" if not alice.endswith("0000") else "1111")
    bad = {
        "malformed": "not a key",
        "empty": "",
        "unknown mandate": alice.replace("aibill_acme_", "aibill_nowhere_"),
        "wrong secret": wrong_secret,
        "revoked": revoked.secret,
        "expired": expiring.secret,
    }
    answers = set()
    for reason, key in bad.items():
        client = site.client()
        r = sign_in(client, key)
        assert r.status_code == 401, reason
        assert "aibill_session" not in r.headers.get("set-cookie", ""), reason
        answers.add(error_message(r.text))
    assert len(answers) == 1


def test_the_sign_in_form_needs_its_own_token_and_origin(site: Site) -> None:
    client = site.client()
    page = client.get("/sign-in")
    token = csrf_of(page.text)
    key = site.keys["alice"]
    r = client.post("/sign-in", data={"api_key": key}, follow_redirects=False)
    assert r.status_code == 403
    r = client.post("/sign-in", data={"api_key": key, "csrf": "0" * 64}, follow_redirects=False)
    assert r.status_code == 403
    other = site.client()  # a token without its cookie
    r = other.post("/sign-in", data={"api_key": key, "csrf": token}, follow_redirects=False)
    assert r.status_code == 403
    r = client.post(
        "/sign-in",
        data={"api_key": key, "csrf": token},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    r = client.post(
        "/sign-in",
        data={"api_key": key, "csrf": token, "next": "//evil.example/x"},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


# ------------------------------------------------------------------- sessions


def test_sign_out_ends_the_session(site: Site) -> None:
    client = signed_in(site, "alice")
    page = client.get("/")
    cookie = client.cookies["aibill_session"]
    r = client.post("/sign-out", data={}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token: refused, still signed in
    assert client.get("/", follow_redirects=False).status_code == 200
    r = client.post("/sign-out", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sign-in?ended=1"
    assert 'aibill_session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    thief = site.client()
    thief.cookies.set("aibill_session", cookie)
    assert thief.get("/", follow_redirects=False).status_code == 303
    with site.billing.engine.connect() as conn:
        assert conn.execute(select(web_sessions)).all() == []


def test_an_idle_session_expires_and_a_busy_one_ends_at_its_age(site: Site) -> None:
    policy = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=2))
    app = create_app(site.billing, sweep_interval_s=0, session_policy=policy)
    client = TestClient(app)
    assert sign_in(client, site.keys["alice"]).status_code == 303
    site.clock.advance(minutes=29)
    assert client.get("/", follow_redirects=False).status_code == 200
    site.clock.advance(minutes=29)  # 58 minutes in, but seen 29 minutes ago
    assert client.get("/", follow_redirects=False).status_code == 200
    site.clock.advance(minutes=31)
    r = client.get("/m/acme", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sign-in?next=/m/acme"

    client = TestClient(app)
    assert sign_in(client, site.keys["alice"]).status_code == 303
    for _ in range(4):  # busy every 25 minutes...
        site.clock.advance(minutes=25)
        assert client.get("/", follow_redirects=False).status_code == 200
    site.clock.advance(minutes=25)  # ...but 2 h 5 min after signing in
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_revoked_key_ends_its_sessions_at_once(site: Site) -> None:
    b = site.billing
    gateway = b.keys.create_key(user="alice", mandate="acme", scopes=["billing:read"])
    client = site.client()
    assert sign_in(client, gateway.secret).status_code == 303
    assert client.get("/m/acme", follow_redirects=False).status_code == 200
    b.keys.revoke_key(gateway.key_id, mandate="acme")
    assert client.get("/m/acme", follow_redirects=False).status_code == 303


def test_a_system_admins_session_lives_with_the_platform(site: Site) -> None:
    client = signed_in(site, "root")
    assert client.get("/", follow_redirects=False).status_code == 200
    with site.billing.engine.connect() as conn:
        assert len(conn.execute(select(platform_web_sessions)).all()) == 1
        assert conn.execute(select(web_sessions)).all() == []
    site.billing.add_user("ops")
    site.billing.access.add_sysadmin("ops")  # the platform keeps a system admin
    site.billing.access.remove_sysadmin("root")
    assert client.get("/", follow_redirects=False).status_code == 303


# ------------------------------------------------------------------------ CSRF


def test_every_form_needs_this_sessions_token_and_origin(site: Site) -> None:
    alice = signed_in(site, "alice")
    page = alice.get("/m/acme/admin").text
    token, idem = csrf_of(page), idem_of(page)
    before = site.billing.balance("acme").balance
    other = signed_in(site, "carol")
    foreign = csrf_of(other.get("/").text)
    form = {"amount": "5", "reason": "payment", "idempotency_key": idem}
    for data, headers in (
        (form, {}),
        ({**form, "csrf": "x" * 64}, {}),
        ({**form, "csrf": foreign}, {}),
        ({**form, "csrf": token}, {"Origin": "https://evil.example"}),
        ({**form, "csrf": token}, {"Referer": "https://evil.example/page"}),
    ):
        r = alice.post("/m/acme/admin/credit", data=data, headers=headers)
        assert r.status_code == 403 and "csrf_refused" in r.text
    assert site.billing.balance("acme").balance == before
    r = alice.post(
        "/m/acme/admin/credit",
        data={**form, "csrf": token},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert site.billing.balance("acme").balance == before + 5


# ----------------------------------------------------------- roles and sight


def test_a_viewer_is_offered_no_change_and_a_forced_one_is_refused(site: Site) -> None:
    bob = signed_in(site, "bob")
    for path in ("/", "/m/acme", "/m/acme/transactions", "/m/acme/usage"):
        html = bob.get(path).text
        assert "/admin" not in html, path
        assert html.count('method="post"') == 1, path  # signing out only
    r = bob.get("/m/acme/admin")
    assert r.status_code == 403 and "permission_denied" in r.text
    token = csrf_of(bob.get("/").text)
    audit_before = site.billing.audit_log("acme", limit=1000).records
    balance_before = site.billing.balance("acme")
    for action, data in (
        ("credit", {"amount": "1000", "idempotency_key": "force-1"}),
        ("billing-model", {"billing_model": "unlimited"}),
        ("markup", {"percent": "0"}),
        ("member", {"user": "mallory", "role": "admin"}),
        ("role", {"user": "bob", "role": "admin"}),
        ("key", {"user": "bob", "scopes": "billing:admin"}),
        ("limit", {"subject": "dave", "amount": "0", "period": "day"}),
    ):
        r = bob.post(f"/m/acme/admin/{action}", data={**data, "csrf": token})
        assert r.status_code == 403, (action, r.text)
        assert "permission_denied" in r.text, action
    assert site.billing.balance("acme") == balance_before
    assert site.billing.audit_log("acme", limit=1000).records == audit_before
    assert site.billing.access.roles_of("acme", "bob") == ["viewer"]
    assert site.billing.get_mandate("acme").billing_model.value == "prepay_mandate"


def test_an_admin_sees_another_mandate_as_if_it_did_not_exist(site: Site) -> None:
    carol = signed_in(site, "carol")
    assert carol.get("/m/globex").status_code == 200
    answers = []
    for path in ("/m/acme", "/m/nowhere"):
        r = carol.get(path)
        assert r.status_code == 404
        answers.append(r.text)
    assert answers[0] == answers[1]
    for path in ("/m/acme/transactions", "/m/acme/usage", "/m/acme/admin", "/m/globex/nothing"):
        assert carol.get(path).status_code == 404
    assert carol.get("/m/acme/transactions.csv").status_code == 404
    r = carol.post("/m/acme/admin/credit", data={"csrf": csrf_of(answers[0]), "amount": "1"})
    assert r.status_code == 404
    overview = carol.get("/").text
    assert 'data-mandate="globex"' in overview and 'data-mandate="acme"' not in overview


def test_a_system_admin_sees_every_mandate(site: Site) -> None:
    root = signed_in(site, "root")
    html = root.get("/").text
    assert 'data-mandate="acme"' in html and 'data-mandate="globex"' in html
    assert root.get("/m/globex/admin").status_code == 200
    admin = root.get("/m/acme/admin").text
    assert 'action="/m/acme/admin/rate"' in admin  # platform settings are offered to them only
    alice = signed_in(site, "alice")
    assert 'action="/m/acme/admin/rate"' not in alice.get("/m/acme/admin").text


# ------------------------------------------------------------- money shown


def test_balances_shown_are_the_services(site: Site) -> None:
    b = site.billing
    alice = signed_in(site, "alice")
    acme = b.balance("acme")
    overview = alice.get("/").text
    card = overview[overview.index('data-mandate="acme"') :]
    assert values(card, "balance")[0] == str(acme.balance)
    assert values(card, "available")[0] == str(acme.available)
    assert values(card, "pending")[0] == str(acme.pending)
    assert str(acme.pending) == "1.250000"
    page = alice.get("/m/acme").text
    assert values(page, "balance")[:2] == [str(acme.balance)] * 2
    assert values(page, "available")[:2] == [str(acme.available)] * 2
    assert "CHF" in page
    # Wallets: every account as the service has it, and their sum.
    carol = signed_in(site, "carol")
    page = carol.get("/m/globex").text
    wallets = b.accounts("globex")
    assert values(page, "balance") == [str(sum((w.balance for w in wallets), D("0.000000")))] + [
        str(w.balance) for w in wallets
    ]
    assert "40.00" in page and "EUR" in page


def holds_shown(html: str) -> list[str]:
    return re.findall(r'data-field="holds"[^>]*>([^<]*)<', html)


def test_more_holds_in_flight_than_listed_are_counted_as_more(site: Site) -> None:
    """The mandate page lists the 100 newest holds in flight; the count says
    when there are more rather than stopping at what is listed."""
    b = site.billing
    alice = signed_in(site, "alice")
    page = alice.get("/m/acme").text
    assert holds_shown(page) == ["1"]
    assert holds_shown(alice.get("/").text) == ["(1)"]
    for i in range(100):
        b.hold("acme", amount=D("0.01"), user="dave", idempotency_key=f"many-{i}")
    page = alice.get("/m/acme").text
    assert holds_shown(page) == ["100+"]
    assert page.count('<code class="id"') == 100
    assert "The 100 newest are listed." in page
    assert holds_shown(alice.get("/").text) == ["(100+)"]
    b.release(b.open_holds("acme", limit=1)[0].id)
    page = alice.get("/m/acme").text
    assert holds_shown(page) == ["100"]
    assert "newest are listed" not in page


def test_a_double_submitted_top_up_credits_once(site: Site) -> None:
    alice = signed_in(site, "alice")
    page = alice.get("/m/acme/admin").text
    form = {
        "csrf": csrf_of(page),
        "idempotency_key": idem_of(page),
        "amount": "12.345678",
        "reason": "payment",
        "description": "invoice 7",
    }
    before = site.billing.balance("acme").balance
    first = alice.post("/m/acme/admin/credit", data=form, follow_redirects=False)
    second = alice.post("/m/acme/admin/credit", data=form, follow_redirects=False)
    assert first.status_code == second.status_code == 303
    assert "notice=credit.applied" in first.headers["location"]
    assert "notice=credit.replayed" in second.headers["location"]
    assert site.billing.balance("acme").balance == before + D("12.345678")
    shown = alice.get(second.headers["location"]).text
    assert "Already applied" in shown
    assert values(alice.get("/m/acme").text, "balance")[0] == str(before + D("12.345678"))
    # A new form is a new top-up.
    fresh = idem_of(alice.get("/m/acme/admin").text)
    assert fresh != form["idempotency_key"]


def test_a_refused_top_up_shows_why_and_keeps_what_was_typed(site: Site) -> None:
    alice = signed_in(site, "alice")
    page = alice.get("/m/acme/admin").text
    key = idem_of(page)
    form = {"csrf": csrf_of(page), "idempotency_key": key, "reason": "payment"}
    r = alice.post("/m/acme/admin/credit", data={**form, "amount": "1.0000001"})
    assert r.status_code == 422
    assert "invalid_amount" in r.text and 'value="1.0000001"' in r.text
    assert f'value="{key}"' in r.text  # the retry is the same top-up
    r = alice.post("/m/acme/admin/credit", data={**form, "amount": "-3"})
    assert r.status_code == 422 and "invalid_amount" in r.text
    assert "Not done." in r.text


# ---------------------------------------------------------- transactions


def _more_entries(site: Site, n: int) -> None:
    for i in range(n):
        site.clock.advance(60)
        site.billing.credit("acme", D(f"{i + 1}.5"), idempotency_key=f"more-{i}", reason="admin")


def test_transactions_filter_and_page_as_the_service_does(site: Site) -> None:
    b = site.billing
    _more_entries(site, 60)
    alice = signed_in(site, "alice")
    html = alice.get("/m/acme/transactions").text
    rows = re.findall(r'data-entry="([^"]+)"', html)
    assert len(rows) == 50
    assert rows == [x.id for x in b.history("acme", limit=50).entries]
    older = re.search(r'href="(\?[^"]*cursor=[^"]+)"', html)
    assert older
    page2 = alice.get("/m/acme/transactions" + unescape(older.group(1))).text
    rows2 = re.findall(r'data-entry="([^"]+)"', page2)
    everything = [x.id for x in b.history("acme", limit=1000).entries]
    assert rows + rows2 == everything
    assert "Newest" in page2 and "page 2" in page2

    html = alice.get("/m/acme/transactions?kind=debit").text
    debits = re.findall(r'data-entry="([^"]+)"', html)
    assert debits == [x.id for x in b.history("acme", kind="debit").entries] and len(debits) == 2
    html = alice.get("/m/acme/transactions?provider=anthropic&user=dave").text
    assert len(re.findall(r'data-entry="', html)) == 1 and "claude-sonnet-4-5" in html
    html = alice.get("/m/acme/transactions?model=gpt-4o").text
    assert len(re.findall(r'data-entry="', html)) == 1
    today = site.clock().date().isoformat()
    html = alice.get(f"/m/acme/transactions?from={today}&to={today}&kind=debit").text
    assert len(re.findall(r'data-entry="', html)) == 2
    html = alice.get("/m/acme/transactions?from=2020-01-01&to=2020-01-02").text
    assert "No transactions match these filters" in html
    r = alice.get("/m/acme/transactions?from=yesterday")
    assert r.status_code == 422 and "invalid_request" in r.text


def test_the_csv_download_is_the_services_export(site: Site) -> None:
    b = site.billing
    _more_entries(site, 3)
    alice = signed_in(site, "alice")
    r = alice.get("/m/acme/transactions.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    assert r.text == "".join(b.iter_history_csv("acme"))
    r = alice.get("/m/acme/transactions.csv?kind=debit&provider=openai")
    assert r.text == "".join(b.iter_history_csv("acme", kind="debit", provider="openai"))
    assert len(r.text.strip().splitlines()) == 2
    page = alice.get("/m/acme/transactions?kind=debit").text
    assert 'href="/m/acme/transactions.csv?kind=debit"' in page


def test_usage_shows_the_services_totals(site: Site) -> None:
    b = site.billing
    alice = signed_in(site, "alice")
    html = alice.get("/m/acme/usage").text
    report = b.usage_report("acme", group_by=["provider"], since=site.clock() - timedelta(days=1))
    total = sum((r.amount for r in report), D("0.000000"))
    assert total > 0
    assert values(html, "usage-total") == [str(total)]
    for row in report:
        assert f'value="{row.amount}"' in html
    assert 'id="usage-data"' in html and "chart-daily" in html
    html = alice.get("/m/acme/usage?period=last-month").text
    assert "No usage in this period" in html
    r = alice.get("/m/acme/usage?period=custom&from=2026-03-05&to=2026-03-01")
    assert r.status_code == 422


# ----------------------------------------------------------- administration


def _post(client: TestClient, path: str, **data: str | list[str]) -> Any:
    """Send a form of the page ``path`` belongs to, with that page's CSRF token."""
    page = client.get(path.rsplit("/", 1)[0]).text
    return client.post(path, data={"csrf": csrf_of(page), **data}, follow_redirects=False)


def test_administration_changes_go_through_the_service(site: Site) -> None:
    b = site.billing
    alice = signed_in(site, "alice")
    ok = 303
    assert _post(alice, "/m/acme/admin/markup", percent="20", provider="openai").status_code == ok
    assert [str(m.percent) for m in b.pricing.markups("acme")] == ["20"]
    r = _post(alice, "/m/acme/admin/markup", clear="1", provider="openai")
    assert r.status_code == ok and b.pricing.markups("acme") == []
    r = _post(alice, "/m/acme/admin/limit", scope="user", subject="dave", period="day", amount="3")
    assert r.status_code == ok and b.spending_limits("acme")[0].amount == D("3")
    r = _post(alice, "/m/acme/admin/limit", scope="user", subject="dave", period="day", remove="1")
    assert r.status_code == ok and b.spending_limits("acme") == []
    assert _post(alice, "/m/acme/admin/member", user="frank", role="viewer").status_code == ok
    assert b.access.roles_of("acme", "frank") == ["viewer"]
    assert _post(alice, "/m/acme/admin/role", user="frank", role="member").status_code == ok
    assert (
        _post(alice, "/m/acme/admin/role", user="frank", role="viewer", revoke="1").status_code
        == ok
    )
    assert b.access.roles_of("acme", "frank") == ["member"]
    r = _post(
        alice,
        "/m/acme/admin/rule",
        role="viewer",
        context="resource",
        item="resource.aicore.openai",
        permissions=["view"],
    )
    assert r.status_code == ok
    (rule,) = b.access.rules("acme")
    assert b.is_provider_allowed("acme", "bob", "openai")
    assert _post(alice, "/m/acme/admin/rule", remove=rule.rule_id).status_code == ok
    assert b.access.rules("acme") == []
    r = _post(
        alice,
        "/m/acme/admin/price",
        provider="openai",
        model="tuned-1",
        input_mtok="1.5",
        output_mtok="3",
        currency="USD",
    )
    assert r.status_code == ok and b.pricing.custom_prices("acme")[0].model == "tuned-1"
    r = _post(alice, "/m/acme/admin/rate", base="USD", quote="CHF", rate="0.5")
    assert r.status_code == 403 and "permission_denied" in r.text  # platform settings
    r = _post(alice, "/m/acme/admin/billing-model", billing_model="unlimited")
    assert r.status_code == 409 and "holds_in_flight" in r.text  # dave's hold
    audit = alice.get("/m/acme/admin").text
    assert "markup.set" in audit and "member.add" in audit and "rule.add" in audit

    root = signed_in(site, "root")
    r = _post(root, "/m/acme/admin/rate", base="USD", quote="CHF", rate="0.85", valid_from="")
    assert r.status_code == ok
    assert b.pricing.exchange_rate("USD", "CHF", site.clock()) == D("0.85")


def test_a_new_key_is_shown_once_and_can_be_revoked(site: Site) -> None:
    b = site.billing
    alice = signed_in(site, "alice")
    r = _post(
        alice,
        "/m/acme/admin/key",
        user="dave",
        name="gateway",
        scopes=["billing:use", "billing:read"],  # the dashboard reads: billing:read
    )
    assert r.status_code == 201
    found = re.search(r'id="new-key-secret">([^<]+)<', r.text)
    assert found
    secret = found.group(1)
    assert b.authenticate(secret).principal.user == "dave"
    assert r.headers["cache-control"] == "no-store"
    assert secret not in alice.get("/m/acme/admin").text
    key_id = secret.rsplit("_", 2)[1]
    dave = site.client()
    assert sign_in(dave, secret).status_code == 303
    assert dave.get("/m/acme", follow_redirects=False).status_code == 200
    r = _post(alice, "/m/acme/admin/key-revoke", key_id=key_id)
    assert r.status_code == 303
    assert b.keys.get_key(key_id, mandate="acme").revoked_at is not None
    assert dave.get("/m/acme", follow_redirects=False).status_code == 303


# ------------------------------------------------------------------ platform

PLATFORM_FORMS: tuple[tuple[str, dict[str, str | list[str]]], ...] = (
    ("provider", {"provider": "mistral", "enabled": "1"}),
    ("provider-enabled", {"provider": "openai", "enabled": "0"}),
    ("markup", {"percent": "0"}),
    ("markup", {"clear": "1"}),
    (
        "price",
        {"provider": "openai", "model": "gpt-4o", "input_mtok": "0", "output_mtok": "0"},
    ),
    ("rate", {"base": "USD", "quote": "CHF", "rate": "9"}),
    ("sysadmin", {"user": "alice"}),
    ("sysadmin", {"user": "root", "remove": "1"}),
    ("key", {"user": "root", "scopes": ["billing:admin"]}),
    ("key-revoke", {"key_id": "0" * 12}),
)


@dataclass(frozen=True)
class PlatformState:
    """Everything the platform page can change, as the service has it."""

    audit: list[Any]
    acme_audit: list[Any]
    providers: list[Any]
    markups: list[Any]
    prices: list[Any]
    rates: list[Any]
    sysadmins: list[str]
    keys: list[Any]

    @classmethod
    def of(cls, b: Billing) -> PlatformState:
        return cls(
            audit=b.audit_log(None, limit=1000).records,
            acme_audit=b.audit_log("acme", limit=1000).records,
            providers=b.access.providers(),
            markups=b.pricing.markups(None),
            prices=b.pricing.custom_prices(None),
            rates=b.pricing.exchange_rates(),
            sysadmins=[u for u in b.users() if b.access.is_sysadmin(u)],
            keys=b.keys.list_keys(None),
        )


def test_the_platform_page_is_offered_to_system_admins_only(site: Site) -> None:
    root = signed_in(site, "root")
    for path in ("/", "/m/acme", "/m/acme/admin"):
        assert 'href="/platform"' in root.get(path).text, path
    html = root.get("/platform").text
    assert '<a href="/platform" aria-current="page">Platform</a>' in html
    for section in ("providers", "markup", "prices", "rates", "sysadmins", "keys", "audit"):
        assert f'id="{section}"' in html, section
    token = csrf_of(html)
    assert 'action="/platform/rates-import" enctype="multipart/form-data"' in html

    before = PlatformState.of(site.billing)
    for who in ("alice", "bob", "dave", "carol"):
        client = signed_in(site, who)
        for path in ("/", "/m/acme" if who != "carol" else "/m/globex"):
            assert "/platform" not in client.get(path).text, (who, path)
        r = client.get("/platform")
        assert r.status_code == 403 and "permission_denied" in r.text, who
        assert "/platform" not in r.text
        mine = csrf_of(client.get("/").text)
        for action, data in PLATFORM_FORMS:
            r = client.post(f"/platform/{action}", data={**data, "csrf": mine})
            assert r.status_code == 403 and "permission_denied" in r.text, (who, action)
        r = client.post(
            "/platform/rates-import",
            data={"csrf": mine},
            files={"file": ("rates.csv", b"base,quote,rate,valid_from\nUSD,CHF,2,2026-01-01\n")},
        )
        assert r.status_code == 403 and "permission_denied" in r.text, who
        # Someone else's token is refused before anything else.
        r = client.post("/platform/markup", data={"percent": "0", "csrf": token})
        assert r.status_code == 403 and "csrf_refused" in r.text
    assert PlatformState.of(site.billing) == before


def test_platform_forms_need_this_sessions_token_and_origin(site: Site) -> None:
    root = signed_in(site, "root")
    token = csrf_of(root.get("/platform").text)
    before = PlatformState.of(site.billing)
    form = {"provider": "openai", "enabled": "0"}
    for data, headers in (
        (form, {}),
        ({**form, "csrf": "x" * 64}, {}),
        ({**form, "csrf": token}, {"Origin": "https://evil.example"}),
    ):
        r = root.post("/platform/provider-enabled", data=data, headers=headers)
        assert r.status_code == 403 and "csrf_refused" in r.text
    r = root.post(
        "/platform/rates-import",
        files={"file": ("rates.csv", b"base,quote,rate,valid_from\nUSD,CHF,2,2026-01-01\n")},
    )
    assert r.status_code == 403 and "csrf_refused" in r.text
    assert PlatformState.of(site.billing) == before


def _platform(client: TestClient, fragment: str = "") -> str:
    html: str = client.get("/platform" + fragment).text
    return html


def test_platform_changes_go_through_the_service_and_show(site: Site) -> None:
    b = site.billing
    root = signed_in(site, "root")
    ok = 303
    # Providers: register one disabled, enable it, disable another.
    r = _post(root, "/platform/provider", provider="mistral", display_name="Mistral AI")
    assert r.status_code == ok and r.headers["location"].endswith("#providers")
    assert {p.provider: p.enabled for p in b.access.providers()}["mistral"] is False
    html = root.get(r.headers["location"]).text
    assert "Provider saved." in html and "Mistral AI" in html
    assert 'aria-label="Enable Mistral AI"' in html
    assert _post(root, "/platform/provider-enabled", provider="mistral", enabled="1").status_code
    assert _post(root, "/platform/provider-enabled", provider="openai", enabled="0").status_code
    states = {p.provider: p.enabled for p in b.access.providers()}
    assert states == {"anthropic": True, "mistral": True, "openai": False}
    html = _platform(root)
    assert 'aria-label="Disable Mistral AI"' in html and 'aria-label="Enable OpenAI"' in html
    assert not b.is_provider_allowed("acme", "dave", "openai")
    # Markups: the default until one is set.
    assert "the default, 50&#8239;%, applies" in html
    assert _post(root, "/platform/markup", percent="35", provider="anthropic").status_code == ok
    assert _post(root, "/platform/markup", percent="40").status_code == ok
    assert [(m.provider, str(m.percent)) for m in b.pricing.markups(None)] == [
        (None, "40"),
        ("anthropic", "35"),
    ]
    assert b.pricing.markup_for("acme", "openai", "gpt-4o") == D("40")
    html = _platform(root)
    assert "Now 40&#8239;%" in html and "35&#8239;%" in html
    r = _post(root, "/platform/markup", clear="1")
    assert r.status_code == ok and [m.provider for m in b.pricing.markups(None)] == ["anthropic"]
    # A custom price for every mandate, with the optional parts.
    r = _post(
        root,
        "/platform/price",
        provider="openai",
        model="tuned-2",
        input_mtok="1.5",
        output_mtok="6",
        cache_read_mtok="0.15",
        cache_write_mtok="1.875",
        per_request="0.001",
        currency="EUR",
        valid_from="2026-01-01",
    )
    assert r.status_code == ok
    (p,) = b.pricing.custom_prices(None)
    assert (p.model, p.mandate, p.currency) == ("tuned-2", None, "EUR")
    assert (p.cache_read_mtok, p.cache_write_mtok, p.per_request) == (
        D("0.15"),
        D("1.875"),
        D("0.001"),
    )
    assert p.valid_from == datetime(2026, 1, 1, tzinfo=UTC)
    html = _platform(root)
    assert "openai / tuned-2" in html and 'value="1.875"' in html
    # An exchange rate, with its source.
    r = _post(root, "/platform/rate", base="EUR", quote="CHF", rate="0.94", source="ECB")
    assert r.status_code == ok
    assert b.pricing.exchange_rate("EUR", "CHF", site.clock()) == D("0.94")
    html = _platform(root)
    assert "EUR → CHF" in html and 'value="0.94"' in html and "ECB" in html
    # System admins: the user must exist.
    r = _post(root, "/platform/sysadmin", user="alice")
    assert r.status_code == ok and b.access.is_sysadmin("alice")
    html = _platform(root)
    assert (
        'data-user="alice"' in html
        and "System admin added." in root.get(r.headers["location"]).text
    )
    r = _post(root, "/platform/sysadmin", user="alice", remove="1")
    assert r.status_code == ok and not b.access.is_sysadmin("alice")
    r = _post(root, "/platform/sysadmin", user="nobody")
    assert r.status_code == 404 and "unknown_user" in r.text
    # The audit log names each change and who made it.
    audit = b.audit_log(None, limit=100).records
    actions = [a.action for a in audit]
    for action in (
        "provider.register",
        "provider.enable",
        "provider.disable",
        "markup.set",
        "markup.clear",
        "custom_price.set",
        "exchange_rate.set",
        "sysadmin.add",
        "sysadmin.remove",
    ):
        assert action in actions, action
    assert {a.actor.split(" ")[0] for a in audit[:10]} == {"sysadmin:root"}
    html = _platform(root)
    assert "sysadmin.remove" in html and "provider.disable" in html


def test_a_refused_platform_form_shows_why_and_keeps_what_was_typed(site: Site) -> None:
    root = signed_in(site, "root")
    before = PlatformState.of(site.billing)
    r = _post(root, "/platform/rate", base="USD", quote="CHF", rate="abc", source="typed")
    assert r.status_code == 422 and "Not done." in r.text
    assert 'value="abc"' in r.text and 'value="typed"' in r.text and "invalid" in r.text
    r = _post(root, "/platform/markup", percent="5", model="gpt-4o")  # a model needs a provider
    assert r.status_code == 422 and 'value="gpt-4o"' in r.text
    r = _post(root, "/platform/provider", provider="Not A Name", display_name="Typed")
    assert r.status_code == 422 and 'value="Not A Name"' in r.text
    assert 'value="Typed"' in r.text and "invalid_request" in r.text
    assert PlatformState.of(site.billing) == before


def _import(client: TestClient, content: bytes) -> Any:
    return client.post(
        "/platform/rates-import",
        data={"csrf": csrf_of(client.get("/platform").text)},
        files={"file": ("rates.csv", content, "text/csv")},
        follow_redirects=False,
    )


def test_importing_exchange_rates_is_all_or_nothing(site: Site) -> None:
    b = site.billing
    root = signed_in(site, "root")
    good = (
        b"base,quote,rate,valid_from,source\r\n"
        b"EUR,CHF,0.94,2026-02-01,ECB\r\n"
        b"\r\n"
        b"GBP,CHF,1.12,2026-02-01T01:00:00+01:00,ECB\r\n"
    )
    bad = b"base,quote,rate,valid_from\nJPY,CHF,0.0061,2026-02-01\nCAD,CHF,1.1.2,2026-02-01\n"
    before = b.pricing.exchange_rates()
    r = _import(root, bad)
    assert r.status_code == 422 and "invalid_request" in r.text
    assert "Line 3:" in error_message(r.text) and "1.1.2" in error_message(r.text)
    assert b.pricing.exchange_rates() == before  # not even line 2
    r = _import(root, b"\xff\xfebase")
    assert r.status_code == 422 and "UTF-8" in r.text
    r = root.post(
        "/platform/rates-import",
        data={"csrf": csrf_of(root.get("/platform").text)},
        follow_redirects=False,
    )
    assert r.status_code == 422 and "Choose a CSV file" in r.text
    assert b.pricing.exchange_rates() == before

    r = _import(root, good)
    assert r.status_code == 303 and "n=2" in r.headers["location"]
    assert "Exchange rates imported: 2 new" in root.get(r.headers["location"]).text
    assert b.pricing.exchange_rate("GBP", "CHF", site.clock()) == D("1.12")
    assert len(b.pricing.exchange_rates()) == len(before) + 2
    r = _import(root, good)  # again: nothing new
    assert "Exchange rates imported: 0 new" in root.get(r.headers["location"]).text
    r = _import(root, b"base,quote,rate,valid_from\nEUR,CHF,0.95,2026-02-01\n")
    assert r.status_code == 409 and "already_exists" in r.text and "Line 2" in r.text
    assert len(b.pricing.exchange_rates()) == len(before) + 2


def test_a_new_platform_key_is_shown_once_and_can_be_revoked(site: Site) -> None:
    b = site.billing
    root = signed_in(site, "root")
    r = _post(root, "/platform/key", user="alice", scopes=["billing:read"])
    assert r.status_code == 403 and "not a system admin" in unescape(r.text)
    r = _post(root, "/platform/key", user="root", name="ops laptop", scopes=["billing:read"])
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    found = re.search(r'id="new-key-secret">([^<]+)<', r.text)
    assert found
    secret = found.group(1)
    assert secret.startswith("aibill-admin_")
    assert b.authenticate(secret).principal.user == "root"
    listed = root.get("/platform").text
    assert secret not in listed and secret.rsplit("_", 1)[1] not in listed
    key_id = secret.rsplit("_", 2)[1]
    assert f'data-key="{key_id}"' in listed and "ops laptop" in listed
    other = site.client()
    assert sign_in(other, secret).status_code == 303
    assert other.get("/", follow_redirects=False).status_code == 200
    r = _post(root, "/platform/key-revoke", key_id=key_id)
    assert r.status_code == 303
    assert b.keys.get_key(key_id, mandate=None).revoked_at is not None
    assert other.get("/", follow_redirects=False).status_code == 303
    assert "api_key.revoke" in root.get("/platform").text


def test_the_platform_audit_log_pages(site: Site) -> None:
    b = site.billing
    for day in range(30):
        b.pricing.set_exchange_rate(
            "USD", "JPY", D(150 + day), valid_from=datetime(2026, 1, 1 + day, tzinfo=UTC)
        )
    root = signed_in(site, "root")
    html = _platform(root)
    first = re.findall(r"<td><code>([a-z_.]+)</code></td>", html)
    assert len(first) == 25
    older = re.search(r'href="(\?audit=[^"]+)" rel="next"', html)
    assert older
    page2 = root.get("/platform" + unescape(older.group(1))).text
    second = re.findall(r"<td><code>([a-z_.]+)</code></td>", page2)
    every = [a.action for a in b.audit_log(None, limit=1000).records]
    assert first + second == every[: len(first) + len(second)]
    assert 'href="/platform#audit">« Newest' in page2


# ------------------------------------------------------- offline and private


def _every_page(site: Site) -> Iterator[tuple[str, str]]:
    anonymous = site.client()
    yield "/sign-in", anonymous.get("/sign-in").text
    yield "/no-such-page", anonymous.get("/no-such-page").text
    yield "/platform", signed_in(site, "root").get("/platform").text
    alice = signed_in(site, "alice")
    for path in (
        "/",
        "/m/acme",
        "/m/acme/transactions",
        "/m/acme/usage",
        "/m/acme/admin",
        "/m/nowhere",
    ):
        yield path, alice.get(path).text


def test_a_mistyped_address_gets_the_dashboards_own_not_found_page(site: Site) -> None:
    anonymous = site.client()
    alice = signed_in(site, "alice")
    for client, signed in ((anonymous, False), (alice, True)):
        for path in ("/nowhere", "/m", "/platforms", "/overview/x?y=1", "/static/nope.css"):
            r = client.get(path, follow_redirects=False)
            assert r.status_code == 404, path
            assert r.headers["content-type"].startswith("text/html"), path
            assert "Not found" in r.text
            assert '<a class="btn" href="/">Back to the overview' in r.text
            assert r.headers["cache-control"] == "no-store"
            assert ("Sign out" in r.text) is signed, path  # the navigation, when signed in
        r = client.post("/nowhere", data={"x": "1"})
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    r = alice.get("/sign-out")  # a form's address typed into the address bar
    assert r.status_code == 405 and r.headers["content-type"].startswith("text/html")
    assert "POST" in r.headers["allow"] and "Back to the overview" in r.text
    # The API and the operators' paths keep their problem documents.
    for path in ("/v1/nowhere", "/v1", "/healthz/x", "/readyz/x", "/metrics/x", "/docs/x"):
        r = anonymous.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json", path
        assert r.json()["code"] == "not_found"
    r = anonymous.delete("/v1/mandates")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_no_page_needs_the_internet(site: Site) -> None:
    for path, html in _every_page(site):
        assert not re.search(r"https?://", html), path
        assert not re.search(r'(?:src|href|action)="//', html), path
        for ref in re.findall(r'(?:src|href|action)="([^"]*)"', html):
            assert ref.startswith(("/", "#", "?")), (path, ref)


def test_assets_are_served_by_the_app(site: Site) -> None:
    client = site.client()
    for path, kind in (
        ("/static/dashboard.css", "text/css"),
        ("/static/dashboard.js", "javascript"),
        ("/static/vendor/chartjs/chart.umd.min.js", "javascript"),
        ("/static/vendor/inter/inter-latin-400-normal.woff2", "font/woff2"),
        ("/static/vendor/inter/inter-latin-600-normal.woff2", "font/woff2"),
        ("/static/vendor/chartjs/LICENSE.md", ""),
        ("/static/vendor/inter/LICENSE", ""),
    ):
        r = client.get(path)
        assert r.status_code == 200 and kind in r.headers["content-type"], path
    css = client.get("/static/dashboard.css").text
    assert not re.search(r"https?://", css)


def test_pages_are_private_and_kept_out_of_the_api_schema(site: Site) -> None:
    alice = signed_in(site, "alice")
    r = alice.get("/m/acme")
    assert r.headers["cache-control"] == "no-store"
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    schema = alice.get("/openapi.json").json()
    assert all(p.startswith(("/v1", "/healthz", "/readyz")) for p in schema["paths"]), list(
        schema["paths"]
    )


def test_times_are_utc_for_the_script_to_localise(site: Site) -> None:
    alice = signed_in(site, "alice")
    html = alice.get("/m/acme/transactions").text
    stamp = site.clock().astimezone(UTC)
    iso = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f'<time datetime="{iso}" title="{stamp:%Y-%m-%d %H:%M:%S} UTC"' in html
    assert datetime.fromisoformat(iso).tzinfo is not None


def test_session_lifetimes_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIBILL_CONFIG", raising=False)
    monkeypatch.setenv("AIBILL_SESSION_IDLE_MINUTES", "5")
    settings = load_settings(session_hours=1)
    assert settings.session_policy == SessionPolicy(
        idle=timedelta(minutes=5), absolute=timedelta(hours=1)
    )
    assert settings.to_env()["AIBILL_SESSION_IDLE_MINUTES"] == "5"
    monkeypatch.delenv("AIBILL_SESSION_IDLE_MINUTES")
    assert load_settings().session_policy == SessionPolicy()
    with pytest.raises(SettingsError):
        load_settings(session_idle_minutes=0)
