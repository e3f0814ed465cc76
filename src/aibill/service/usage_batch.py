"""Usage records in batches (concepts.md rule 13): up to 1,000 records in one
transaction, decided one by one in order, written as sets.

Each record is decided by the same rules as ``record_usage``
(:func:`aibill.service.usage.decide`), so it has the outcome it would have
alone, in its place in the batch. What changes is how the ledger is asked:

- a mandate is authorized, read, and its keys and members looked up once per
  batch, not once per record;
- a provider or spending decision, a price, a rate and a markup are read once
  per batch for each distinct question (:class:`Batched`);
- each account's counters are read (and on PostgreSQL locked) once, kept in
  memory while the records draw from them in order, and written with one
  UPDATE at the end; the entries and idempotency records are inserted with
  one driver call each.

A mandate with spending limits has its records applied one at a time, each in
a savepoint, because what a limit allows depends on every debit before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.batch import MAX_BATCH_RECORDS, RecordOutcome, UsageRecord
from aibill.domain.model import BillingModel, Entry, Tags, check_name
from aibill.domain.prices import Charge
from aibill.domain.principal import PrincipalKind, Scope
from aibill.domain.requests import scope_allows
from aibill.service import draws, usage
from aibill.service.context import Context, OpState, expect, outcome_row
from aibill.service.postings import Posted
from aibill.service.pricing import Memo
from aibill.store import ledger, tx
from aibill.store.group import apply_each
from aibill.store.overlay import Counters

Items = list[tuple[int, usage.Prepared]]


def record_batch(cx: Context, records: Sequence[UsageRecord]) -> list[RecordOutcome]:
    """One outcome per record, in order (see ``Billing.record_usage_batch``)."""
    if not isinstance(records, Sequence) or not 1 <= len(records) <= MAX_BATCH_RECORDS:
        raise e.InvalidRequest(
            f"A batch has from 1 to {MAX_BATCH_RECORDS} records.", field="records"
        )
    p = cx.principal
    if p.kind is not PrincipalKind.SYSTEM and not scope_allows(p.scopes, Scope.USE):
        raise e.PermissionDenied(
            f"This key's scopes ({', '.join(sorted(p.scopes))}) do not allow billing:use.",
            scope=Scope.USE.value,
        )
    outcomes: list[RecordOutcome | None] = [None] * len(records)
    items: Items = []
    for i, record in enumerate(records):
        if not isinstance(record, UsageRecord):
            raise e.InvalidRequest(
                "Each record must be an aibill UsageRecord.", field=f"records[{i}]"
            )
        try:
            items.append((i, usage.prepare(record)))
        except e.AibillError as exc:  # this record's input: refused, the rest go on
            outcomes[i] = RecordOutcome(error=exc)
    if items:
        done = cx.write(lambda conn: _apply(cx, conn, items))
        for i, outcome in done.items():
            outcomes[i] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


def _apply(cx: Context, conn: Connection, items: Items) -> dict[int, RecordOutcome]:
    """The batch's unit of work: each mandate's records in order, then the writes."""
    by_mandate: dict[str, Items] = {}
    for item in items:
        by_mandate.setdefault(item[1].mandate, []).append(item)
    view = Batched(cx)
    now = cx.now()
    done: dict[int, RecordOutcome] = {}
    for mandate in sorted(by_mandate):  # one order of locks for every batch
        done.update(_mandate(view, conn, mandate, by_mandate[mandate], now))
    view.write(conn)
    return done


def _mandate(
    view: Batched, conn: Connection, mandate: str, items: Items, now: datetime
) -> dict[int, RecordOutcome]:
    """The outcomes of one mandate's records."""
    cx = view.cx
    try:
        cx.authorize(conn, mandate, Scope.USE)
        row = ledger.mandate(conn, mandate, None, None)
        if row is None:
            raise e.UnknownMandate(mandate)
        if ledger.has_limits(conn, mandate):
            return _one_by_one(cx, conn, items)
    except e.AibillError as exc:
        return {i: RecordOutcome(error=exc) for i, _ in items}
    model, currency = BillingModel(row.billing_model), row.currency
    stored = ledger.outcomes_of(conn, mandate, {p.key for _, p in items})
    members = ledger.members_among(conn, mandate, _named_users(items))
    done: dict[int, RecordOutcome] = {}
    for i, p in items:
        op = OpState(mandate, model, currency)
        if p.user is not None:
            op.user, op.member = p.user, p.user in members
        op.stored = stored.get(p.key)
        try:
            if p.user is not None:
                check_name(p.user, "user")
            replay = cx.replay(op, p.key, usage.OPERATION, p.request)
            if replay is not None:
                done[i] = _recorded(replay)
                continue
            decided = usage.decide(view, conn, op, p, now)
        except e.AibillError as exc:
            done[i] = RecordOutcome(error=exc)
            continue
        result = decided if isinstance(decided, e.Refused) else view.post(op, decided)
        kept = outcome_row(mandate, p.key, usage.OPERATION, p.request, result, now)
        view.outcomes.append(kept)
        stored[p.key] = (usage.OPERATION, p.request, kept["outcome"], kept["result"])
        done[i] = _recorded(result)
    return done


