"""Reading the ledger: balances and accounts, holds, history, the audit log,
usage reports and CSV exports (the reports' work is in
:mod:`aibill.service.reports`).

A balance read finds overdue holds no longer counted as pending: when the
account has any, they are expired first, in a short write of their own.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import TypeVar, Unpack

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.model import Balance, EntryKind, HistoryFilters, Hold, Page, UsageFilters
from aibill.domain.money import from_micros
from aibill.domain.principal import PrincipalKind, Scope
from aibill.domain.reports import GroupBy, UsageRow, UserBalance
from aibill.domain.requests import (
    check_aware,
    check_filters,
    check_page_limit,
    decode_cursor,
    encode_cursor,
    entry_kind,
    mandate_of,
)
from aibill.service import audit, reports
from aibill.service.codec import entry_from_row, hold_from_row
from aibill.service.context import Context, OpState
from aibill.service.reports import CsvLines, TextOut
from aibill.store import history, ledger, tenants

T = TypeVar("T")
NOT_IN_CSV = frozenset({"breakdown", "metadata"})
"""Entry columns no history CSV writes: an export's pages do not read them."""


class Reads:
    """What a principal may read of the ledger."""

    def __init__(self, context: Context) -> None:
        self._cx = context
        self._omit: frozenset[str] = frozenset()
        """Columns history pages leave out (see :meth:`_for_csv`)."""

    def balance(self, mandate: str, *, user: str | None = None) -> Balance:
        """The account the billing model names for ``user``.

        Overdue holds no longer count as pending: if the account has any, they
        are expired first (a short write); otherwise this only reads.
        ``billing:read`` reads any account; ``billing:use`` the account it bills
        (see :meth:`aibill.service.authz.Authz.authorize_balance`).
        """
        cx = self._cx

        def read(conn: Connection) -> Balance | None:
            cx.authz.authorize_balance(conn, mandate, user)
            op = cx.op(conn, mandate, user=user)
            account = cx.account_for(conn, op, user)
            overdue = history.has_overdue(conn, mandate, cx.now(), account)
            return None if overdue else balance_of(conn, op, account)

        def sweep(conn: Connection) -> Balance:
            cx.authz.authorize_balance(conn, mandate, user)
            op = cx.op(conn, mandate, user=user)
            account = cx.account_for(conn, op, user)
            ledger.expire_overdue(conn, mandate, account, cx.now())
            return balance_of(conn, op, account)

        return cx.read(read) or cx.write(sweep)

    def accounts(self, mandate: str) -> list[Balance]:
        """Every account of ``mandate`` (the pool, and the users' wallets), by
        account name. Overdue holds are expired first, as :meth:`balance` does."""
        cx = self._cx

        def overdue(conn: Connection) -> bool:
            cx.authorize(conn, mandate, Scope.READ)
            cx.op(conn, mandate)
            return history.has_overdue(conn, mandate, cx.now())

        def sweep(conn: Connection) -> None:
            cx.authorize(conn, mandate, Scope.READ)
            expire_overdue_of(conn, mandate, cx.now())

        def work(conn: Connection) -> list[Balance]:
            cx.authorize(conn, mandate, Scope.READ)
            op = cx.op(conn, mandate)
            return [balance_of(conn, op, name) for name in tenants.account_names(conn, mandate)]

        if cx.read(overdue):
            cx.write(sweep)
        return cx.read(work)

    def get_hold(self, hold_id: str) -> Hold:
        """One hold, as :meth:`hold` returned it and as it is now: for a key
        with ``billing:use`` (it is what a hold call returns) or ``billing:read``."""
        cx = self._cx
        mandate = mandate_of(hold_id)

        def work(conn: Connection) -> Hold:
            cx.authorize(conn, mandate, cx.authz.use_or_read())
            op = cx.op(conn, mandate)
            row = history.hold_row(conn, mandate, hold_id)
            if row is None:
                raise e.HoldNotFound(hold_id)
            return hold_from_row(row, op.currency)

        return cx.read(work)

    def open_holds(self, mandate: str, *, limit: int = 100) -> list[Hold]:
        """The holds of ``mandate`` still pending (in flight), newest first; at
        most ``limit`` (1 to 1,000). A hold past its expiry that no sweep has
        seen yet is not listed: it no longer reserves anything."""
        cx = self._cx
        check_page_limit(limit)

        def work(conn: Connection) -> list[Hold]:
            cx.authorize(conn, mandate, Scope.READ)
            op = cx.op(conn, mandate)
            rows = history.open_hold_rows(conn, mandate, cx.now(), limit)
            return [hold_from_row(r, op.currency) for r in rows]

        return cx.read(work)

    def history(
        self,
        mandate: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        user: str | None = None,
        account: str | None = None,
        kind: str | EntryKind | None = None,
        reason: str | None = None,
        hold_id: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        feature_code: str | None = None,
        feature_instance: str | None = None,
        workflow_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page:
        """Entries newest first, ``limit`` at a time (at most 1000).

        Filters: ``user`` (entries tagged with that user), ``account``,
        ``kind`` (credit/debit), ``reason``, ``hold_id``, ``provider``,
        ``model`` (as asked), ``feature_code``, ``feature_instance``,
        ``workflow_id``, and a time range ``since <= posted_at < until``.
        """
        cx = self._cx
        check_page_limit(limit)
        after = decode_cursor(cursor) if cursor else None
        kind = entry_kind(kind) if kind is not None else None
        for name, when in (("since", since), ("until", until)):
            if when is not None:
                check_aware(when, name)
        texts = {"user": user, "account": account, "reason": reason, "hold_id": hold_id}
        tags = {"provider": provider, "model": model, "feature_code": feature_code}
        tags |= {"feature_instance": feature_instance, "workflow_id": workflow_id}
        check_filters(**texts, **tags)
        equal = {"user_id": user, "account_id": account, "kind": kind.value if kind else None}
        equal |= {"reason": reason, "hold_id": hold_id, **tags}

        omit = self._omit

        def work(conn: Connection) -> Page:
            cx.authorize(conn, mandate, Scope.READ)
            op = cx.op(conn, mandate)
            rows = history.entry_page(conn, mandate, equal, since, until, after, limit, omit)
            items = [entry_from_row(r, op.currency) for r in rows[:limit]]
            more = len(rows) > limit
            return Page(items, encode_cursor(items[-1]) if more and items else None)

        return cx.read(work)

    def audit_log(
        self, mandate: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> audit.AuditPage:
        """A mandate's audit log, newest first, for its admins; ``None``: the
        platform's, for system admins."""
        cx = self._cx

        def work(conn: Connection) -> audit.AuditPage:
            cx.authorize(conn, mandate, Scope.ADMIN)
            return audit.read(conn, mandate, limit=limit, cursor=cursor)

        return cx.read(work)

    def balances_for_user(self, user: str) -> list[UserBalance]:
        """One row per mandate ``user`` belongs to, for the account the mandate's
        billing model names for them (the pool, or their wallet), sorted by mandate.
        Raises ``UnknownUser`` for a user aibill does not know."""
        cx = self._cx
        p = cx.principal
        if p.kind is not PrincipalKind.SYSTEM:
            # Another user's balances are the platform's business; one's own
            # is a report of one's mandate (billing:read).
            where = p.mandate if p.kind is PrincipalKind.USER and p.user == user else None
            cx.read(lambda conn: cx.authorize(conn, where, Scope.READ))
        rows = reports.balances_for_user(cx, user)
        # A member's key sees its own mandate's row only.
        return [r for r in rows if p.kind is not PrincipalKind.USER or r.mandate == p.mandate]

    def usage_report(
        self,
        mandate: str,
        *,
        group_by: GroupBy = ("day",),
        since: datetime | None = None,
        until: datetime | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        feature_code: str | None = None,
        feature_instance: str | None = None,
        workflow_id: str | None = None,
    ) -> list[UsageRow]:
        """Usage totals per group: calls, tokens, provider cost, billed amount.

        ``group_by``: at most one of ``day``, ``week`` (ISO, from Monday),
        ``month`` (UTC buckets), and any of ``provider``, ``model``,
        ``feature_code``, ``feature_instance``, ``user``, ``workflow_id``.
        Only usage debits count; ``since <= posted_at < until``.
        """
        cx = self._cx
        cx.read(lambda conn: cx.authorize(conn, mandate, Scope.READ))
        return reports.usage_report(
            cx,
            mandate,
            group_by=group_by,
            since=since,
            until=until,
            user=user,
            provider=provider,
            model=model,
            feature_code=feature_code,
            feature_instance=feature_instance,
            workflow_id=workflow_id,
        )

    def iter_history_csv(
        self,
        mandate: str,
        *,
        page_size: int = 1000,
        spreadsheet_safe: bool = True,
        **filters: Unpack[HistoryFilters],
    ) -> CsvLines:
        """The history as CSV lines, header first, newest first, ``history()``'s
        filters; read one page at a time, so memory stays flat.

        Text cells that a spreadsheet would run as a formula (starting with
        ``=``, ``+``, ``-``, ``@``, tab or CR) are prefixed with ``'``; numbers
        never are. ``spreadsheet_safe=False`` writes the text as stored, for
        programs that read the file as data."""
        return reports.iter_history_csv(
            self._for_csv(),
            mandate,
            page_size=page_size,
            spreadsheet_safe=spreadsheet_safe,
            **filters,
        )

    def _for_csv(self) -> Reads:
        """These reads, with history pages that leave out what no CSV column
        holds (the breakdown and the metadata, most of an entry's bytes)."""
        view = copy.copy(self)
        view._omit = NOT_IN_CSV
        return view

    def export_history_csv(
        self,
        mandate: str,
        out: TextOut,
        *,
        page_size: int = 1000,
        spreadsheet_safe: bool = True,
        **filters: Unpack[HistoryFilters],
    ) -> int:
        """Write the history as CSV to ``out``; returns the number of entries written."""
        lines = self.iter_history_csv(
            mandate, page_size=page_size, spreadsheet_safe=spreadsheet_safe, **filters
        )
        return reports.write_lines(lines, out)

    def iter_usage_report_csv(
        self,
        mandate: str,
        *,
        group_by: GroupBy = ("day",),
        spreadsheet_safe: bool = True,
        **filters: Unpack[UsageFilters],
    ) -> CsvLines:
        """``usage_report()`` as CSV lines, header first; text cells neutralised
        as in ``iter_history_csv`` unless ``spreadsheet_safe=False``."""
        cx = self._cx
        cx.read(lambda conn: cx.authorize(conn, mandate, Scope.READ))
        return reports.iter_usage_report_csv(
            cx, mandate, group_by=group_by, spreadsheet_safe=spreadsheet_safe, **filters
        )

    def export_usage_report_csv(
        self,
        mandate: str,
        out: TextOut,
        *,
        group_by: GroupBy = ("day",),
        spreadsheet_safe: bool = True,
        **filters: Unpack[UsageFilters],
    ) -> int:
        """Write ``usage_report()`` as CSV to ``out``; returns the number of groups written."""
        lines = self.iter_usage_report_csv(
            mandate, group_by=group_by, spreadsheet_safe=spreadsheet_safe, **filters
        )
        return reports.write_lines(lines, out)


def balance_of(conn: Connection, op: OpState, account: str) -> Balance:
    """The balance of one account of the mandate ``op`` read."""
    row = tenants.account_row(conn, op.mandate, account)
    if row is None:
        raise e.UnknownAccount(
            f"Mandate {op.mandate!r} has no account {account!r}.", account=account
        )
    return Balance(
        balance=from_micros(rules.balance(row.credits_posted, row.debits_posted)),
        available=from_micros(rules.account_available(row)),
        pending=from_micros(row.debits_pending),
        currency=op.currency,
        account=account,
        mandate=op.mandate,
        credits_posted=from_micros(row.credits_posted),
        debits_posted=from_micros(row.debits_posted),
        overdraft_limit=from_micros(row.overdraft_limit),
        user=row.user_id,
    )


def expire_overdue_of(conn: Connection, mandate: str, now: datetime) -> None:
    """Expire every overdue hold of ``mandate``, account by account."""
    accounts = {account for _, account in history.overdue_accounts(conn, mandate, now)}
    for account in sorted(accounts):
        ledger.expire_overdue(conn, mandate, account, now)
