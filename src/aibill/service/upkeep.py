"""Keeping the ledger sound: ``verify`` recomputes every account's counters
from its entries and open holds, every spending limit's running total from
its period's entries, and every daily usage rollup from its day's usage
debits; the sweeper expires overdue holds."""

from __future__ import annotations

from sqlalchemy import Connection

from aibill.domain import rules
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
        """Recompute every account's counters from its entries and open holds,
        every spending limit's running total from its period's entries, and
        every daily usage rollup from its usage debits.

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
            return found + _limit_drift(conn, mandate) + _rollup_drift(conn, mandate)

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


def _limit_drift(conn: Connection, mandate: str | None) -> list[Drift]:
    """Each spending limit's running total against its period's entries; a
    difference names the limit (``user:alice/month``) as its account and
    ``spent_micros`` as its counter."""
    found = []
    for row in history.limit_totals(conn, mandate):
        end = rules.period_end(row.spent_since, row.period)
        counted = ledger.posted_between(
            conn, row.mandate_id, row.scope, row.subject, row.spent_since, end
        )
        if counted != row.spent_micros:
            target = f"{row.scope}:{row.subject}/{row.period}"
            found.append(Drift(row.mandate_id, target, "spent_micros", row.spent_micros, counted))
    return found


def _rollup_drift(conn: Connection, mandate: str | None) -> list[Drift]:
    """Each daily usage rollup row against the usage debits of its day and
    tags. A difference names the row (``usage_days:2026-12-01/alice/openai/
    gpt-4o/chat/USD``, untagged values empty) as its account and the total
    that differs as its counter."""
    found = []
    mandates = [mandate] if mandate is not None else history.mandate_ids(conn)
    zero = (0,) * len(history.ROLLUP_SUMS)
    for m in mandates:
        for table in history.ROLLUPS:
            stored, counted = history.rollup_differences(conn, table, m)
            for key in sorted(stored.keys() | counted.keys()):
                have, want = stored.get(key, zero), counted.get(key, zero)
                target = f"{table.name}:{'/'.join(key[1:])}"
                for name, a, b in zip(history.ROLLUP_SUMS, have, want, strict=True):
                    if a != b:
                        found.append(Drift(m, target, name, a, b))
    return found
