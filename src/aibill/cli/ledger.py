"""Money commands: credit, check, estimate, hold, capture, release, usage
record, balance, history and the holds in flight."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer

from aibill.cli.core import (
    EXIT_REFUSED,
    IdemKey,
    JsonFlag,
    Money,
    Since,
    Until,
    example,
    new_key,
    parse_money,
    print_json,
    say,
    show_record,
    show_table,
    use,
    whole,
)
from aibill.cli.usage_import import import_usage
from aibill.domain.model import Balance, Entry, Hold
from aibill.domain.usage import Usage

User = Annotated[str | None, typer.Option(help="The user (names their wallet in prepay_user).")]
Provider = Annotated[str | None, typer.Option(help="AI provider, e.g. openai.")]
Model = Annotated[str | None, typer.Option(help="Model id, e.g. gpt-4o.")]
OptMoney = Annotated[
    Decimal | None, typer.Option(parser=parse_money, metavar="AMOUNT", help="A fixed amount.")
]
Tokens = Annotated[int | None, typer.Option(parser=whole(min=0))]
FeatureCode = Annotated[str | None, typer.Option(help="Product surface, e.g. chatplayground.")]
FeatureInstance = Annotated[str | None, typer.Option(help="Feature instance id.")]

BALANCE_COLUMNS: list[Any] = [
    "account",
    "user",
    ("balance", "balance"),
    ("available", "available"),
    ("pending", "pending"),
    ("overdraft", "overdraft_limit"),
    "currency",
]
ENTRY_COLUMNS: list[Any] = [
    ("posted", "posted_at"),
    "reason",
    ("account", "account"),
    ("amount", "amount", lambda e: f"{'-' if e.kind.value == 'debit' else '+'}{e.amount}"),
    "currency",
    ("model", "model"),
    ("id", "id"),
]
HOLD_COLUMNS: list[Any] = [
    ("id", "id"),
    "user",
    ("amount", "amount"),
    "currency",
    "provider",
    "model",
    ("created", "created_at"),
    ("expires", "expires_at"),
]


def register(app: typer.Typer) -> None:
    app.command(epilog=example("aibill credit acme 100 --reason payment"))(credit)
    app.command(
        epilog=example(
            "aibill check acme --estimate 0.05 --user alice --provider openai",
            "aibill check acme --user alice --provider openai --model gpt-4o"
            " --input-tokens 1200 --max-output-tokens 800",
        )
    )(check)
    app.command(
        epilog=example(
            "aibill estimate acme --provider openai --model gpt-4o"
            " --input-tokens 1200 --max-output-tokens 512"
        )
    )(estimate)
    app.command(
        epilog=example(
            "aibill hold acme --amount 0.50 --user alice",
            "aibill hold acme --user alice --provider openai --model gpt-4o"
            " --input-tokens 1200 --max-output-tokens 512",
        )
    )(hold)
    app.command(
        epilog=example(
            "aibill capture acme:hold_0 --amount 0.31",
            "aibill capture acme:hold_0 --input-tokens 1200 --output-tokens 380",
        )
    )(capture)
    app.command(epilog=example("aibill release acme:hold_0"))(release)
    app.command(epilog=example("aibill balance acme", "aibill balance acme --all"))(balance)
    app.command(
        epilog=example(
            "aibill history acme --limit 20",
            "aibill history acme --user alice --provider openai --since 2026-11-01",
        )
    )(history)
    app.command(epilog=example("aibill holds acme"))(holds)
    app.command("hold-status", epilog=example("aibill hold-status acme:hold_0123456789abcdef"))(
        hold_status
    )
    usage_app = typer.Typer(help="Usage that happened without a hold.", no_args_is_help=True)
    usage_app.command(
        "record",
        epilog=example(
            "aibill usage record acme --user alice --provider anthropic"
            " --model claude-sonnet-4-5 --input-tokens 900 --output-tokens 240",
            "aibill usage record acme --amount 0.02 --user alice",
        ),
    )(record_usage)
    usage_app.command(
        "import",
        epilog=example(
            "aibill usage import calls.csv",
            "aibill usage import calls.jsonl --batch-size 1000 --json",
        ),
    )(import_usage)
    app.add_typer(usage_app, name="usage")


def credit(
    mandate: str,
    amount: Money,
    user: User = None,
    reason: Annotated[
        str, typer.Option(help="payment, admin, system, refund or adjustment.")
    ] = "payment",
    description: Annotated[str | None, typer.Option(help="A note kept on the entry.")] = None,
    idempotency_key: IdemKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Add money to the mandate's pool, or to a user's wallet."""
    st = use(as_json)
    entry = st.backend().credit(
        mandate,
        amount,
        user=user,
        reason=reason,
        description=description,
        idempotency_key=new_key(st, idempotency_key),
    )
    _entry_done(st, entry, "credited")


