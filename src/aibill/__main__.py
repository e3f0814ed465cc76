"""``aibill`` on the command line (``python -m aibill``)."""

from __future__ import annotations

import argparse
import os
import sys

import aibill
from aibill import demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aibill", description="Billing for AI usage.")
    parser.add_argument(
        "--db",
        default=os.environ.get("AIBILL_DATABASE_URL", "sqlite:///aibill.db"),
        help="database URL (default: sqlite:///aibill.db, or $AIBILL_DATABASE_URL)",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="run a short scripted story and print balances (default)")
    sub.add_parser("verify", help="recompute every account from its entries; exit 1 on drift")
    sub.add_parser("migrate", help="bring the database schema up to date")
    args = parser.parse_args(argv)
    try:
        billing = aibill.connect(args.db)
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
