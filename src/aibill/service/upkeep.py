"""Keeping the ledger sound: ``verify`` recomputes every account's counters
from its entries and open holds, and the sweeper expires overdue holds."""

from __future__ import annotations

from sqlalchemy import Connection

from aibill.domain.model import Drift
from aibill.domain.principal import Scope
from aibill.service.context import Context
from aibill.store import history, ledger

COUNTER_NAMES = ("credits_posted", "debits_posted", "debits_pending")


class Upkeep:
    """Verify and sweep."""

    def __init__(self, context: Context) -> None:
        self._cx = context

    def verify(self, mandate: str | None = None) -> list[Drift]:
        """Recompute every account's counters from its entries and open holds.

        Returns the differences found; an empty list means the ledger is sound.
        """
        cx = self._cx

        def work(conn: Connection) -> list[Drift]:
            cx.authorize(conn, mandate, Scope.READ)
            sums: dict[tuple[str, str], dict[str, int]] = {}
            for m, a, kind, total in history.entry_sums(conn, mandate):
                name = "credits_posted" if kind == "credit" else "debits_posted"
                sums.setdefault((m, a), {})[name] = total
            for m, a, total in history.pending_sums(conn, mandate):
                sums.setdefault((m, a), {})["debits_pending"] = total
            found: list[Drift] = []
            for row in history.counter_rows(conn, mandate):
                computed = sums.pop((row.mandate_id, row.account_id), {})
                for name in COUNTER_NAMES:
                    stored, value = getattr(row, name), computed.get(name, 0)
                    if stored != value:
                        found.append(Drift(row.mandate_id, row.account_id, name, stored, value))
            for (m, a), computed in sums.items():
                for name, value in computed.items():
                    found.append(Drift(m, a, name, 0, value))
            return found

        return cx.read(work)

    def sweep_expired(self, mandate: str | None = None) -> int:
        """Expire every overdue hold (for a background sweeper); returns how many."""
        cx = self._cx
        now = cx.now()

        def find(conn: Connection) -> list[tuple[str, str]]:
            cx.authorize(conn, mandate, Scope.USE)
            return history.overdue_accounts(conn, mandate, now)

        count = 0
        for m, a in cx.read(find):

            def work(conn: Connection, m: str = m, a: str = a) -> int:
                before = history.count_overdue(conn, m, a, now)
                ledger.expire_overdue(conn, m, a, now)
                return before

            count += cx.write(work)
        return count
