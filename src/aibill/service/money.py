"""The money path: check, estimate, hold, capture, release, record_usage and
credit (concepts.md rules 1-6), read top to bottom.

Each operation is one unit of work in five steps: authorize, load (the
mandate, the account, the idempotency record), decide (the rules of
:mod:`aibill.domain.rules`), apply (named statements of
:mod:`aibill.store.ledger`), and remember the outcome under its key. Every
step takes the unit of work's connection, so several operations can share one
transaction.

A reservation or a debit is a *conditional* single-row UPDATE of the account
(:func:`aibill.store.ledger.take`), so two holds can never both spend the same
money, whether they race in threads or in processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.batch import RecordOutcome, UsageRecord
from aibill.domain.held import HeldCall
from aibill.domain.model import (
    POOL_ACCOUNT,
    CheckResult,
    Entry,
    EntryKind,
    Hold,
    HoldStatus,
    Tags,
    check_key,
    wallet_account,
)
from aibill.domain.money import from_micros, to_micros
from aibill.domain.prices import Charge
from aibill.domain.principal import Scope
from aibill.domain.requests import (
    DEFAULT_HOLD_TTL_S,
    check_aware,
    check_description,
    check_metadata,
    check_ttl,
    credit_request,
    mandate_of,
    same_capture,
    usage_json,
)
from aibill.domain.usage import Usage
from aibill.service import draws, usage_batch
from aibill.service import usage as usage_records
from aibill.service.codec import entry_from_row, hold_from_row
from aibill.service.context import Context, OpState, expect
from aibill.service.limits import first_passed
from aibill.service.postings import (
    Asked,
    Posting,
    hold_row,
    new_entry_id,
    new_hold,
)
from aibill.service.reads import balance_of
from aibill.store import history, ledger, tx
from aibill.store.overlay import Prefetch


class MoneyPath:
    """The operations that move money, for one principal (:class:`Context`)."""

    def __init__(self, context: Context) -> None:
        self._cx = context

    def credit(
        self,
        mandate: str,
        amount: Decimal,
        *,
        user: str | None = None,
        reason: str = "payment",
        description: str | None = None,
        idempotency_key: str,
        corrects: str | None = None,
    ) -> Entry:
        """Add money to the account the billing model names (concepts.md rule 6)."""
        cx = self._cx
        micros = to_micros(amount)
        key = check_key(idempotency_key)
        request = credit_request(micros, user, reason, description, corrects)

        def work(conn: Connection) -> Entry | tx.Deferred:
            cx.authorize(conn, mandate, Scope.ADMIN)
            op = cx.op(conn, mandate, user=user, key=key)
            replay = cx.replay(op, key, "credit", request)
            if replay is not None:
                return expect(replay, Entry)
            account = cx.account_for(conn, op, user)
            if corrects is not None:
                _require_entry(conn, mandate, corrects)
            now = cx.now()
            row = ledger.add_credit(conn, mandate, account, micros)
            entry = draws.post(
                conn,
                op,
                Posting(
                    account=account,
                    kind=EntryKind.CREDIT,
                    micros=micros,
                    reason=reason,
                    now=now,
                    balance_after=rules.balance(row.credits_posted, row.debits_posted),
                    user=user,
                    description=description,
                    corrects=corrects,
                ),
            )
            cx.remember(conn, mandate, key, "credit", request, entry, now)
            cx.audit(
                conn,
                mandate,
                "credit",
                target=account,
                after={
                    "entry_id": entry.id,
                    "amount": entry.amount,
                    "currency": entry.currency,
                    "reason": reason,
                    "balance_after": entry.balance_after,
                },
            )
            return entry

        return cx.apply(work, _drawing(mandate, key, user))

    def hold(
        self,
        mandate: str,
        *,
        amount: Decimal | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        feature_code: str | None = None,
        feature_instance: str | None = None,
        workflow_id: str | None = None,
        ttl_s: int = DEFAULT_HOLD_TTL_S,
        idempotency_key: str,
        metadata: Mapping[str, str | int] | None = None,
    ) -> HeldCall:
        """Reserve money for a call about to start (concepts.md rule 2).

        Either ``amount=`` or the priced form: ``provider``, ``model``,
        ``input_tokens`` and ``max_output_tokens``, reserved as the estimate
        (see :meth:`estimate`). Succeeds only if ``available >= amount`` at
        that instant and no spending limit would be passed; in an unlimited
        mandate only limits apply. Raises ``InsufficientBalance``,
        ``LimitExceeded``, ``ProviderNotAllowed`` or ``PermissionDenied``; each
        is stored under the key and replayed (:meth:`check` answers the same
        refusals without raising).

        The result is the ``Hold`` as a :class:`~aibill.domain.held.HeldCall`:
        ``call.capture(usage_or_amount)``, ``call.release()``, and a context
        manager that releases the hold on leaving its block uncaptured, as
        :meth:`aibill.Client.hold` does.
        """
        cx = self._cx
        key = check_key(idempotency_key)
        check_ttl(ttl_s)
        meta = check_metadata(metadata)
        tags = Tags(provider, model, feature_code, feature_instance, workflow_id)
        asked = Asked.of(amount, tags, input_tokens, max_output_tokens)
        request = {
            **asked.request,
            **tags.as_request(),
            "user": user,
            "ttl_s": ttl_s,
            "metadata": meta,
        }

        def work(conn: Connection) -> Hold | tx.Deferred:
            cx.authorize(conn, mandate, Scope.USE)
            op = cx.op(conn, mandate, user=user, key=key)
            replay = cx.replay(op, key, "hold", request)
            if replay is not None:
                return replay if isinstance(replay, tx.Deferred) else expect(replay, Hold)
            account = cx.account_for(conn, op, user)
            now = cx.now()
            taken = _take_hold(cx, conn, op, account, user, tags, asked, now)
            if isinstance(taken, e.Refused):
                cx.remember(conn, mandate, key, "hold", request, taken, now)
                return tx.Deferred(taken)
            micros, charge = taken
            hold = new_hold(op, account, user, micros, charge, tags, meta, now, ttl_s)
            ledger.insert_hold(conn, hold_row(hold, micros))
            cx.remember(conn, mandate, key, "hold", request, hold, now)
            return hold

        return HeldCall.of(self, cx.apply(work, _drawing(mandate, key, user)))

    def estimate(
        self,
        mandate: str,
        *,
        provider: str,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
        at: datetime | None = None,
    ) -> Charge:
        """An upper bound of what a call will cost, in the mandate's currency.

        ``input_tokens`` plus ``max_output_tokens`` (capped at the model's
        output limit where it is known), priced at the full input price (no
        cache discount is assumed), converted and marked up. Changes nothing.
        """
        cx = self._cx
        tags = Tags(provider, model)
        asked = Asked.of(None, tags, input_tokens, max_output_tokens)
        when = check_aware(at, "at") if at is not None else None

        def work(conn: Connection) -> Charge:
            cx.authorize(conn, mandate, Scope.USE)
            op = cx.op(conn, mandate)
            charge = asked.estimate(cx.pricing, conn, op, tags, when or cx.now())
            assert charge is not None  # the priced form always prices
            return charge

        return cx.read(work)

    def check(
        self,
        mandate: str,
        *,
        estimate: Decimal | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        feature_instance: str | None = None,
    ) -> CheckResult:
        """May a call costing up to ``estimate`` start now? (concepts.md rule 1)

        Either ``estimate=`` or the priced form: ``provider``, ``model``,
        ``input_tokens`` and ``max_output_tokens``, priced now exactly as
        :meth:`hold` would price them (see :meth:`estimate`); the answer's
        ``estimate`` is then that price. Answers with the reason (``ok``,
        ``provider_not_allowed`` when ``provider`` is given and the user may
        not use it, ``permission_denied`` when the call may not make the
        mandate pay (see :meth:`hold`), ``limit_exceeded``,
        ``insufficient_balance``), the balance and the account. It changes
        nothing and raises no refusal (:meth:`hold` raises them); a call it
        cannot price raises, as :meth:`estimate` does (``unknown_model``,
        ``missing_exchange_rate``).
        """
        cx = self._cx
        tags = Tags(provider=provider, model=model, feature_instance=feature_instance)
        asked = Asked.for_check(estimate, tags, input_tokens, max_output_tokens)

        def work(conn: Connection) -> CheckResult:
            cx.authorize(conn, mandate, Scope.USE)
            op = cx.op(conn, mandate, user=user)
            account = cx.account_for(conn, op, user)
            balance = balance_of(conn, op, account)
            now = cx.now()
            charge = asked.estimate(cx.pricing, conn, op, tags, now)
            micros = charge.amount_micros if charge else asked.micros
            reason = "ok"
            forbidden: e.Refused | None = cx.authz.provider_refusal(
                conn, op.mandate, user, provider
            )
            if forbidden is None:
                forbidden = cx.authz.spend_refusal(
                    conn, op.mandate, user, provider, provider_ok=True
                )
            limit = first_passed(cx, conn, op, user, feature_instance, micros, now, lock=False)
            available = _available_now(conn, op.mandate, account, now)
            if forbidden is not None:
                reason = forbidden.code
            elif limit is not None:
                reason = limit.code
            elif not rules.fits(available, micros, enforced=op.model.enforced):
                reason = e.InsufficientBalance.code
            return CheckResult(
                allowed=reason == "ok",
                reason=reason,
                balance=balance.balance,
                available=from_micros(available),
                billing_model=op.model,
                account=account,
                currency=op.currency,
                estimate=from_micros(micros),
            )

        return cx.read(work)

    def capture(
        self,
        hold_id: str,
        *,
        amount: Decimal | None = None,
        usage: Usage | None = None,
        idempotency_key: str | None = None,
        description: str | None = None,
    ) -> Entry:
        """Post the real cost of a held call and free the hold, in one transaction.

        Give ``amount=``, or ``usage=`` to price the hold's provider and model
        at the capture's time (its exchange rate and prices). The full cost is
        always posted (the usage happened); any part the account cannot cover
        takes it below zero and the entry is marked ``over_balance`` with the
        ``shortfall``. A hold is captured at most once: capturing it again with
        the same amount or usage returns the first entry; anything else, or a
        capture after a release, is a conflict.
        """
        cx = self._cx
        if (amount is None) == (usage is None):
            raise e.InvalidRequest("Give either amount= or usage=.", field="amount")
        micros = to_micros(amount) if amount is not None else None
        if usage is not None and not isinstance(usage, Usage):
            raise e.InvalidRequest("usage must be an aibill.Usage.", field="usage")
        mandate = mandate_of(hold_id)
        key = check_key(idempotency_key) if idempotency_key is not None else None
        check_description(description)
        request = {
            "hold_id": hold_id,
            "amount": None if micros is None else str(from_micros(micros)),
            "usage": None if usage is None else usage_json(usage),
            "description": description,
        }

        def work(conn: Connection) -> Entry:
            cx.authorize(conn, mandate, Scope.USE)
            op = cx.op(conn, mandate, key=key)
            row = _lock_hold(cx, conn, mandate, hold_id)
            refusal = cx.authz.capture_refusal(conn, op.mandate, row)
            if refusal is not None:  # raised, not stored: a retry once allowed still posts
                raise refusal
            if key is not None:
                replay = cx.replay(op, key, "capture", request)
                if replay is not None:
                    return expect(replay, Entry)
            now = cx.now()
            status = HoldStatus(row.status)
            if status is HoldStatus.CAPTURED:
                entry = _recapture(conn, op, row, micros, usage)
            elif status is HoldStatus.RELEASED:
                raise e.HoldAlreadyReleased(
                    f"Hold {hold_id!r} was released; it cannot be captured.", hold_id=hold_id
                )
            else:
                charge = _capture_charge(cx, conn, op, row, usage, now)
                posted = charge.amount_micros if charge else micros
                assert posted is not None
                entry = _capture(conn, op, row, posted, now, description, charge)
            if key is not None:
                cx.remember(conn, mandate, key, "capture", request, entry, now)
            return entry

        return cx.apply(work, _reads(mandate, key, hold_id))

    def release(self, hold_id: str, *, idempotency_key: str | None = None) -> Hold:
        """Free a hold without a debit (the call failed or never started).

        Releasing a released hold returns it; releasing an expired hold returns
        it unchanged (its reservation is already free); releasing a captured
        hold is a conflict.
        """
        cx = self._cx
        mandate = mandate_of(hold_id)
        key = check_key(idempotency_key) if idempotency_key is not None else None
        request = {"hold_id": hold_id}

        def work(conn: Connection) -> Hold:
            cx.authorize(conn, mandate, Scope.USE)
            op = cx.op(conn, mandate, key=key)
            if key is not None:
                replay = cx.replay(op, key, "release", request)
                if replay is not None:
                    return expect(replay, Hold)
            row = _lock_hold(cx, conn, mandate, hold_id)
            now = cx.now()
            status = HoldStatus(row.status)
            if status is HoldStatus.CAPTURED:
                raise e.HoldAlreadyCaptured(
                    f"Hold {hold_id!r} was captured; it cannot be released.",
                    hold_id=hold_id,
                    entry_id=row.entry_id,
                )
            if status is HoldStatus.PENDING:
                # Past its time the hold has expired, whether or not a sweep saw it yet.
                expired = rules.is_expired(row.expires_at, now)
                ended = HoldStatus.EXPIRED if expired else HoldStatus.RELEASED
                ledger.end_hold(
                    conn, mandate, row.account_id, hold_id, ended.value, row.amount_micros, now
                )
                hold = replace(hold_from_row(row, op.currency), status=ended, resolved_at=now)
            elif status is HoldStatus.RELEASED:
                hold = hold_from_row(row, op.currency).as_replay()
            else:
                hold = hold_from_row(row, op.currency)
            if key is not None:
                cx.remember(conn, mandate, key, "release", request, hold, now)
            return hold

        return cx.apply(work, _reads(mandate, key, hold_id))

    def record_usage(
        self,
        mandate: str,
        *,
        amount: Decimal | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        usage: Usage | None = None,
        provider_cost: Decimal | None = None,
        provider_currency: str | None = None,
        feature_code: str | None = None,
        feature_instance: str | None = None,
        workflow_id: str | None = None,
        idempotency_key: str,
        already_happened: bool = False,
        description: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
    ) -> Entry:
        """Post a debit without a prior hold (concepts.md rule 5).

        Give one of: ``amount=`` (in the mandate's currency, posted as it is);
        ``provider``, ``model`` and ``usage`` to price the tokens now; or
        ``provider_cost=``, what the provider charged, in ``provider_currency``
        (USD unless given), converted at the rate in force and marked up (the
        markup of ``provider``/``model`` when named). Both priced forms keep the
        whole breakdown on the entry. In a prepaid mandate it is refused with
        ``InsufficientBalance`` when the account cannot pay, and anywhere with
        ``LimitExceeded`` when a spending limit would be passed, unless
        ``already_happened``: usage that happened is always recorded, and the
        entry is marked (``over_balance`` with the ``shortfall``, ``over_limit``
        naming the limit).
        """
        record = UsageRecord(
            mandate=mandate,
            idempotency_key=idempotency_key,
            amount=amount,
            user=user,
            provider=provider,
            model=model,
            usage=usage,
            provider_cost=provider_cost,
            provider_currency=provider_currency,
            feature_code=feature_code,
            feature_instance=feature_instance,
            workflow_id=workflow_id,
            already_happened=already_happened,
            description=description,
            metadata=metadata,
        )
        prepared = usage_records.prepare(record)
        reads = _drawing(mandate, prepared.key, user)
        return self._cx.apply(usage_records.work(self._cx, prepared), reads)

    def record_usage_batch(self, records: Sequence[UsageRecord]) -> list[RecordOutcome]:
        """Post up to 1,000 usage records in one transaction (concepts.md rule 13).

        Each :class:`~aibill.domain.batch.UsageRecord` is what
        :meth:`record_usage` takes, with its mandate (any this principal may
        bill) and its own idempotency key. The answer is one
        :class:`~aibill.domain.batch.RecordOutcome` per record, in order: its
        entry, or the error that refused it (a refusal is stored under its key,
        as :meth:`record_usage` stores it). A record that is refused never
        fails another, and the whole batch sent again after a timeout posts
        nothing twice.
        """
        return usage_batch.record_batch(self._cx, records)


def _drawing(mandate: str, key: str, user: str | None) -> Prefetch:
    """What a hold, a usage record or a credit for ``user`` reads first: its
    key, the user's membership, and the accounts it may draw from, whichever
    the mandate's billing model (not yet read) names."""
    keys = ((mandate, key),)
    if user is None:
        return Prefetch(keys=keys, accounts=((mandate, POOL_ACCOUNT),))
    accounts = ((mandate, POOL_ACCOUNT), (mandate, wallet_account(user)))
    return Prefetch(keys=keys, accounts=accounts, members=((mandate, user),))


def _reads(mandate: str, key: str | None, hold_id: str) -> Prefetch:
    """What a capture or a release reads first: its hold, and its key if any."""
    return Prefetch(keys=() if key is None else ((mandate, key),), holds=((mandate, hold_id),))


def _take_hold(
    cx: Context,
    conn: Connection,
    op: OpState,
    account: str,
    user: str | None,
    tags: Tags,
    asked: Asked,
    now: datetime,
) -> e.Refused | tuple[int, Charge | None]:
    """Decide a hold and reserve its amount: the refusal to store, or the
    micros reserved and the estimate they came from. Who may use the
    provider, and who may spend, is decided before anything is priced or
    moved; the reservation itself is the atomic check of rule 2."""
    refusal: e.Refused | None = cx.authz.provider_refusal(conn, op.mandate, user, tags.provider)
    if refusal is None:
        refusal = cx.authz.spend_refusal(conn, op.mandate, user, tags.provider, provider_ok=True)
    if refusal is not None:
        return refusal
    charge = asked.estimate(cx.pricing, conn, op, tags, now)
    micros = charge.amount_micros if charge else asked.micros
    limit = first_passed(cx, conn, op, user, tags.feature_instance, micros, now)
    if limit is not None:
        return limit
    enforce = op.model.enforced
    if draws.take(conn, op, account, micros, now, pending=True, enforce=enforce) is None:
        return draws.insufficient(conn, op, account, micros)
    return micros, charge


def _available_now(conn: Connection, mandate: str, account: str, now: datetime) -> int:
    """Available balance, not counting holds that are past their time."""
    row = ledger.counters(conn, mandate, account)
    overdue = ledger.overdue_micros(conn, mandate, account, now)
    return rules.account_available(row, overdue=overdue)


def _recapture(
    conn: Connection, op: OpState, row: Any, micros: int | None, usage: Usage | None
) -> Entry:
    """A captured hold captured again: the first entry as a replay when the
    capture is the same, else ``HoldAlreadyCaptured``."""
    first = _entry_by_id(conn, op, row.entry_id)
    if not same_capture(first, micros, usage):
        raise e.HoldAlreadyCaptured(
            f"Hold {row.hold_id!r} was already captured for {first.amount} {op.currency}.",
            hold_id=row.hold_id,
            captured=first.amount,
            entry_id=first.id,
        )
    return first.as_replay()


def _capture_charge(
    cx: Context, conn: Connection, op: OpState, row: Any, usage: Usage | None, now: datetime
) -> Charge | None:
    """The price of ``usage`` on the hold's provider and model at ``now``
    (None when the capture gives an amount)."""
    if usage is None:
        return None
    if row.provider is None or row.model is None:
        raise e.InvalidRequest(
            f"Hold {row.hold_id!r} names no provider and model to price; capture it with amount=.",
            field="usage",
        )
    return cx.pricing.quote(
        conn,
        mandate=op.mandate,
        currency=op.currency,
        provider=row.provider,
        model=row.model,
        usage=usage,
        at=now,
    )


def _capture(
    conn: Connection,
    op: OpState,
    row: Any,
    micros: int,
    now: datetime,
    description: str | None,
    charge: Charge | None,
) -> Entry:
    expired = row.status == HoldStatus.EXPIRED.value or rules.is_expired(row.expires_at, now)
    # A pending hold still carries its reservation, overdue or not: it is
    # freed here; what the usage posts and draws is rule 3's (rules.py).
    posting = rules.capture_posting(
        micros,
        row.amount_micros,
        pending=row.status == HoldStatus.PENDING.value,
        expired=expired,
    )
    entry_id = new_entry_id()
    acct = ledger.post_capture(conn, op.mandate, row.account_id, posting.debit, posting.freed)
    ledger.mark_captured(conn, op.mandate, row.hold_id, micros, entry_id, now)
    # A shortfall is measured on the part drawn from the available balance.
    shortfall = draws.settled_shortfall(conn, op, row.account_id, acct, posting.drawn, now)
    tags = Tags(row.provider, row.model, row.feature_code, row.feature_instance, row.workflow_id)
    return draws.post(
        conn,
        op,
        Posting(
            entry_id=entry_id,
            account=row.account_id,
            kind=EntryKind.DEBIT,
            micros=posting.debit,
            reason="usage",
            now=now,
            balance_after=rules.balance(acct.credits_posted, acct.debits_posted),
            user=row.user_id,
            hold_id=row.hold_id,
            shortfall=shortfall,
            captured_after_expiry=expired,
            description=description,
            metadata=dict(row.metadata or {}),
            tags=tags,
            charge=charge,
        ),
    )


def _lock_hold(cx: Context, conn: Connection, mandate: str, hold_id: str) -> Any:
    row = ledger.hold_row(conn, mandate, hold_id, lock=cx.pg)
    if row is None:
        raise e.HoldNotFound(hold_id)
    return row


def _require_entry(conn: Connection, mandate: str, entry_id: str) -> None:
    if not history.entry_exists(conn, mandate, entry_id):
        raise e.NotFound(f"No entry with id {entry_id!r}.", entry_id=entry_id)


def _entry_by_id(conn: Connection, op: OpState, entry_id: str) -> Entry:
    row = history.entry_row(conn, op.mandate, entry_id)
    assert row is not None  # a captured hold names its entry
    return entry_from_row(row, op.currency)