def _one_by_one(cx: Context, conn: Connection, items: Items) -> dict[int, RecordOutcome]:
    """Each record as ``record_usage`` applies it, in a savepoint of its own."""
    results = apply_each(conn, [usage.work(cx, p) for _, p in items])
    done: dict[int, RecordOutcome] = {}
    for (i, _), (result, error) in zip(items, results, strict=True):
        done[i] = RecordOutcome(error=error) if error is not None else _recorded(result)
    return done


def _named_users(items: Items) -> set[str]:
    """The well-formed user names the records name (a malformed one is its record's error)."""
    names: set[str] = set()
    for _, p in items:
        if p.user is not None and p.user not in names:
            try:
                names.add(check_name(p.user, "user"))
            except e.AibillError:
                continue
    return names


def _recorded(result: Any) -> RecordOutcome:
    """A record's outcome from what its unit gave: an entry (posted or
    replayed), or a refusal (new, or stored under its key)."""
    if isinstance(result, tx.Deferred):
        return RecordOutcome(error=result.error)
    if isinstance(result, e.Refused):
        return RecordOutcome(error=result)
    return RecordOutcome(entry=expect(result, Entry))


class Batched(usage.Direct):
    """The ledger as a batch's records see it: each decision, price, rate
    and markup read once; each account's counters read (and locked) once and
    drawn in memory; the entries and idempotency records kept to be written
    together (:meth:`write`)."""

    def __init__(self, cx: Context) -> None:
        super().__init__(cx)
        self._decided: dict[tuple[Any, ...], Any] = {}
        self._memo: Memo = {}
        self._accounts: dict[tuple[str, str], Counters | None] = {}
        self._drawn: dict[tuple[str, str], int] = {}
        self._expired: set[tuple[str, str]] = set()
        self.entries: list[dict[str, Any]] = []
        self.outcomes: list[dict[str, Any]] = []

    def provider_refusal(
        self, conn: Connection, mandate: str, user: str | None, provider: str | None
    ) -> e.ProviderNotAllowed | None:
        key = ("provider", mandate, user, provider)
        if key not in self._decided:
            self._decided[key] = super().provider_refusal(conn, mandate, user, provider)
        refusal: e.ProviderNotAllowed | None = self._decided[key]
        return refusal

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
        key = ("spend", mandate, user, provider, happened, provider_ok)
        if key not in self._decided:
            self._decided[key] = super().spend_refusal(
                conn, mandate, user, provider, happened=happened, provider_ok=provider_ok
            )
        refusal: e.SpendNotAllowed | None = self._decided[key]
        return refusal

    def charge(
        self, conn: Connection, op: OpState, asked: Posted, tags: Tags, now: datetime
    ) -> Charge | None:
        return asked.charge(self.cx.pricing, conn, op, tags, now, self._memo)

    def limit(
        self,
        conn: Connection,
        op: OpState,
        user: str | None,
        feature_instance: str | None,
        micros: int,
        now: datetime,
    ) -> e.LimitExceeded | None:
        return None  # a mandate with spending limits is applied one record at a time

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
        """As :meth:`usage.Direct.draw` decides it, on the counters in memory."""
        key = (op.mandate, account)
        acct = self._counters(conn, key)
        if acct is None:
            return None
        if enforce and not rules.fits(rules.account_available(acct), micros):
            if not self._expire(conn, key, acct, now):
                return None
            if not rules.fits(rules.account_available(acct), micros):
                return None
        acct.debits_posted += micros
        self._drawn[key] = self._drawn.get(key, 0) + micros
        short = draws.shortfall(op, acct, micros)
        if short and self._expire(conn, key, acct, now):
            short = draws.shortfall(op, acct, micros)
        return rules.balance(acct.credits_posted, acct.debits_posted), short

    def insufficient(self, conn: Connection, op: OpState, account: str, micros: int) -> e.Refused:
        return draws.refusal(op, account, micros, self._counters(conn, (op.mandate, account)))

    def post(self, op: OpState, posting: Any) -> Entry:
        """The entry ``posting`` describes, kept to be inserted with the others."""
        entry: Entry = posting.entry(op)
        self.entries.append(posting.row(op, entry))
        return entry

    def write(self, conn: Connection) -> None:
        """Write what the batch drew: one UPDATE per account, then its entries
        and idempotency records, each in one driver call."""
        for (mandate, account), micros in sorted(self._drawn.items()):
            ledger.take(conn, mandate, account, micros, pending=False, enforce=False)
        ledger.insert_entries(conn, self.entries)
        ledger.insert_outcomes(conn, self.outcomes)

    def _counters(self, conn: Connection, key: tuple[str, str]) -> Counters | None:
        if key not in self._accounts:
            row = ledger.lock_counters(conn, *key, lock=self.cx.pg)
            self._accounts[key] = None if row is None else Counters(row)
        return self._accounts[key]

    def _expire(
        self, conn: Connection, key: tuple[str, str], acct: Counters, now: datetime
    ) -> bool:
        """Expire the account's overdue holds (once a batch: it creates none);
        whether that freed anything."""
        if key in self._expired:
            return False
        self._expired.add(key)
        freed = ledger.expire_overdue(conn, key[0], key[1], now)
        acct.debits_pending -= freed
        return freed > 0
