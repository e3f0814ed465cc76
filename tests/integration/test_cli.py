"""The ``aibill`` command line through Typer's runner, on SQLite and
PostgreSQL, locally (``--db``) and against a real server (``--url``).

Every command is run and its output checked as an operator or a script sees
it: the tables' figures, the ``--json`` fields, and the exit code.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import typer.main
import uvicorn
from sqlalchemy import create_engine, text
from typer.testing import CliRunner, Result

import aibill
from aibill import Billing
from aibill.api import create_app
from aibill.cli import app
from aibill.cli.core import EXIT_DENIED, EXIT_FAILURE, EXIT_MISUSE, EXIT_OK, EXIT_REFUSED

runner = CliRunner()


class Cli:
    """Runs ``aibill`` with the connection options of one mode."""

    def __init__(self, base: list[str]) -> None:
        self.base = base

    def run(self, *args: str, code: int = EXIT_OK, base: list[str] | None = None) -> Result:
        result = runner.invoke(
            app, [*(self.base if base is None else base), *args], env={"COLUMNS": "200"}
        )
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, (
            f"aibill {' '.join(args)} exited {result.exit_code}, not {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result

    def json(self, *args: str, code: int = EXIT_OK) -> Any:
        return json.loads(self.run(*args, "--json", code=code).stdout)


@pytest.fixture
def local(db_url: str) -> Iterator[Cli]:
    """The CLI on a fresh local database (SQLite file, or PostgreSQL)."""
    aibill.connect(db_url).close()
    yield Cli(["--db", db_url])


class Server:
    """The API of ``billing`` served by uvicorn in a thread on a free port."""

    def __init__(self, billing: Billing) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(
            create_app(billing, sweep_interval_s=0),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[Billing, Server, str]]:
    """A real server on a fresh database, and a system admin's key."""
    billing = aibill.connect(db_url)
    billing.add_user("root")
    billing.access.add_sysadmin("root")
    root = billing.keys.create_key(user="root", mandate=None, scopes=["billing:admin"]).secret
    server = Server(billing)
    yield billing, server, root
    server.stop()
    billing.close()


@pytest.fixture(params=["local", "remote"])
def cli(request: pytest.FixtureRequest, db_url: str) -> Iterator[Cli]:
    """The CLI on a local database, or on a server (as its system admin)."""
    if request.param == "local":
        yield request.getfixturevalue("local")
        return
    _, server, root = request.getfixturevalue("served")
    yield Cli(["--url", server.url, "--key", root])


def setup_acme(cli: Cli) -> None:
    """acme (pool, CHF): alice admin, bob viewer; openai registered; USD->CHF 0.80."""
    cli.run("mandate", "create", "acme", "--currency", "CHF")
    for user in ("alice", "bob"):
        cli.run("user", "add", user)
    cli.run("member", "add", "acme", "alice", "--role", "admin")
    cli.run("member", "add", "acme", "bob", "--role", "viewer")
    cli.run("provider", "add", "openai", "--display-name", "OpenAI")
    cli.run("fx", "set", "USD", "CHF", "0.80", "--valid-from", "2026-01-01")


# ------------------------------------------------------------------ help


def leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable command's words (Typer's command tree; groups have ``commands``)."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from leaves(sub, (*path, name))
    else:
        yield path


ALL_COMMANDS = sorted(leaves(typer.main.get_command(app)))


def test_the_operator_commands_are_all_there() -> None:
    names = {" ".join(c) for c in ALL_COMMANDS}
    wanted = {
        "serve", "db upgrade", "mandate create", "mandate list", "mandate show",
        "mandate settings", "user add", "user list", "member add", "member list",
        "role grant", "role revoke", "role list", "rule add", "rule list", "rule remove",
        "provider add", "provider list", "key create", "key list", "key revoke", "credit",
        "price show", "price set", "price list", "fx set", "fx list", "fx import",
        "markup set", "markup list", "limit set", "limit list", "check", "estimate", "hold",
        "capture", "release", "usage record", "balance", "history", "report", "export",
        "audit", "verify", "demo", "sysadmin add", "sysadmin remove", "sysadmin check",
    }  # fmt: skip
    assert wanted <= names, wanted - names


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stdout
    assert "Example" in result.stdout and f"$ aibill {command[0]}" in result.stdout


