"""``aibill usage import FILE``: CSV and JSON Lines, in batches, resumable
through the records' idempotency keys, locally and against a server."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

from aibill.cli.core import EXIT_MISUSE, EXIT_REFUSED
from tests.integration.test_cli import Cli, cli, local, served

__all__ = ["cli", "local", "served"]  # the fixtures this module uses

CSV = """mandate,idempotency_key,amount,user,description
acme,call-1,0.40,,first
acme,call-2,0.30,,second
acme,call-3,5.00,,too much for the pool
acme,call-4,0.10,,
"""


def _acme(cli: Cli) -> None:
    cli.run("mandate", "create", "acme", "--currency", "USD")
    cli.run("credit", "acme", "1.00", "--idempotency-key", "funding")


def _balance(cli: Cli) -> D:
    return D(cli.json("balance", "acme")["balance"])


def test_a_csv_file_is_imported_and_a_rerun_posts_nothing_twice(cli: Cli, tmp_path: Path) -> None:
    _acme(cli)
    path = tmp_path / "calls.csv"
    path.write_text(CSV, encoding="utf-8")
    summary = cli.json("usage", "import", str(path), "--batch-size", "2", code=EXIT_REFUSED)
    assert (summary["posted"], summary["replayed"], summary["refused"]) == (3, 0, 1)
    assert summary["refused_by_code"] == {"insufficient_balance": 1}
    assert summary["refusals"][0]["line"] == 4
    assert _balance(cli) == D("0.20")
    again = cli.json("usage", "import", str(path), code=EXIT_REFUSED)
    assert (again["posted"], again["replayed"], again["refused"]) == (0, 3, 1)
    assert _balance(cli) == D("0.20")


def test_a_jsonl_file_with_tokens_and_exact_amounts(cli: Cli, tmp_path: Path) -> None:
    _acme(cli)
    path = tmp_path / "calls.jsonl"
    path.write_text(
        '{"mandate": "acme", "idempotency_key": "j1", "amount": 0.123456}\n'
        "\n"
        '{"mandate": "acme", "idempotency_key": "j2", "amount": "0.000001"}\n',
        encoding="utf-8",
    )
    result = cli.run("usage", "import", str(path))
    assert "2 posted, 0 replayed (posted before), 0 refused" in result.stdout
    assert _balance(cli) == D("0.876543")


def test_a_bad_line_stops_the_import_before_anything_is_posted(cli: Cli, tmp_path: Path) -> None:
    _acme(cli)
    path = tmp_path / "calls.csv"
    path.write_text(CSV + "acme,,0.10,,no key\n", encoding="utf-8")
    result = cli.run("usage", "import", str(path), code=EXIT_MISUSE)
    assert "line 6" in result.stderr and "idempotency_key" in result.stderr
    bad_money = tmp_path / "money.csv"
    bad_money.write_text("mandate,idempotency_key,amount\nacme,k,1e3\n", encoding="utf-8")
    cli.run("usage", "import", str(bad_money), code=EXIT_MISUSE)
    assert _balance(cli) == D("1.00")
