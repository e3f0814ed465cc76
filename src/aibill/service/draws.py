"""Drawing money from an account: the conditional take of a hold or a debit,
the shortfall of a debit that happened anyway, the refusal when the money is
not there, and the entry a debit posts. Holds, captures and usage records
(one at a time or in batches) all draw through these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.model import Entry
from aibill.domain.money import from_micros
from aibill.service.context import OpState
from aibill.service.postings import Posting
from aibill.store import ledger


def take(
    conn: Connection,
    op: OpState,
    account: str,
    micros: int,
    now: datetime,
    *,
    pending: bool,
    enforce: bool,
) -> Any:
    """Add ``micros`` to the account's pending (a hold) or posted debits.

    With ``enforce`` the change happens only if ``available >= micros`` at
    that instant (one conditional UPDATE: the atomic check). That SQL
    condition is :func:`aibill.domain.rules.fits`, written over the row
    (``rules.AVAILABLE_SQL``) so the check and the write are one step. If it is
    refused, overdue holds are expired first and the check runs once more,
    so an expired reservation never blocks a hold. Returns the account's
    counters after the change, or None when refused.
    """
    row = ledger.take(conn, op.mandate, account, micros, pending=pending, enforce=enforce)
    if row is None and enforce and ledger.expire_overdue(conn, op.mandate, account, now):
        row = ledger.take(conn, op.mandate, account, micros, pending=pending, enforce=enforce)
    return row


def settled_shortfall(
    conn: Connection, op: OpState, account: str, acct: Any, micros: int, now: datetime
) -> int:
    """The shortfall of a just-posted debit, once overdue holds are expired:
    money an expired hold still seemed to reserve was in fact available."""
    short = shortfall(op, acct, micros)
    if short and ledger.expire_overdue(conn, op.mandate, account, now):
        acct = ledger.counters(conn, op.mandate, account)
        short = shortfall(op, acct, micros)
    return short


def shortfall(op: OpState, acct: Any, micros: int) -> int:
    """How much of ``micros`` just drawn from the available balance it could not cover."""
    available = rules.account_available(acct)
    return rules.shortfall(micros, available, enforced=op.model.enforced)


def insufficient(conn: Connection, op: OpState, account: str, micros: int) -> e.Refused:
    """The refusal of ``micros`` the account cannot pay, as it stands now."""
    return refusal(op, account, micros, ledger.counters(conn, op.mandate, account))


def refusal(op: OpState, account: str, micros: int, counters: Any) -> e.Refused:
    """The refusal of ``micros`` the account (its ``counters``) cannot pay;
    ``UnknownAccount`` when there is no such account."""
    if counters is None:
        raise e.UnknownAccount(
            f"Mandate {op.mandate!r} has no account {account!r}.", account=account
        )
    return e.InsufficientBalance(
        account=account,
        available=from_micros(rules.account_available(counters)),
        required=from_micros(micros),
        currency=op.currency,
    )


def post(conn: Connection, op: OpState, posting: Posting) -> Entry:
    """Insert the ledger entry ``posting`` describes and return it."""
    entry = posting.entry(op)
    ledger.insert_entry(conn, posting.row(op, entry))
    return entry
