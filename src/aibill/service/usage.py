"""A usage record, decided: ``record_usage`` posts a debit without a prior
hold (concepts.md rule 5). The request is checked before anything is read
(:func:`prepare`); its unit of work (:func:`work`) authorizes, loads the
mandate and the key, and replays or decides (:func:`decide`).

:func:`decide` asks what it needs to know (may this user use the provider
and pay, what does the call cost, which limit would it pass, can the account
pay) of a :class:`Direct` view of the ledger, which reads and writes the
database as each question comes. A batch of records asks the same questions
of a view that reads each setting once and keeps the accounts' counters in
memory until the batch is written (:mod:`aibill.service.usage_batch`), so
one record decides alike alone or in a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.batch import UsageRecord
from aibill.domain.model import Entry, EntryKind, Tags, check_key
from aibill.domain.prices import Charge
from aibill.domain.principal import Scope
from aibill.domain.requests import check_description, check_metadata, limit_name
from aibill.service import draws
from aibill.service.context import Context, OpState, expect
from aibill.service.limits import first_passed
from aibill.service.postings import Posted, Posting, UsageDraw
from aibill.store import tx

OPERATION = "record_usage"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A usage record, checked: what its unit of work needs, and the request
    its idempotency key keeps."""

    mandate: str
    user: str | None
    key: str
    tags: Tags
    asked: Posted
    happened: bool
    description: str | None
    metadata: dict[str, Any]
    request: dict[str, Any]


def prepare(record: UsageRecord) -> Prepared:
    """Check a usage record before anything is read; raises on bad input."""
    r = record
    key = check_key(r.idempotency_key)
    check_description(r.description)
    meta = check_metadata(r.metadata)
    tags = Tags(r.provider, r.model, r.feature_code, r.feature_instance, r.workflow_id)
    asked = Posted.of(r.amount, r.usage, r.provider_cost, r.provider_currency, tags)
    happened = bool(r.already_happened)
    request = {
        **asked.request,
        **tags.as_request(),
        "user": r.user,
        "already_happened": happened,
        "description": r.description,
        "metadata": meta,
    }
    return Prepared(r.mandate, r.user, key, tags, asked, happened, r.description, meta, request)


def work(cx: Context, p: Prepared) -> Callable[[Connection], Entry | tx.Deferred]:
    """The unit of work of one usage record."""

    def unit(conn: Connection) -> Entry | tx.Deferred:
        cx.authorize(conn, p.mandate, Scope.USE)
        op = cx.op(conn, p.mandate, user=p.user, key=p.key)
        replay = cx.replay(op, p.key, OPERATION, p.request)
        if replay is not None:
            return replay if isinstance(replay, tx.Deferred) else expect(replay, Entry)
        now = cx.now()
        outcome = decide(Direct(cx), conn, op, p, now)
        if isinstance(outcome, e.Refused):
            cx.remember(conn, p.mandate, p.key, OPERATION, p.request, outcome, now)
            return tx.Deferred(outcome)
        entry = draws.post(conn, op, outcome)
        cx.remember(conn, p.mandate, p.key, OPERATION, p.request, entry, now)
        return entry

    return unit


def decide(view: Direct, conn: Connection, op: OpState, p: Prepared, now: datetime) -> Any:
    """The record's account, then its debit drawn: the refusal to store
    (``e.Refused``), or the :class:`Posting` to post."""
    account = view.cx.account_for(conn, op, p.user)
    use = UsageDraw(account, p.user, p.tags, p.asked, p.happened, now, p.description, p.metadata)
    return take_usage(view, conn, op, use)


def take_usage(view: Direct, conn: Connection, op: OpState, use: UsageDraw) -> Any:
    """Decide ``record_usage``'s debit and draw it from the account: the
    refusal to store, or the entry to post. Usage that ``happened`` passes
    the provider rule, the limits and the balance, marked on the entry."""
    happened, now, tags = use.happened, use.now, use.tags
    forbidden = view.provider_refusal(conn, op.mandate, use.user, tags.provider)
    if forbidden is not None and not happened:
        return forbidden
    spend = view.spend_refusal(
        conn, op.mandate, use.user, tags.provider, happened=happened, provider_ok=forbidden is None
    )
    if spend is not None:
        return spend
    charge = view.charge(conn, op, use.asked, tags, now)
    posted = charge.amount_micros if charge else use.asked.micros
    limit = view.limit(conn, op, use.user, tags.feature_instance, posted, now)
    if limit is not None and not happened:
        return limit
    enforce = op.model.enforced and not happened
    drawn = view.draw(conn, op, use.account, posted, now, enforce=enforce)
    if drawn is None:
        return view.insufficient(conn, op, use.account, posted)
    balance_after, shortfall = drawn
    return Posting(
        account=use.account,
        kind=EntryKind.DEBIT,
        micros=posted,
        reason="usage",
        now=now,
        balance_after=balance_after,
        user=use.user,
        shortfall=shortfall,
        description=use.description,
        metadata=use.metadata,
        tags=tags,
        charge=charge,
        over_limit=limit_name(limit) if limit else None,
        provider_not_allowed=forbidden is not None,
    )


class Direct:
    """The ledger as one usage record's decision sees it, read and written
    as each question is asked, in the unit of work's transaction."""

    def __init__(self, cx: Context) -> None:
        self.cx = cx

    def provider_refusal(
        self, conn: Connection, mandate: str, user: str | None, provider: str | None
    ) -> e.ProviderNotAllowed | None:
        return self.cx.authz.provider_refusal(conn, mandate, user, provider)

    def spend_refusal(
        self,
        conn: Connection,
        mandate: str,
        user: str | None,
        provider: str | None,
        *,
        happened: bool,
        provider_ok: bool,
    ) -> e.SpendNotAllowed | None:
        return self.cx.authz.spend_refusal(
            conn, mandate, user, provider, happened=happened, provider_ok=provider_ok
        )

    def charge(
        self, conn: Connection, op: OpState, asked: Posted, tags: Tags, now: datetime
    ) -> Charge | None:
        return asked.charge(self.cx.pricing, conn, op, tags, now)

    def limit(
        self,
        conn: Connection,
        op: OpState,
        user: str | None,
        feature_instance: str | None,
        micros: int,
        now: datetime,
    ) -> e.LimitExceeded | None:
        return first_passed(self.cx, conn, op, user, feature_instance, micros, now)

    def draw(
        self,
        conn: Connection,
        op: OpState,
        account: str,
        micros: int,
        now: datetime,
        *,
        enforce: bool,
    ) -> tuple[int, int] | None:
        """Post ``micros`` to the account's debits (with ``enforce``, only if
        it can pay): its balance after and the debit's shortfall, or None."""
        acct = draws.take(conn, op, account, micros, now, pending=False, enforce=enforce)
        if acct is None:
            return None
        short = draws.settled_shortfall(conn, op, account, acct, micros, now)
        return rules.balance(acct.credits_posted, acct.debits_posted), short

    def insufficient(self, conn: Connection, op: OpState, account: str, micros: int) -> e.Refused:
        return draws.insufficient(conn, op, account, micros)
