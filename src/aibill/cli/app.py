"""The ``aibill`` command: the root, its connection options, and the commands
that run the service itself (``serve``, ``db upgrade``, ``demo``, ``verify``)."""

from __future__ import annotations

from typing import Annotated

import typer

from aibill.cli import admin_groups, ledger, reports
from aibill.cli.core import (
    EXIT_FAILURE,
    Group,
    JsonFlag,
    State,
    begin,
    command,
    example,
    print_json,
    progress,
    say,
    show_table,
    state,
    to_json,
    use,
)

app = typer.Typer(
    cls=Group,
    name="aibill",
    help="Billing for AI usage: administer, inspect and export, on a local database"
    " (--db) or a running service (--url and --key).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=example(
        "aibill demo",
        "aibill balance acme",
        "aibill --url https://billing.internal --key $KEY report acme --by provider",
    ),
)


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Local database: a SQLAlchemy URL or a SQLite file path."
            " Default: $AIBILL_DATABASE_URL, the AIBILL_CONFIG file, or ./aibill.db.",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", envvar="AIBILL_URL", help="A running aibill service instead of --db."
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="AIBILL_KEY",
            help="API key to act with (required with --url; on --db, act as its holder).",
            show_envvar=True,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    if db is not None and "://" not in db:
        db = f"sqlite:///{db}"
    st = State(db=db, url=url, key=key, json=as_json)
    begin(st)
    ctx.call_on_close(st.close)


for sub in (ledger, admin_groups, reports):
    sub.register(app)


# ------------------------------------------------------------------ service


@app.command(
    epilog=example("aibill serve", "aibill serve --db postgresql+psycopg://db/aibill --port 8080")
)
def serve(
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (overrides the root --db).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (default 1 on SQLite, 2-4 on PostgreSQL)."),
    ] = None,
) -> None:
    """Serve the HTTP API and the dashboard until SIGTERM or Ctrl-C.

    Migrates the database first and prints a bootstrap admin key on the first
    start. Exit codes: 0 after a graceful stop, 2 for bad settings, 3 when it
    cannot listen. See docs/serve.md.
    """
    from aibill.serve import serve as run_server

    st = state()
    if st.remote:
        say(st, "serve runs the service; --url does not apply.")
        raise typer.Exit(2)
    if db is not None and "://" not in db:
        db = f"sqlite:///{db}"
    raise typer.Exit(run_server(database_url=db or st.db, host=host, port=port, workers=workers))


db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade", epilog=example("aibill db upgrade --db postgresql+psycopg://db/aibill"))
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Bring the local database's schema up to date (Alembic migrations)."""
    st = use(as_json)
    billing = st.local(create=True)  # connecting creates the file and migrates
    from aibill.store.migrate import current_revision

    revision = current_revision(billing.engine)
    if st.json:
        print_json(st, {"revision": revision, "current": True})
    else:
        say(st, f"schema is current (revision {revision})")


@db_app.command("sweep", epilog=example("aibill db sweep", "aibill db sweep acme"))
def db_sweep(
    mandate: Annotated[str | None, typer.Argument(help="Only this mandate.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Expire the holds past their time now, freeing what they reserved (the
    service's sweeper does this every 30 s; this is for a local database)."""
    st = use(as_json)
    count = st.local().sweep_expired(mandate)
    if st.json:
        print_json(st, {"expired": count})
    else:
        say(st, f"{count} overdue holds expired")


@app.command(
    "migrate", hidden=True, epilog=example("aibill migrate  # the same as: aibill db upgrade")
)
def migrate(as_json: JsonFlag = False) -> None:
    """Same as ``db upgrade``."""
    db_upgrade(as_json)


@app.command(epilog=example("aibill demo", "aibill demo --db demo.db --records 500"))
def demo(
    records: Annotated[
        int, typer.Option(min=0, max=100_000, help="Usage records to write.")
    ] = 3000,
    seed: Annotated[int, typer.Option(help="The same seed gives the same month.")] = 7,
    as_json: JsonFlag = False,
) -> None:
    """Fill the local database with a realistic month: three mandates (one per
    billing model), a dozen users with roles, credits, prices, exchange rates,
    and priced usage across providers and models. Running it again adds nothing."""
    from aibill import demo_data

    st = use(as_json)
    billing = st.local(create=True)
    with progress(st, "writing usage records", total=records) as advance:
        done = [0]

        def step(n: int, total: int) -> None:
            advance(n - done[0])
            done[0] = n

        summary = demo_data.fill(billing, records=records, seed=seed, progress=step)
    if st.json:
        print_json(
            st,
            {**to_json(summary), "wrote_nothing": summary.wrote_nothing, "lines": summary.lines()},
        )
    else:
        for line in summary.lines():
            say(st, line)
        say(st, "")
        report, balance = (
            command(st, "report acme --by provider"),
            command(st, "balance globex --all"),
        )
        say(st, f"Next: {report}   |   {balance}")
        key = command(
            st,
            f"key create --user {demo_data.SYSADMIN_USER} --scope billing:read"
            " --scope billing:admin",
        )
        say(st, f"A key for the dashboard or --url: {key}")


@app.command(epilog=example("aibill verify", "aibill verify acme --json"))
def verify(
    mandate: Annotated[str | None, typer.Argument(help="Only this mandate.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Recompute every account from its entries and open holds, and every
    spending limit's total; exit 1 if any drifted. Without a mandate, it goes
    mandate by mandate, one short read each, with a progress bar."""
    st = use(as_json)
    backend = st.backend()
    names = [mandate] if mandate is not None else [m.id for m in backend.mandates()]
    drift = []
    with progress(st, "verifying mandate by mandate", total=len(names)) as advance:
        for name in names:
            drift += backend.verify(name)
            advance(1)
    show_table(
        st,
        drift,
        [
            "mandate",
            "account",
            "counter",
            ("stored", "stored_micros"),
            ("entries say", "computed_micros"),
        ],
        title="Drift",
        empty="ledger is sound",
    )
    if drift:
        if not st.json:
            st.err.print(f"{len(drift)} counters drifted", style="red")
        raise typer.Exit(EXIT_FAILURE)


def main() -> None:
    """The console script's entry point."""
    app()
