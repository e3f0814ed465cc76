"""Spending limits: what one user, or one feature instance, may spend per
period (concepts.md rule 7), set by a mandate's admins and checked by every
hold, check and usage record."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.model import SpendingLimit
from aibill.domain.money import from_micros, to_micros
from aibill.domain.principal import Scope
from aibill.domain.requests import check_period, limit_subject
from aibill.service.context import Context, OpState
from aibill.store import ledger, tenants


class Limits:
    """Setting and listing spending limits."""

    def __init__(self, context: Context) -> None:
        self._cx = context

    def set_spending_limit(
        self,
        mandate: str,
        amount: Decimal | None,
        *,
        user: str | None = None,
        feature_instance: str | None = None,
        period: str = "month",
    ) -> SpendingLimit | None:
        """Limit what one user, or one feature instance, may spend per period
        (``day``, ``week`` from Monday, calendar ``month``; UTC). ``None`` removes it."""
        cx = self._cx
        scope, subject = limit_subject(user, feature_instance)
        check_period(period)
        micros = None if amount is None else to_micros(amount, allow_zero=True)

        def work(conn: Connection) -> SpendingLimit | None:
            cx.authorize(conn, mandate, Scope.ADMIN)
            op = cx.op(conn, mandate)
            if scope == "user":
                cx.account_for(conn, op, subject)  # the user must be a member
            old = tenants.limit_micros(conn, mandate, scope, subject, period)
            if old == micros:  # unchanged (or nothing to remove): nothing to record
                if micros is None:
                    return None
                return SpendingLimit(
                    mandate, scope, subject, period, from_micros(micros), op.currency
                )
            now = cx.now()
            if old is None:  # a new limit: count its period so far
                assert micros is not None
                tenants.hold_debits_still(conn)
                start = rules.period_start(now, period)
                end = rules.period_end(start, period)
                spent = ledger.posted_between(conn, mandate, scope, subject, start, end)
                tenants.add_limit(
                    conn, mandate, scope, subject, period, micros, now, (start, spent)
                )
            else:
                tenants.change_limit(conn, mandate, scope, subject, period, micros, now)
            target = f"{scope}:{subject}/{period}"
            before = None if old is None else {"amount": from_micros(old)}
            if micros is None:
                cx.audit(conn, mandate, "limit.remove", target=target, before=before)
                return None
            after = {"amount": from_micros(micros)}
            cx.audit(conn, mandate, "limit.set", target=target, before=before, after=after)
            return SpendingLimit(mandate, scope, subject, period, from_micros(micros), op.currency)

        return cx.write(work)

    def spending_limits(self, mandate: str) -> list[SpendingLimit]:
        cx = self._cx

        def work(conn: Connection) -> list[SpendingLimit]:
            cx.authorize(conn, mandate, Scope.READ)
            op = cx.op(conn, mandate)
            return [
                SpendingLimit(
                    mandate, r.scope, r.subject, r.period, from_micros(r.amount_micros), op.currency
                )
                for r in tenants.limit_rows(conn, mandate)
            ]

        return cx.read(work)


def first_passed(
    cx: Context,
    conn: Connection,
    op: OpState,
    user: str | None,
    feature_instance: str | None,
    micros: int,
    now: datetime,
    *,
    lock: bool = True,
) -> e.LimitExceeded | None:
    """The first spending limit that ``micros`` more would pass, if any.

    Spending in a period is counted from that period's debits and open
    holds, so a new period needs no reset. The limit rows are locked, so
    two holds of one user cannot both squeeze under the same limit.
    """
    if user is None and feature_instance is None:
        return None
    rows = ledger.limits_for(conn, op.mandate, user, feature_instance, lock=lock and cx.pg)
    for row in rows:
        spent = _spent(conn, op.mandate, row, now)
        if rules.limit_passed(row.amount_micros, spent, micros):
            return _exceeded(op.currency, row, spent, micros)
    return None


def _spent(conn: Connection, mandate: str, row: Any, now: datetime) -> int:
    """What the limit's subject has spent in the period of ``now``: the
    period's running total (or, for a clock behind the ledger's, its entries),
    and every open hold."""
    start = rules.period_start(now, row.period)
    posted = rules.counted_spend(row.spent_since, int(row.spent_micros), start)
    if posted is None:
        end = rules.period_end(start, row.period)
        posted = ledger.posted_between(conn, mandate, row.scope, row.subject, start, end)
    return posted + ledger.held(conn, mandate, row.scope, row.subject, now)


def _exceeded(currency: str, row: Any, spent: int, micros: int) -> e.LimitExceeded:
    amount, scope, subject, period = row.amount_micros, row.scope, row.subject, row.period
    left = rules.limit_left(amount, spent)
    return e.LimitExceeded(
        f"The {period}ly limit of {from_micros(amount)} {currency}"
        f" for {scope.replace('_', ' ')} {subject!r} would be passed:"
        f" {from_micros(left)} {currency} left,"
        f" {from_micros(micros)} {currency} asked.",
        scope=scope,
        subject=subject,
        period=period,
        limit=str(from_micros(amount)),
        spent=str(from_micros(spent)),
        left=str(from_micros(left)),
        required=str(from_micros(micros)),
        currency=currency,
    )
