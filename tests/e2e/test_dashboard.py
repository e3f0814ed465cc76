"""The dashboard in a real browser: Playwright driving Debian's Chromium (never a
downloaded browser) against a real ``aibill serve`` on SQLite, filled by
``aibill demo``. Every request the page makes must stay on the server (the
browser is cut off from everything else). One screenshot per screen is written
to ``artifacts/screenshots/`` on every run, and the overview's is the picture in
the README and ``docs/dashboard.md`` (``docs/dashboard.png``).

Without Chromium these tests skip, saying why; with ``CI=true`` they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal as D
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import aibill
from tests.e2e.test_serve import Served, clean_env, headers

pytestmark = pytest.mark.slow

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
DOCS_PICTURE = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
RECORDS = 300
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need_chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
        if IN_CI:
            pytest.fail(f"CI=true requires the browser tests to run: {reason}")
        pytest.skip(reason)
    return path


@dataclass
class Dashboard:
    base_url: str
    keys: dict[str, str]
    people: dict[str, str]
    offsite: list[str] = field(default_factory=list)

    def api(self, who: str, path: str) -> Any:
        r = httpx.get(f"{self.base_url}{path}", headers=headers(self.keys[who]), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """``aibill demo`` into a fresh SQLite file, keys for three people, and a
    running ``aibill serve`` on it."""
    _need_chromium()
    workdir = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{workdir / 'demo.db'}"
    started = time.monotonic()
    demo = subprocess.run(
        [sys.executable, "-m", "aibill", "--db", url, "demo", "--records", str(RECORDS)],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    billing = aibill.connect(url)
    try:
        people = {"sysadmin": "platform.ops"}
        for member in billing.members("acme"):
            for role in ("admin", "viewer"):
                if role in member.roles:
                    people.setdefault(role, member.user)
        every = ["billing:read", "billing:admin"]
        keys = {
            "sysadmin": billing.keys.create_key(
                user=people["sysadmin"], mandate=None, scopes=every, name="browser test"
            ).secret,
            "admin": billing.keys.create_key(
                user=people["admin"], mandate="acme", scopes=every, name="browser test"
            ).secret,
            # Every scope: the viewer's role is what refuses changes.
            "viewer": billing.keys.create_key(
                user=people["viewer"], mandate="acme", scopes=every, name="browser test"
            ).secret,
        }
    finally:
        billing.close()
    served = Served(workdir, ["--db", url, "--port", "0"])
    try:
        base_url = served.wait_ready()
        print(f"demo data and server ready in {time.monotonic() - started:.1f}s")
        yield Dashboard(base_url, keys, people)
    finally:
        served.kill()


@pytest.fixture(scope="module")
def browser(dashboard: Dashboard) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=_need_chromium(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Any, dashboard: Dashboard) -> Iterator[Any]:
    """A fresh browser profile that can reach the server and nothing else."""
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 860}, timezone_id="Europe/Zurich", locale="en-GB"
    )
    here = urlsplit(dashboard.base_url).netloc

    def only_the_server(route: Any) -> None:
        if urlsplit(route.request.url).netloc == here:
            route.continue_()
        else:
            dashboard.offsite.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_the_server)
    errors: list[str] = []
    ctx.on("weberror", lambda err: errors.append(str(err.error)))

    def console(message: Any) -> None:
        # Error pages (403, 404) are logged as failed loads; anything else
        # (a script error, a Content Security Policy violation) is a fault.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    ctx.on("console", console)
    yield ctx
    ctx.close()
    assert errors == [], errors
    assert dashboard.offsite == [], f"the pages asked for the internet: {dashboard.offsite}"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, dashboard: Dashboard, who: str, screenshot: str | None = None) -> None:
    page.goto(f"{dashboard.base_url}/")
    assert "/sign-in" in page.url
    page.get_by_label("API key").fill(dashboard.keys[who])
    if screenshot:
        shot(page, screenshot)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{dashboard.base_url}/")


def shown(page: Any, selector: str) -> str:
    value: str = page.locator(selector).first.get_attribute("value")
    return value


# ----------------------------------------------------------------------- tests


def test_sign_in_and_read_the_balances_the_api_gives(context: Any, dashboard: Dashboard) -> None:
    page = context.new_page()
    page.goto(f"{dashboard.base_url}/sign-in")
    shot(page, "sign-in")
    sign_in(page, dashboard, "sysadmin")
    page.wait_for_selector("[data-mandate]")
    cards = page.locator("[data-mandate]")
    assert sorted(cards.evaluate_all("els => els.map(e => e.dataset.mandate)")) == [
        "acme",
        "globex",
        "initech",
    ]
    page.set_viewport_size({"width": 1280, "height": 640})
    shot(page, "overview")
    # The README's and docs/dashboard.md's picture is this screen, as it is now.
    shutil.copyfile(SHOTS / "overview.png", DOCS_PICTURE)
    page.set_viewport_size({"width": 1280, "height": 860})
    for mandate in ("acme", "globex", "initech"):
        accounts = dashboard.api("sysadmin", f"/v1/mandates/{mandate}/accounts")
        card = f"[data-mandate={mandate}]"
        for name in ("balance", "available", "pending"):
            total = sum((D(a[name]) for a in accounts), D("0.000000"))
            assert shown(page, f"{card} [data-field={name}] data") == str(total), (mandate, name)
    acme = dashboard.api("sysadmin", "/v1/mandates/acme/balance")
    assert shown(page, "[data-mandate=acme] [data-field=balance] data") == acme["balance"]
    # Times are in the viewer's timezone, with UTC on hover.
    page.goto(f"{dashboard.base_url}/m/acme")
    stamp = page.locator("#holds time").first
    assert stamp.get_attribute("title").endswith(" UTC")
    assert "UTC" not in stamp.inner_text() and re.search(r"CES?T", stamp.inner_text())
    shot(page, "mandate")


def test_filter_transactions(context: Any, dashboard: Dashboard) -> None:
    page = context.new_page()
    sign_in(page, dashboard, "admin")
    page.get_by_role("link", name="acme", exact=True).click()
    page.get_by_role("navigation", name="Mandate").get_by_role("link", name="Transactions").click()
    rows = page.locator("#transactions tbody tr")
    assert rows.count() == 50
    page.get_by_label("Provider").select_option("anthropic")
    page.get_by_label("Kind").select_option("debit")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"provider=anthropic"))
    providers = page.locator("#transactions [data-field=provider]").all_inner_texts()
    assert providers and all(p.startswith("anthropic") for p in providers)
    assert set(
        page.locator("#transactions tbody tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    ) == {"debit"}
    api = dashboard.api("admin", "/v1/mandates/acme/entries?provider=anthropic&kind=debit&limit=50")
    ids = page.locator("#transactions tbody tr").evaluate_all("rs => rs.map(r => r.dataset.entry)")
    assert ids == [x["id"] for x in api["entries"]]
    shot(page, "transactions")
    page.goto(f"{dashboard.base_url}/m/acme/transactions?from=2001-01-01&to=2001-01-31")
    assert page.get_by_text("No transactions match these filters").is_visible()


def test_usage_charts(context: Any, dashboard: Dashboard) -> None:
    page = context.new_page()
    sign_in(page, dashboard, "admin")
    page.goto(f"{dashboard.base_url}/m/acme/usage?period=30d")
    for chart in ("daily", "models", "users", "features"):
        page.wait_for_selector(f"[data-chart={chart}].ready", timeout=10_000)
    total = shown(page, "[data-field=usage-total] data")
    assert D(total) > 0
    shot(page, "usage")


def test_top_up_twice_credits_once(context: Any, dashboard: Dashboard) -> None:
    page = context.new_page()
    sign_in(page, dashboard, "admin")
    before = D(dashboard.api("admin", "/v1/mandates/acme/balance")["balance"])
    page.goto(f"{dashboard.base_url}/m/acme/admin")
    form = page.locator("#credit-form")
    sent = {
        "csrf": form.locator("input[name=csrf]").get_attribute("value"),
        "idempotency_key": form.locator("input[name=idempotency_key]").get_attribute("value"),
        "amount": "7.125",
        "reason": "payment",
        "description": "",
    }
    form.get_by_label("Amount").fill("7.125")
    form.get_by_role("button").dblclick()  # a double click
    page.wait_for_selector("#notice")
    after = D(dashboard.api("admin", "/v1/mandates/acme/balance")["balance"])
    assert after == before + D("7.125")
    shot(page, "administration")
    # The same form sent again (a second submit that got through): replayed.
    again = page.request.post(
        f"{dashboard.base_url}/m/acme/admin/credit",
        form=sent,
        headers={"Origin": dashboard.base_url},
    )
    assert again.ok and "Already applied" in again.text()
    assert D(dashboard.api("admin", "/v1/mandates/acme/balance")["balance"]) == after
    page.goto(f"{dashboard.base_url}/m/acme")
    assert shown(page, "[data-field=balance] data") == str(after)


def test_a_viewer_cannot_reach_administration(context: Any, dashboard: Dashboard) -> None:
    page = context.new_page()
    sign_in(page, dashboard, "viewer")
    page.goto(f"{dashboard.base_url}/m/acme")
    tabs = page.get_by_role("navigation", name="Mandate")
    assert tabs.get_by_role("link", name="Administration").count() == 0
    assert page.locator("form[action*='/admin']").count() == 0
    response = page.goto(f"{dashboard.base_url}/m/acme/admin")
    assert response.status == 403
    assert page.get_by_text("permission_denied").is_visible()
    before = dashboard.api("admin", "/v1/mandates/acme/balance")["balance"]
    page.goto(f"{dashboard.base_url}/m/acme")
    csrf = page.locator("form[action='/sign-out'] input[name=csrf]").get_attribute("value")
    forced = page.request.post(
        f"{dashboard.base_url}/m/acme/admin/credit",
        form={"csrf": csrf, "amount": "1000", "idempotency_key": "forced-by-a-viewer"},
        headers={"Origin": dashboard.base_url},
    )
    assert forced.status == 403 and "permission_denied" in forced.text()
    assert f"{dashboard.people['viewer']!r} is not an admin" in unescape(forced.text())
    assert dashboard.api("admin", "/v1/mandates/acme/balance")["balance"] == before
    page.set_content(forced.text())
    shot(page, "viewer-refused")


def test_a_narrow_screen_and_the_keyboard(context: Any, dashboard: Dashboard) -> None:
    page = context.new_page()
    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, dashboard, "admin")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "overview-360")
    for path in ("/m/acme", "/m/acme/usage", "/m/acme/admin", "/m/acme/transactions"):
        page.goto(f"{dashboard.base_url}{path}")  # wide tables scroll inside their card
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
    # The menu folds behind a button that works from the keyboard.
    assert not page.locator("#site-nav").is_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.locator(".nav-toggle").focus()
    page.keyboard.press("Enter")
    assert page.locator("#site-nav").is_visible()
    assert page.locator(".nav-toggle").get_attribute("aria-expanded") == "true"
    shot(page, "transactions-360")


def test_the_platform_page(context: Any, dashboard: Dashboard) -> None:
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmation before disabling
    sign_in(page, dashboard, "sysadmin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Platform").click()
    page.wait_for_url(f"{dashboard.base_url}/platform")
    providers = {p["provider"]: p for p in dashboard.api("sysadmin", "/v1/providers")}
    name = next(p for p in sorted(providers) if providers[p]["enabled"])
    shown_as = providers[name]["display_name"]
    row = page.locator(f"#providers-table tr[data-provider='{name}']")
    row.get_by_role("button", name=f"Disable {shown_as}").click()
    page.wait_for_selector("#notice")
    assert "Provider disabled" in page.locator("#notice").inner_text()
    assert row.locator(".pill").inner_text() == "disabled"
    assert not {p["provider"]: p for p in dashboard.api("sysadmin", "/v1/providers")}[name][
        "enabled"
    ]
    row.get_by_role("button", name=f"Enable {shown_as}").click()
    page.wait_for_selector("#notice")
    assert row.locator(".pill").inner_text() == "enabled"
    assert {p["provider"]: p for p in dashboard.api("sysadmin", "/v1/providers")}[name]["enabled"]
    audit = page.locator("#audit-table tbody tr").first
    assert "provider.enable" in audit.inner_text()
    shot(page, "platform")
    # At 360 px nothing scrolls the page sideways.
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "platform-360")
    # A mandate's admin is not offered it, and is refused if they ask.
    context.clear_cookies()
    page.set_viewport_size({"width": 1280, "height": 860})
    sign_in(page, dashboard, "admin")
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Platform").count() == 0
    response = page.goto(f"{dashboard.base_url}/platform")
    assert response.status == 403 and page.get_by_text("permission_denied").is_visible()
