"""``aibill`` on the command line (``python -m aibill``)."""

from __future__ import annotations

import argparse
import sys

import aibill
from aibill import demo
from aibill.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aibill", description="Billing for AI usage.")
    parser.add_argument(
        "--db",
        default=None,
        help="database URL (default: $AIBILL_DATABASE_URL, the AIBILL_CONFIG file,"
        " or sqlite:///aibill.db)",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="run a short scripted story and print balances (default)")
    sub.add_parser("verify", help="recompute every account from its entries; exit 1 on drift")
    sub.add_parser("migrate", help="bring the database schema up to date")
    serve = sub.add_parser(
        "serve",
        help="serve the HTTP API (migrates; prints a bootstrap admin key on first start)",
        description="Serve the HTTP API until SIGTERM or Ctrl-C. Flags override the"
        " AIBILL_* environment and the AIBILL_CONFIG file; see docs/serve.md.",
    )
    # Own dest: a subparser's default would overwrite the top-level --db.
    serve.add_argument("--db", dest="serve_db", default=None, help="database URL")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default 1 on SQLite, 2-4 on PostgreSQL)",
    )
    args = parser.parse_args(argv)

    if args.command == "serve":
        from aibill.serve import serve as run_server

        return run_server(
            database_url=args.serve_db or args.db,
            host=args.host,
            port=args.port,
            workers=args.workers,
        )

    try:
        settings = load_settings(database_url=args.db)
        billing = aibill.connect(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
    except ValueError as err:  # invalid settings
        print(f"error: {err}", file=sys.stderr)
        return 2
    except aibill.AibillError as err:
        print(f"error [{err.code}]: {err.message}", file=sys.stderr)
        return 2
    with billing:
        if args.command in (None, "demo"):
            demo.run(billing)
        elif args.command == "verify":
            drift = billing.verify()
            for d in drift:
                print(
                    f"{d.mandate}/{d.account} {d.counter}: stored {d.stored_micros}, "
                    f"entries say {d.computed_micros}"
                )
            print("ledger is sound" if not drift else f"{len(drift)} counters drifted")
            return 1 if drift else 0
        elif args.command == "migrate":
            print("schema is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