def test_shell_completion_completes_commands() -> None:
    """What the installed completion script asks the program (bash's protocol)."""

    def complete(words: str, index: int) -> list[str]:
        env = {"_AIBILL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(index)}
        result = runner.invoke(app, [], prog_name="aibill", env=env)
        assert result.exit_code == 0, result.stderr
        return result.stdout.split()

    assert complete("aibill mand", 1) == ["mandate"]
    assert complete("aibill fx ", 2) == ["set", "list", "show", "import"]
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout


# ------------------------------------------------------------------ the operator's flow


def test_a_prepaid_call_from_credit_to_capture(cli: Cli) -> None:
    setup_acme(cli)
    credited = cli.json("credit", "acme", "100", "--reason", "payment", "-k", "pay-1")
    assert credited["amount"] == "100.000000" and credited["kind"] == "credit"
    allowed = cli.json("check", "acme", "--estimate", "0.05", "--user", "alice")
    assert allowed["allowed"] is True and allowed["available"] == "100.000000"
    estimate = cli.json(
        "estimate", "acme", "--provider", "openai", "--model", "gpt-4o",
        "--input-tokens", "1200", "--max-output-tokens", "512",
    )  # fmt: skip
    assert estimate["amount"] == "0.009744" and estimate["currency"] == "CHF"
    priced = cli.json(
        "check", "acme", "--user", "alice", "--provider", "openai", "--model", "gpt-4o",
        "--input-tokens", "1200", "--max-output-tokens", "512",
    )  # fmt: skip
    assert priced["allowed"] is True and priced["estimate"] == "0.009744"
    hold = cli.json(
        "hold", "acme", "--user", "alice", "--provider", "openai", "--model", "gpt-4o",
        "--input-tokens", "1200", "--max-output-tokens", "512", "-k", "call-1",
    )  # fmt: skip
    assert hold["status"] == "pending" and hold["amount"] == "0.009744"
    balance = cli.json("balance", "acme")
    assert (balance["available"], balance["pending"]) == ("99.990256", "0.009744")
    assert [h["id"] for h in cli.json("holds", "acme")] == [hold["id"]]
    entry = cli.json("capture", hold["id"], "--input-tokens", "1000", "--output-tokens", "100")
    # 1000 * 2.5 + 100 * 10 per MTok = 0.0035 USD, * 0.80 * 1.5 = 0.0042 CHF
    assert entry["amount"] == "0.004200" and entry["provider_cost"] == "0.0035"
    assert cli.json("balance", "acme")["balance"] == "99.995800"
    assert cli.json("holds", "acme") == []
    usage = cli.json("usage", "record", "acme", "--amount", "0.02", "--user", "alice", "-k", "u-1")
    assert usage["amount"] == "0.020000" and usage["reason"] == "usage"
    second = cli.json("hold", "acme", "--amount", "1", "-k", "call-2")
    released = cli.json("release", second["id"])
    assert released["status"] == "released"
    page = cli.json("history", "acme", "--limit", "2")
    assert [e["amount"] for e in page["entries"]] == ["0.020000", "0.004200"]
    assert page["cursor"]
    rest = cli.json("history", "acme", "--cursor", page["cursor"])
    assert [e["amount"] for e in rest["entries"]] == ["100.000000"]
    human = cli.run("balance", "acme").stdout
    assert "99.975800" in human and "CHF" in human
    assert cli.run("verify").stdout.strip() == "ledger is sound"
    # What the provider charged, in USD: converted at 0.80 and marked up 50 %.
    cost = cli.json(
        "usage", "record", "acme", "--provider-cost", "0.10", "--user", "alice", "-k", "u-2"
    )
    assert (cost["amount"], cost["provider_cost"], cost["fx_rate"]) == ("0.120000", "0.1", "0.80")


def test_a_write_repeated_with_its_key_applies_once(cli: Cli) -> None:
    setup_acme(cli)
    first = cli.run("credit", "acme", "25.50", "-k", "pay-1")
    assert "credited 25.500000 CHF on acme/pool" in first.stdout
    again = cli.run("credit", "acme", "25.50", "-k", "pay-1")
    assert "already done" in again.stdout
    assert cli.json("balance", "acme")["balance"] == "25.500000"
    conflict = cli.run("credit", "acme", "30", "-k", "pay-1", code=EXIT_MISUSE)
    assert "[idempotency_conflict]" in conflict.stderr and "amount" in conflict.stderr
    # Without a key, a fresh one is made and shown, so the operator can retry with it.
    fresh = cli.run("credit", "acme", "1")
    assert "--idempotency-key cli-" in fresh.stderr


def test_exit_codes_tell_refusal_from_misuse_from_denial(cli: Cli) -> None:
    setup_acme(cli)
    cli.run("credit", "acme", "1", "-k", "pay")
    refused = cli.run("hold", "acme", "--amount", "5", "-k", "h", code=EXIT_REFUSED)
    assert refused.stderr.startswith("error [insufficient_balance]")
    assert "1.000000 CHF available, 5.000000 CHF required" in refused.stderr
    no = cli.json("check", "acme", "--estimate", "5", code=EXIT_REFUSED)
    assert no["allowed"] is False
    assert "[unknown_mandate]" in cli.run("balance", "nope", code=EXIT_MISUSE).stderr
    assert "[invalid_amount]" in cli.run("credit", "acme", "0", "-k", "z", code=EXIT_MISUSE).stderr
    bad = cli.run("credit", "acme", "12,5", code=EXIT_MISUSE)
    assert "not a decimal amount" in bad.stderr
    # A JSON error for scripts, on stderr.
    err = json.loads(cli.run("balance", "nope", "--json", code=EXIT_MISUSE).stderr)
    assert err["error"]["code"] == "unknown_mandate" and err["exit_code"] == EXIT_MISUSE
    assert cli.json("balance", "acme")["balance"] == "1.000000"  # nothing was written


def test_a_viewers_key_is_denied_admin_changes(cli: Cli, tmp_path: Path) -> None:
    setup_acme(cli)
    created = cli.json(
        "key", "create", "--mandate", "acme", "--user", "bob", "--scope", "billing:admin"
    )
    viewer = [*cli.base[: cli.base.index("--key")]] if "--key" in cli.base else [*cli.base]
    viewer += ["--key", created["secret"]]
    denied = cli.run("credit", "acme", "10", "-k", "v", base=viewer, code=EXIT_DENIED)
    assert "[permission_denied]" in denied.stderr
    assert cli.run("balance", "acme", base=viewer).exit_code == 0  # a viewer reads
    wrong = [*viewer[:-1], "aibill_acme_000000000000_nope"]
    assert "[invalid_api_key]" in cli.run("balance", "acme", base=wrong, code=EXIT_DENIED).stderr
    assert cli.json("balance", "acme")["balance"] == "0.000000"


def test_an_unreachable_service_is_a_failure(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cli = Cli(["--url", f"http://127.0.0.1:{port}", "--key", "aibill-admin_x_y"])
    failed = cli.run("mandate", "list", code=EXIT_FAILURE)
    assert "[service_unavailable]" in failed.stderr


def test_url_without_key_is_misuse() -> None:
    failed = Cli(["--url", "http://127.0.0.1:9"]).run("mandate", "list", code=EXIT_MISUSE)
    assert "--key" in failed.stderr


# ------------------------------------------------------------------ administration


def test_mandates_members_roles_and_settings(cli: Cli) -> None:
    setup_acme(cli)
    cli.run("mandate", "create", "globex", "--model", "prepay_user", "--currency", "EUR")
    listed = cli.json("mandate", "list")
    assert [(m["id"], m["billing_model"], m["currency"]) for m in listed] == [
        ("acme", "prepay_mandate", "CHF"),
        ("globex", "prepay_user", "EUR"),
    ]
    assert {"alice", "bob"} <= set(cli.json("user", "list"))
    cli.run("member", "add", "globex", "alice")
    members = cli.json("member", "list", "acme")
    assert [(m["user"], m["roles"]) for m in members] == [("alice", ["admin"]), ("bob", ["viewer"])]
    assert cli.json("role", "grant", "acme", "bob", "member")["roles"] == ["member", "viewer"]
    assert cli.json("role", "revoke", "acme", "bob", "viewer")["roles"] == ["member"]
    assert cli.json("role", "list", "acme", "--user", "bob")["roles"] == ["member"]
    cli.run("role", "define", "acme", "auditor", "--description", "Reads the audit log")
    assert [r["role"] for r in cli.json("role", "list", "acme")] == ["auditor"]
    balances = cli.json("user", "balances", "alice")
    assert [(b["mandate"], b["account"]) for b in balances] == [
        ("acme", "pool"),
        ("globex", "user:alice"),
    ]
    shown = cli.json("mandate", "show", "globex")
    assert [a["account"] for a in shown["accounts"]] == ["user:alice"]
    settings = cli.json("mandate", "settings", "acme", "--overdraft", "5")
    assert settings["overdraft_limits"] == {"pool": "5.000000"}
    assert settings["markup_percent"] == "50"
    changed = cli.json("mandate", "settings", "acme", "--billing-model", "prepay_user")
    assert changed["billing_model"] == "prepay_user"
    assert set(changed["overdraft_limits"]) == {"pool", "user:alice", "user:bob"}
    audit = cli.json("audit", "acme", "--limit", "3")
    assert audit["records"][0]["action"] == "mandate.billing_model"


def test_providers_rules_and_what_a_member_may_use(cli: Cli) -> None:
    setup_acme(cli)
    cli.run("provider", "add", "mistral")
    assert cli.json("provider", "allowed", "acme", "alice") == ["mistral", "openai"]
    disabled = cli.json("provider", "disable", "mistral")
    assert disabled["enabled"] is False
    assert cli.json("provider", "allowed", "acme", "alice") == ["openai"]
    cli.run("provider", "enable", "mistral")
    assert [p["provider"] for p in cli.json("provider", "list")] == ["mistral", "openai"]
    assert cli.json("provider", "allowed", "acme", "bob") == []
    rule = cli.json("rule", "add", "acme", "viewer", "resource", "resource.aicore.mistral", "view")
    assert cli.json("provider", "allowed", "acme", "bob") == ["mistral"]
    assert [r["rule_id"] for r in cli.json("rule", "list", "acme")] == [rule["rule_id"]]
    cli.run("rule", "remove", "acme", rule["rule_id"])
    assert cli.json("rule", "list", "acme") == []
    not_allowed = cli.run(
        "hold", "acme", "--amount", "0.1", "--user", "bob", "--provider", "openai", "-k", "x",
        code=EXIT_REFUSED,
    )  # fmt: skip
    assert "[provider_not_allowed]" in not_allowed.stderr


def test_api_keys_show_their_secret_once(cli: Cli) -> None:
    setup_acme(cli)
    created = cli.run("key", "create", "--mandate", "acme", "--user", "alice", "--name", "ci")
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("aibill_acme_")
    listed = cli.json("key", "list", "--mandate", "acme")
    assert [(k["user"], k["name"], k["scopes"]) for k in listed] == [
        ("alice", "ci", ["billing:use"])
    ]
    assert secret not in json.dumps(listed)
    assert secret not in cli.run("key", "list", "--mandate", "acme").stdout
    revoked = cli.json("key", "revoke", listed[0]["key_id"], "--mandate", "acme")
    assert revoked["revoked_at"]


def test_limits_markups_prices_and_rates(cli: Cli, tmp_path: Path) -> None:
    setup_acme(cli)
    limit = cli.json("limit", "set", "acme", "2.50", "--user", "alice", "--period", "day")
    assert (limit["subject"], limit["period"], limit["amount"]) == ("alice", "day", "2.500000")
    assert len(cli.json("limit", "list", "acme")) == 1
    cli.run("limit", "set", "acme", "none", "--user", "alice", "--period", "day")
    assert cli.json("limit", "list", "acme") == []

    cli.json("markup", "set", "30", "--mandate", "acme")
    cli.json(
        "markup", "set", "10", "--mandate", "acme", "--provider", "openai", "--model", "gpt-4o"
    )
    assert len(cli.json("markup", "list", "--mandate", "acme")) == 2
    effective = cli.json(
        "markup", "show", "--mandate", "acme", "--provider", "openai", "--model", "gpt-4o"
    )
    assert effective["percent"] == "10"
    assert cli.json(
        "markup", "clear", "--mandate", "acme", "--provider", "openai", "--model", "gpt-4o"
    )["cleared"]
    assert (
        cli.json("markup", "show", "--mandate", "acme", "--provider", "openai")["percent"] == "30"
    )

    catalog = cli.json("price", "show", "openai", "gpt-4o")
    assert catalog["input_mtok"] == "2.5" and catalog["output_mtok"] == "10"
    cli.json("price", "set", "selfhosted", "llama-70b", "--input", "0.20", "--output", "0.60",
             "--valid-from", "2026-01-01")  # fmt: skip
    prices = cli.json("price", "list")
    assert [(p["model"], p["input_mtok"], p["output_mtok"]) for p in prices] == [
        ("llama-70b", "0.20", "0.60")
    ]
    custom = cli.json("price", "show", "selfhosted", "llama-70b")
    assert custom["input_mtok"] == "0.20"
    assert (
        "[unknown_model]" in cli.run("price", "show", "openai", "no-such", code=EXIT_MISUSE).stderr
    )

    rates = tmp_path / "rates.csv"
    rates.write_text(
        "base,quote,rate,valid_from\nUSD,EUR,0.92,2026-01-01T00:00:00Z\nUSD,EUR,0.93,2026-06-01T00:00:00Z\n"
    )
    assert cli.json("fx", "import", str(rates))["imported"] == 2
    assert [r["rate"] for r in cli.json("fx", "list", "--base", "USD", "--quote", "EUR")] == [
        "0.92",
        "0.93",
    ]
    assert cli.json("fx", "show", "USD", "EUR", "--at", "2026-03-01")["rate"] == "0.92"
    broken = tmp_path / "broken.csv"
    broken.write_text(
        "base,quote,rate,valid_from\nUSD,GBP,0.79,2026-01-01\nUSD,JPY,abc,2026-01-01\n"
    )
    failed = cli.run("fx", "import", str(broken), code=EXIT_MISUSE)
    assert "Line 3" in failed.stderr
    assert cli.json("fx", "list", "--quote", "GBP") == []  # all or nothing


# ------------------------------------------------------------------ reports and exports


def fill_usage(cli: Cli) -> None:
    setup_acme(cli)
    cli.run("provider", "add", "anthropic")
    cli.run("credit", "acme", "50", "-k", "fund")
    for i, (user, provider, model, tokens) in enumerate(
        [
            ("alice", "openai", "gpt-4o", ("1000", "200")),
            ("alice", "openai", "gpt-4o-mini", ("5000", "800")),
            ("bob", "anthropic", "claude-3-5-haiku-latest", ("2000", "100")),
        ]
    ):
        cli.run("role", "grant", "acme", "bob", "member") if i == 2 else None
        cli.run(
            "usage", "record", "acme", "--user", user, "--provider", provider, "--model", model,
            "--input-tokens", tokens[0], "--output-tokens", tokens[1],
            "--feature-code", "chat", "-k", f"u{i}",
        )  # fmt: skip


def test_reports_group_usage(cli: Cli) -> None:
    fill_usage(cli)
    by_provider = cli.json("report", "acme", "--by", "provider")
    assert [(r["keys"]["provider"], r["calls"]) for r in by_provider] == [
        ("anthropic", 1),
        ("openai", 2),
    ]
    by_user = cli.json("report", "acme", "--by", "user,model")
    assert {(r["keys"]["user"], r["keys"]["model"]) for r in by_user} == {
        ("alice", "gpt-4o"),
        ("alice", "gpt-4o-mini"),
        ("bob", "claude-3-5-haiku-latest"),
    }
    total = sum(D(r["amount"]) for r in by_provider)
    entries = cli.json("history", "acme", "--reason", "usage")["entries"]
    assert total == sum(D(e["amount"]) for e in entries)
    table = cli.run("report", "acme", "--by", "day").stdout
    assert f"total: {total} CHF over 3 calls" in table
    assert cli.json("report", "acme", "--since", "2000-01-01", "--until", "2000-02-01") == []


def test_exports_match_the_ledger(cli: Cli, tmp_path: Path) -> None:
    fill_usage(cli)
    out = tmp_path / "history.csv"
    done = cli.run("export", "acme", "history", "-o", str(out))
    assert "exported 4 rows" in done.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("entry_id,posted_at,kind")
    assert len(lines) == 5
    as_json = tmp_path / "history.json"
    cli.run("export", "acme", "history", "--format", "json", "-o", str(as_json))
    exported = json.loads(as_json.read_text())
    assert [e["id"] for e in exported] == [e["id"] for e in cli.json("history", "acme")["entries"]]
    assert all(isinstance(e["amount"], str) for e in exported)
    usage = tmp_path / "usage.csv"
    cli.run("export", "acme", "usage", "--by", "provider", "-o", str(usage))
    assert usage.read_text().splitlines()[0].startswith("provider,")
    report = json.loads(cli.run("export", "acme", "usage", "--by", "model", "-f", "json").stdout)
    assert len(report) == 3
    # A refused export leaves no file behind.
    missing = tmp_path / "nope.csv"
    cli.run("export", "nope", "history", "-o", str(missing), code=EXIT_MISUSE)
    assert not missing.exists()
    assert "[invalid_request]" in cli.run("export", "acme", "ledger", code=EXIT_MISUSE).stderr


# ------------------------------------------------------------------ the demo month


def test_demo_fills_a_month_once(local: Cli) -> None:
    made = local.run("demo", "--records", "60")
    assert "3 mandates created" in made.stdout
    assert "key create --user platform.ops" in made.stdout
    summary = local.json("demo", "--records", "60")
    assert summary["wrote_nothing"] is True
    assert summary["usage_records"] == {"created": 0, "present": 60}
    assert {m["billing_model"] for m in local.json("mandate", "list")} == {
        "unlimited",
        "prepay_mandate",
        "prepay_user",
    }
    assert local.run("verify").stdout.strip() == "ledger is sound"


def test_commands_that_need_a_local_database_say_so(tmp_path: Path) -> None:
    remote = Cli(["--url", "http://127.0.0.1:9", "--key", "k"])
    for command in (["demo"], ["db", "upgrade"]):
        failed = remote.run(*command, code=EXIT_MISUSE)
        assert "local database only" in failed.stderr


def test_db_upgrade_reports_the_current_revision(local: Cli) -> None:
    from aibill.store.migrate import head_revision

    upgraded = local.json("db", "upgrade")
    assert upgraded == {"revision": head_revision(), "current": True}
    assert f"schema is current (revision {head_revision()})" in local.run("migrate").stdout


def test_the_platform_audit_log_names_who_changed_what(cli: Cli) -> None:
    cli.run("provider", "add", "openai")
    cli.run("fx", "set", "USD", "CHF", "0.80")
    records = cli.json("audit")["records"]
    actions = [r["action"] for r in records]
    assert actions.index("exchange_rate.set") < actions.index("provider.register")
    table = cli.run("audit").stdout
    assert "audit log of the platform" in table and "provider.register" in table


def test_serve_refuses_a_remote_url() -> None:
    failed = Cli(["--url", "http://127.0.0.1:9", "--key", "k"]).run("serve", code=EXIT_MISUSE)
    assert "--url does not apply" in failed.stdout


def test_a_narrow_terminal_never_cuts_an_amount(local: Cli) -> None:
    setup_acme(local)
    local.run("credit", "acme", "123456.789012", "-k", "big")
    narrow = runner.invoke(app, [*local.base, "history", "acme"], env={"COLUMNS": "50"})
    assert narrow.exit_code == 0
    assert "+123456.789012" in narrow.stdout


def test_system_admins_are_named_and_removed(cli: Cli) -> None:
    cli.run("user", "add", "vera")
    assert cli.json("sysadmin", "check", "vera") == {"user": "vera", "sysadmin": False}
    assert cli.run("sysadmin", "add", "vera").stdout.strip() == "vera is a system admin"
    assert cli.json("sysadmin", "check", "vera")["sysadmin"] is True
    if cli.base[0] == "--db":  # a local ledger: vera is its only system admin (remote: root too)
        refused = cli.run("sysadmin", "remove", "vera", code=EXIT_MISUSE)
        assert "[last_sysadmin]" in refused.stderr and "only system admin" in refused.stderr
        cli.run("user", "add", "walt")
        cli.run("sysadmin", "add", "walt")
    cli.run("sysadmin", "remove", "vera")
    assert cli.json("sysadmin", "check", "vera")["sysadmin"] is False
    assert "[unknown_user]" in cli.run("sysadmin", "add", "nobody", code=EXIT_MISUSE).stderr


# Library operations that have no command, and why.
NOT_COMMANDS = {
    "as_principal": "--key acts as a principal",
    "authenticate": "--key acts as a principal",
    "recall": "internal: the service's memory of verified keys (AIBILL_KEY_CACHE_S)",
    "forget_holder": "internal: removing a system admin calls it",
    "bound": "internal",
    "catalog": "internal: price show reads it",
    "clock": "internal",
    "close": "internal",
    "engine": "internal",
    "record_usage_batch": "usage import posts through it (cli/usage_import.py)",
    "group_commit": "internal: AIBILL_GROUP_COMMIT (serve) and connect(group_commit=) switch it",
    "may": "a question the dashboard asks",
    "principal": "internal",
    "quote": "takes a connection: estimate and price show answer it",
    "price": "estimate answers it for a mandate",
    "quote_cost": "takes a connection: usage record --provider-cost posts what it prices",
    "price_cost": "the seed's calculatePriceWithMarkup; usage record --provider-cost posts it",
    "output_limit": "takes a connection: price show shows it",
    "provider_decision": "takes a connection: provider allowed answers it",
    "permission_decision": "takes a connection",
    "spend_decision": "takes a connection: hold and usage commands meet it",
    "admin_decision": "takes a connection",
    "is_mandate_admin": "takes a connection: role list shows the roles",
    "builtin_rules": "the built-in rules are in docs/access.md",
    "export_history_csv": "export streams iter_history_csv",
    "export_usage_report_csv": "export streams iter_usage_report_csv",
}


def test_every_library_operation_has_a_command() -> None:
    """A guard: an operation added to the library needs a command (or a reason here)."""
    import inspect

    from aibill.service.access import Access
    from aibill.service.keys import Keys
    from aibill.service.pricing import Pricing

    source = "".join(
        (Path(aibill.__file__).parent / "cli" / name).read_text()
        for name in ("app.py", "admin.py", "ledger.py", "reports.py")
    )
    missing = [
        f"{cls.__name__}.{name}"
        for cls in (Billing, Pricing, Access, Keys)
        for name, _ in inspect.getmembers(cls)
        if not name.startswith("_") and name not in NOT_COMMANDS and f".{name}(" not in source
    ]
    assert missing == []


def test_one_hold_one_key_and_one_provider_question(cli: Cli) -> None:
    setup_acme(cli)
    cli.run("credit", "acme", "1", "-k", "f")
    hold = cli.json("hold", "acme", "--amount", "0.4", "--user", "alice", "-k", "h")
    cli.run("capture", hold["id"], "--amount", "0.25")
    status = cli.json("hold-status", hold["id"])
    assert (status["status"], status["captured_amount"]) == ("captured", "0.250000")
    assert "captured" in cli.run("hold-status", hold["id"]).stdout
    created = cli.json("key", "create", "--mandate", "acme", "--user", "alice", "--name", "gw")
    shown = cli.json("key", "show", created["info"]["key_id"], "--mandate", "acme")
    assert (shown["user"], shown["name"], shown["revoked_at"]) == ("alice", "gw", None)
    assert cli.json("provider", "allowed", "acme", "alice", "openai")["allowed"] is True
    refused = cli.run("provider", "allowed", "acme", "bob", "openai", code=EXIT_REFUSED)
    assert refused.stdout.strip() == "bob in acme may not use openai"


def test_db_sweep_expires_overdue_holds(local: Cli) -> None:
    setup_acme(local)
    local.run("credit", "acme", "1", "-k", "f")
    local.json("hold", "acme", "--amount", "0.4", "--ttl", "1", "-k", "h")
    time.sleep(1.2)
    assert local.json("db", "sweep") == {"expired": 1}
    assert local.json("balance", "acme")["pending"] == "0.000000"


def test_verify_goes_mandate_by_mandate_and_names_the_drift(cli: Cli, db_url: str) -> None:
    """Without a mandate, verify checks each one in a read of its own and
    reports what drifted where, with exit 1; with one, only that one."""
    for name in ("acme", "globex", "initech"):
        cli.run("mandate", "create", name, "--currency", "CHF")
        cli.run("credit", name, "5", "-k", f"pay-{name}")
    assert cli.run("verify").stdout.strip() == "ledger is sound"
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE accounts SET credits_posted = credits_posted + 1"
                    " WHERE mandate_id = 'globex'"
                )
            )
    finally:
        engine.dispose()
    drifted = cli.json("verify", code=EXIT_FAILURE)
    assert [(d["mandate"], d["counter"]) for d in drifted] == [("globex", "credits_posted")]
    assert cli.run("verify", "acme").stdout.strip() == "ledger is sound"
