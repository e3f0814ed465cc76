"""CSV formula injection (DESIGN rule 12): every CSV aibill writes neutralises
text cells that a spreadsheet would run as a formula, by default, on SQLite and
PostgreSQL; numbers stay numbers; ``spreadsheet_safe=False`` gives the raw text.

One ledger is written with a tag or description starting with each of the six
characters (``=``, ``+``, ``-``, ``@``, tab, CR), and every CSV output is read
back: the library's exports, the API's, the client's, the dashboard's download
and the CLI's ``export``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from typer.testing import CliRunner

import aibill
from aibill import Billing
from aibill.api import create_app
from aibill.cli import app
from aibill.domain.csvcell import FORMULA_START, is_neutral, neutralize
from aibill.store.schema import entries
from tests.integration.test_cli import Server
from tests.integration.test_web import sign_in

# What a tenant wrote, per column of the history export.
HOSTILE = {
    "feature_code": '=HYPERLINK("http://evil.example","click")',
    "feature_instance": "+1+1",
    "workflow_id": "-2+3",
    "model": "@SUM(1,1)",
    "description": "\t=1+1",
}
CR_DESCRIPTION = "\r=cmd|' /C calc'!A0"
TEXT_COLUMNS = tuple(HOSTILE)
USAGE_KEYS = ("feature_code", "feature_instance", "workflow_id", "model")


@dataclass
class Ledger:
    billing: Billing
    db_url: str
    key: str


@pytest.fixture
def ledger(billing: Billing, db_url: str) -> Ledger:
    """Mandate ``x`` (unlimited, USD): ann's usage tagged with formulas (so the
    balance goes negative), and one older row whose description starts with a
    carriage return (stored before text rules refused it)."""
    b = billing
    b.create_mandate("x", billing_model="unlimited", currency="USD")
    for user, role in (("ann", "member"), ("boss", "admin")):
        b.add_user(user)
        b.add_member("x", user, role=role)
    b.access.register_provider("openai")
    b.record_usage(
        "x",
        amount=D("2"),
        user="ann",
        provider="openai",
        model=HOSTILE["model"],
        feature_code=HOSTILE["feature_code"],
        feature_instance=HOSTILE["feature_instance"],
        workflow_id=HOSTILE["workflow_id"],
        description=HOSTILE["description"],
        idempotency_key="u1",
    )
    with b.engine.begin() as conn:
        row = dict(conn.execute(select(entries)).mappings().one())
        row.update(entry_id="legacy-cr", description=CR_DESCRIPTION)
        row["posted_at"] = row["posted_at"].replace(microsecond=0)
        conn.execute(insert(entries).values(**row))
    key = b.keys.create_key(
        user="boss", mandate="x", scopes=["billing:read", "billing:admin"]
    ).secret
    return Ledger(b, db_url, key)


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def usage_row(text: str) -> dict[str, str]:
    [row] = [r for r in rows(text) if r["model"]]
    return row


def assert_history_neutral(text: str) -> None:
    """Every hostile text cell quoted; the amounts and tokens as written."""
    by_id = {r["entry_id"]: r for r in rows(text)}
    legacy = by_id.pop("legacy-cr")
    [usage] = by_id.values()
    for column in TEXT_COLUMNS:
        assert usage[column] == "'" + HOSTILE[column], column
    assert legacy["description"] == "'" + CR_DESCRIPTION
    assert usage["amount"] == "2.000000"
    assert usage["balance_after"] == "-2.000000"  # a negative number is not a formula
    for r in (usage, legacy):
        assert all(is_neutral(cell) for cell in r.values() if cell != r["balance_after"])


def assert_history_raw(text: str) -> None:
    by_id = {r["entry_id"]: r for r in rows(text)}
    assert by_id.pop("legacy-cr")["description"] == CR_DESCRIPTION
    [usage] = by_id.values()
    for column in TEXT_COLUMNS:
        assert usage[column] == HOSTILE[column], column
    assert usage["balance_after"] == "-2.000000"


def assert_usage_neutral(text: str) -> None:
    row = usage_row(text)
    for key in USAGE_KEYS:
        assert row[key] == "'" + HOSTILE[key], key
    assert (row["calls"], row["amount"]) == ("2", "4.000000")  # with the older row


def assert_usage_raw(text: str) -> None:
    row = usage_row(text)
    for key in USAGE_KEYS:
        assert row[key] == HOSTILE[key], key


# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize("first", FORMULA_START)
def test_the_cell_rule_quotes_each_formula_start(first: str) -> None:
    assert neutralize(first + "1+1") == "'" + first + "1+1"
    assert not is_neutral(first + "x") and is_neutral(neutralize(first + "x"))


@pytest.mark.parametrize("text", ["", "plain", "1+1", " =1", "'=1", "é=1", "x;=1"])
def test_other_text_is_unchanged(text: str) -> None:
    assert neutralize(text) == text


# ------------------------------------------------------------------ outputs


def test_library_exports_neutralise_by_default(ledger: Ledger) -> None:
    b = ledger.billing
    assert_history_neutral("".join(b.iter_history_csv("x")))
    out = io.StringIO(newline="")
    assert b.export_history_csv("x", out) == 2
    assert_history_neutral(out.getvalue())
    by = list(USAGE_KEYS)
    assert_usage_neutral("".join(b.iter_usage_report_csv("x", group_by=by)))
    out = io.StringIO(newline="")
    b.export_usage_report_csv("x", out, group_by=by)
    assert_usage_neutral(out.getvalue())


def test_library_opt_out_gives_the_raw_text(ledger: Ledger) -> None:
    b = ledger.billing
    assert_history_raw("".join(b.iter_history_csv("x", spreadsheet_safe=False)))
    by = list(USAGE_KEYS)
    assert_usage_raw("".join(b.iter_usage_report_csv("x", group_by=by, spreadsheet_safe=False)))


def test_a_cell_with_a_semicolon_or_tab_is_quoted_whole(ledger: Ledger) -> None:
    """Excel in many locales splits a CSV on ``;``: the whole cell is quoted, so
    no new cell can start inside it with a formula."""
    b = ledger.billing
    b.record_usage("x", amount=D("1"), user="ann", description="a;=1+1\tb", idempotency_key="u2")
    text = "".join(b.iter_history_csv("x"))
    assert '"a;=1+1\tb"' in text
    raw = "".join(b.iter_history_csv("x", spreadsheet_safe=False))
    assert any(r["description"] == "a;=1+1\tb" for r in rows(raw))


def test_api_exports(ledger: Ledger) -> None:
    auth = {"Authorization": f"Bearer {ledger.key}"}
    by = "&".join(f"group_by={k}" for k in USAGE_KEYS)
    with TestClient(create_app(ledger.billing, sweep_interval_s=0)) as client:
        r = client.get("/v1/mandates/x/entries.csv", headers=auth)
        assert r.status_code == 200
        assert_history_neutral(r.text)
        r = client.get("/v1/mandates/x/entries.csv?spreadsheet_safe=false", headers=auth)
        assert_history_raw(r.text)
        assert_usage_neutral(client.get(f"/v1/mandates/x/usage-report.csv?{by}", headers=auth).text)
        raw = client.get(
            f"/v1/mandates/x/usage-report.csv?{by}&spreadsheet_safe=false", headers=auth
        )
        assert_usage_raw(raw.text)


def test_dashboard_download(ledger: Ledger) -> None:
    with TestClient(create_app(ledger.billing, sweep_interval_s=0)) as client:
        assert sign_in(client, ledger.key).status_code == 303
        r = client.get("/m/x/transactions.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert_history_neutral(r.text)


def test_client_over_a_real_server(ledger: Ledger) -> None:
    server = Server(ledger.billing)
    try:
        client = aibill.Client(server.url, ledger.key)
        assert_history_neutral("".join(client.iter_history_csv("x")))
        assert_history_raw("".join(client.iter_history_csv("x", spreadsheet_safe=False)))
        by = list(USAGE_KEYS)
        assert_usage_neutral("".join(client.iter_usage_report_csv("x", group_by=by)))
        raw = client.iter_usage_report_csv("x", group_by=by, spreadsheet_safe=False)
        assert_usage_raw("".join(raw))
        client.close()
    finally:
        server.stop()


@pytest.fixture
def cli_export(ledger: Ledger, tmp_path: Path) -> Iterator[Callable[..., str]]:
    runner = CliRunner()

    def export(*args: str) -> str:
        out = tmp_path / "out.csv"
        result = runner.invoke(app, ["--db", ledger.db_url, "export", "x", *args, "-o", str(out)])
        assert result.exit_code == 0, result.output
        with out.open(encoding="utf-8", newline="") as f:
            return f.read()

    yield export


def test_cli_export(cli_export: Callable[..., str]) -> None:
    export = cli_export
    assert_history_neutral(export("history"))
    assert_history_raw(export("history", "--no-spreadsheet-safe"))
    by = ",".join(USAGE_KEYS)
    assert_usage_neutral(export("usage", "--by", by))
    assert_usage_raw(export("usage", "--by", by, "--no-spreadsheet-safe"))