def check(
    mandate: str,
    estimate: OptMoney = None,
    user: User = None,
    provider: Provider = None,
    model: Model = None,
    input_tokens: Tokens = None,
    max_output_tokens: Tokens = None,
    feature_instance: FeatureInstance = None,
    as_json: JsonFlag = False,
) -> None:
    """May this call start? A fixed --estimate, or the call priced from its
    provider, model and tokens as a hold would. Exit 0 if allowed, 3 if not.
    Changes nothing."""
    st = use(as_json)
    result = st.backend().check(
        mandate,
        estimate=estimate,
        user=user,
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
        feature_instance=feature_instance,
    )
    show_record(st, result, title="allowed" if result.allowed else "not allowed")
    if not result.allowed:
        raise typer.Exit(EXIT_REFUSED)


def estimate(
    mandate: str,
    provider: Annotated[str, typer.Option(help="AI provider, e.g. openai.")],
    model: Annotated[str, typer.Option(help="Model id, e.g. gpt-4o.")],
    input_tokens: Annotated[int, typer.Option(parser=whole(min=0))],
    max_output_tokens: Annotated[int, typer.Option(parser=whole(min=0))],
    as_json: JsonFlag = False,
) -> None:
    """The most a call can cost the mandate (what a hold would reserve)."""
    st = use(as_json)
    charge = st.backend().estimate(
        mandate,
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
    )
    show_record(st, charge, title=f"{charge.amount} {charge.currency}")


def hold(
    mandate: str,
    amount: OptMoney = None,
    user: User = None,
    provider: Provider = None,
    model: Model = None,
    input_tokens: Tokens = None,
    max_output_tokens: Tokens = None,
    feature_code: FeatureCode = None,
    feature_instance: FeatureInstance = None,
    ttl: Annotated[
        int, typer.Option(parser=whole(min=1), help="Seconds until the hold expires.")
    ] = 900,
    idempotency_key: IdemKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Reserve money for a call: a fixed --amount, or priced from tokens."""
    st = use(as_json)
    placed = st.backend().hold(
        mandate,
        amount=amount,
        user=user,
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
        feature_code=feature_code,
        feature_instance=feature_instance,
        ttl_s=ttl,
        idempotency_key=new_key(st, idempotency_key),
    )
    _hold_done(st, placed, "held")


def capture(
    hold_id: str,
    amount: OptMoney = None,
    input_tokens: Tokens = None,
    output_tokens: Tokens = None,
    cache_read_tokens: Tokens = None,
    cache_write_tokens: Tokens = None,
    description: Annotated[str | None, typer.Option()] = None,
    idempotency_key: IdemKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Post what a held call really used (a fixed --amount or its tokens) and
    release the rest of the hold."""
    st = use(as_json)
    usage = _usage(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
    entry = st.backend().capture(
        hold_id,
        amount=amount,
        usage=usage,
        description=description,
        idempotency_key=idempotency_key,
    )
    _entry_done(st, entry, "captured")


def release(hold_id: str, idempotency_key: IdemKey = None, as_json: JsonFlag = False) -> None:
    """Free a hold without a debit (the call failed or never started)."""
    st = use(as_json)
    released = st.backend().release(hold_id, idempotency_key=idempotency_key)
    _hold_done(st, released, released.status.value)


def record_usage(
    mandate: str,
    amount: OptMoney = None,
    user: User = None,
    provider: Provider = None,
    model: Model = None,
    input_tokens: Tokens = None,
    output_tokens: Tokens = None,
    cache_read_tokens: Tokens = None,
    cache_write_tokens: Tokens = None,
    provider_cost: Annotated[
        Decimal | None,
        typer.Option(
            parser=parse_money,
            metavar="AMOUNT",
            help="What the provider charged (converted and marked up, as a priced call is).",
        ),
    ] = None,
    provider_currency: Annotated[
        str | None, typer.Option(help="The provider cost's currency (USD unless given).")
    ] = None,
    feature_code: FeatureCode = None,
    feature_instance: FeatureInstance = None,
    workflow_id: Annotated[str | None, typer.Option()] = None,
    already_happened: Annotated[
        bool,
        typer.Option(
            "--already-happened",
            help="The call took place: record it even over the balance or a rule (marked).",
        ),
    ] = False,
    description: Annotated[str | None, typer.Option()] = None,
    idempotency_key: IdemKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Post usage without a hold: a fixed --amount, priced from tokens, or the
    provider's own --provider-cost converted and marked up."""
    st = use(as_json)
    usage = _usage(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
    entry = st.backend().record_usage(
        mandate,
        amount=amount,
        user=user,
        provider=provider,
        model=model,
        usage=usage,
        provider_cost=provider_cost,
        provider_currency=provider_currency,
        feature_code=feature_code,
        feature_instance=feature_instance,
        workflow_id=workflow_id,
        already_happened=already_happened,
        description=description,
        idempotency_key=new_key(st, idempotency_key),
    )
    _entry_done(st, entry, "recorded")


def balance(
    mandate: str,
    user: User = None,
    all_accounts: Annotated[
        bool, typer.Option("--all", help="Every account of the mandate (pool and wallets).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The balance, available money and pending holds of an account."""
    st = use(as_json)
    backend = st.backend()
    rows: list[Balance] = (
        backend.accounts(mandate) if all_accounts else [backend.balance(mandate, user=user)]
    )
    if st.json and not all_accounts:
        print_json(st, rows[0])
        return
    show_table(st, rows, BALANCE_COLUMNS, title=f"{mandate}", empty="No accounts yet.")


def history(
    mandate: str,
    limit: Annotated[int, typer.Option(parser=whole(min=1, max=1000))] = 50,
    cursor: Annotated[str | None, typer.Option(help="From a previous page's next cursor.")] = None,
    user: User = None,
    kind: Annotated[str | None, typer.Option(help="credit or debit.")] = None,
    reason: Annotated[str | None, typer.Option(help="usage, payment, refund, ...")] = None,
    provider: Provider = None,
    model: Model = None,
    feature_code: FeatureCode = None,
    since: Since = None,
    until: Until = None,
    as_json: JsonFlag = False,
) -> None:
    """Ledger entries, newest first, a page at a time."""
    st = use(as_json)
    page = st.backend().history(
        mandate,
        limit=limit,
        cursor=cursor,
        user=user,
        kind=kind,
        reason=reason,
        provider=provider,
        model=model,
        feature_code=feature_code,
        since=since,
        until=until,
    )
    show_table(
        st,
        page.entries,
        ENTRY_COLUMNS,
        title=f"{mandate}: entries",
        empty="No entries match.",
        data=page,
    )
    if page.cursor and not st.json:
        say(st, f"more: --cursor {page.cursor}")


def holds(
    mandate: str,
    limit: Annotated[int, typer.Option(parser=whole(min=1, max=1000))] = 100,
    as_json: JsonFlag = False,
) -> None:
    """The holds in flight (pending), newest first."""
    st = use(as_json)
    show_table(
        st,
        st.backend().open_holds(mandate, limit=limit),
        HOLD_COLUMNS,
        title=f"{mandate}: holds in flight",
        empty="No holds in flight.",
    )


def hold_status(hold_id: str, as_json: JsonFlag = False) -> None:
    """One hold: pending, captured (and for how much), released or expired."""
    st = use(as_json)
    show_record(st, st.backend().get_hold(hold_id), title=hold_id, skip=("replayed",))


def _usage(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read_tokens: int | None,
    cache_write_tokens: int | None,
) -> Usage | None:
    counts = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
    if all(c is None for c in counts):
        return None
    return Usage(
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens or 0,
        cache_read_tokens=cache_read_tokens or 0,
        cache_write_tokens=cache_write_tokens or 0,
    )


def _entry_done(st: Any, entry: Entry, verb: str) -> None:
    if st.json:
        print_json(st, entry)
        return
    again = " (already done: nothing new was written)" if entry.replayed else ""
    short = " — short: the account went negative" if entry.shortfall else ""
    say(
        st,
        f"{verb} {entry.amount} {entry.currency} on {entry.mandate}/{entry.account}{again}{short}",
    )
    say(st, f"entry {entry.id}, balance after {entry.balance_after} {entry.currency}")


def _hold_done(st: Any, placed: Hold, verb: str) -> None:
    if st.json:
        print_json(st, placed)
        return
    again = " (already done: nothing new was written)" if placed.replayed else ""
    say(
        st,
        f"{verb} {placed.amount} {placed.currency} on {placed.mandate}/{placed.account}{again}",
    )
    say(st, f"hold {placed.id}, expires {placed.expires_at:%Y-%m-%d %H:%M:%S} UTC")
