"""The ledger under random sequences of operations, on SQLite and PostgreSQL.

A hypothesis state machine drives four accounts at once: the pool of an
``unlimited`` mandate, the pool of a ``prepay_mandate`` mandate, and the two
wallets (alice, bob) of a ``prepay_user`` mandate. It credits, holds, captures
(below, at and above the held amount, before and after expiry), releases,
records usage (refused or already happened), replays earlier calls by their
idempotency key, reuses keys with different arguments, resolves holds twice,
moves overdraft limits and moves the clock past hold expiry.

An independent model, plain integers of micro-units, says what every account
must hold. After every step the ledger must agree with it, its stored counters
must add up (``verify``), and a prepaid account may only be below zero
available as far as entries marked ``over_balance`` (or a lowered overdraft
limit) explain.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import aibill
from aibill import (
    Balance,
    Billing,
    Entry,
    EntryKind,
    Hold,
    HoldAlreadyCaptured,
    HoldAlreadyReleased,
    HoldStatus,
    IdempotencyConflict,
    InsufficientBalance,
    ManualClock,
)
from tests.integration.test_group_commit import _one_batch

MICROS = 1_000_000
SLOTS = ("unlimited", "pool", "alice", "bob")
"""The accounts under test: two pools and the two wallets of a per-user mandate."""

# Whole units, odd micro amounts and the smallest amount, so that holds,
# captures and balances meet exactly at their edges now and then.
amounts = st.one_of(
    st.integers(1, 12).map(lambda units: units * MICROS),
    st.integers(1, 12 * MICROS),
    st.just(1),
)
# A hold or a usage may also ask for exactly what the account has available,
# one micro-unit less, or one more: the edge where it is refused.
EDGES = {"available-1": -1, "available": 0, "available+1": 1}
sizes: st.SearchStrategy[int | str] = st.one_of(amounts, amounts, st.sampled_from(list(EDGES)))
ttls = st.one_of(st.sampled_from([1, 60, 900, 3600]), st.integers(1, 7200))
clock_moves = st.one_of(st.sampled_from([1, 60, 899, 900, 901]), st.integers(1, 3600))
# Most operations run at once; some first let time pass (a number of seconds,
# or to the instant the account's next hold expires), so that they meet holds
# that are overdue but not yet expired by any earlier read.
NEXT_EXPIRY = "next expiry"
waits: st.SearchStrategy[int | str] = st.one_of(
    st.just(0), st.just(0), st.just(NEXT_EXPIRY), st.integers(1, 120)
)
overdraft_limits = st.one_of(st.sampled_from([0, 0, 1, 5 * MICROS]), st.integers(0, 20 * MICROS))

OPEN = (HoldStatus.PENDING, HoldStatus.EXPIRED)
"""Holds not yet captured or released: the caller may still resolve them."""
again = st.sampled_from([False, False, True])

_COMMON = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SETTINGS = {
    "sqlite": settings(_COMMON, max_examples=100, stateful_step_count=40),
    "postgres": settings(_COMMON, max_examples=40, stateful_step_count=40),
}


def dec(micros: int) -> Decimal:
    return Decimal(micros) / MICROS


def shortfall(drawn: int, available_after: int) -> int:
    """How far a debit left its prepaid account below zero available, at most
    the part of it drawn from the available balance (not from its own hold)."""
    return min(drawn, max(0, -available_after))


@dataclass
class AccountModel:
    mandate: str
    account: str
    user: str | None  # the user whose wallet this is; None for a pool
    enforced: bool
    credits: int = 0
    debits: int = 0
    overdraft: int = 0
    explained: int = 0  # how far below zero available entries have justified

    @property
    def balance(self) -> int:
        return self.credits - self.debits


@dataclass
class HoldModel:
    slot: str
    id: str
    amount: int
    expires_at: datetime
    first: Hold  # what hold() returned
    status: HoldStatus = HoldStatus.PENDING
    captured: int | None = None
    entry: Entry | None = None  # the capture's entry
    released: Hold | None = None  # what the first release returned


@dataclass
class Call:
    """An earlier call that stored an outcome under its idempotency key."""

    op: str
    slot: str
    kwargs: dict[str, Any]
    outcome: Entry | Hold | InsufficientBalance


def make_machine(billing: Billing, clock: ManualClock) -> type[RuleBasedStateMachine]:
    """A state machine class bound to one open ledger and its clock."""

    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            tag = uuid.uuid4().hex[:12]
            mandates = {
                "unlimited": f"st-{tag}-unl",
                "pool": f"st-{tag}-pool",
                "wallets": f"st-{tag}-wal",
            }
            billing.create_mandate(mandates["unlimited"], billing_model="unlimited")
            billing.create_mandate(mandates["pool"], billing_model="prepay_mandate")
            billing.create_mandate(mandates["wallets"], billing_model="prepay_user")
            for user in ("alice", "bob"):
                billing.add_user(user)
                for mandate in mandates.values():
                    billing.add_member(mandate, user)
            self.mandates = list(mandates.values())
            self.accounts = {
                "unlimited": AccountModel(mandates["unlimited"], "pool", None, enforced=False),
                "pool": AccountModel(mandates["pool"], "pool", None, enforced=True),
                "alice": AccountModel(mandates["wallets"], "user:alice", "alice", enforced=True),
                "bob": AccountModel(mandates["wallets"], "user:bob", "bob", enforced=True),
            }
            self.holds: list[HoldModel] = []
            self.calls: list[Call] = []
            self.keys = 0

        # ------------------------------------------------------------ model

        def key(self) -> str:
            self.keys += 1
            return f"k{self.keys}"

        def user_for(self, slot: str, tag_user: bool) -> str | None:
            """Wallets are named by their user; a pool call may carry a user tag."""
            acct = self.accounts[slot]
            if acct.user is not None:
                return acct.user
            return "alice" if tag_user else None

        def pick_hold(self, data: st.DataObject, again: bool) -> HoldModel:
            """Mostly a hold still open to the caller; sometimes any, to resolve it twice."""
            unresolved = [h for h in self.holds if h.status in OPEN]
            return data.draw(st.sampled_from(self.holds if again or not unresolved else unresolved))

        def pending(self, slot: str) -> int:
            return sum(
                h.amount for h in self.holds if h.slot == slot and h.status is HoldStatus.PENDING
            )

        def available(self, slot: str) -> int:
            acct = self.accounts[slot]
            return acct.balance - self.pending(slot) + acct.overdraft

        def settle(self, slot: str, short: int = 0) -> None:
            """Account for a marked shortfall; forget old ones once out of the red."""
            acct = self.accounts[slot]
            if self.available(slot) >= 0:
                acct.explained = 0
            else:
                acct.explained += short

        def expected_shortfall(self, slot: str, amount: int) -> int:
            if not self.accounts[slot].enforced:
                return 0
            return shortfall(amount, self.available(slot))

        def read_balance(self, slot: str) -> Balance:
            acct = self.accounts[slot]
            return billing.balance(acct.mandate, user=acct.user)

        def check_entry(
            self,
            got: Entry,
            slot: str,
            *,
            kind: EntryKind,
            amount: int,
            user: str | None,
            short: int = 0,
            hold_id: str | None = None,
            after_expiry: bool = False,
        ) -> None:
            acct = self.accounts[slot]
            assert not got.replayed
            assert (got.mandate, got.account, got.kind) == (acct.mandate, acct.account, kind)
            assert got.amount == dec(amount)
            assert got.balance_after == dec(acct.balance)
            assert got.user == user
            assert got.hold_id == hold_id
            assert got.over_balance == (short > 0), got
            assert got.shortfall == dec(short), (got.shortfall, dec(short))
            assert got.captured_after_expiry == after_expiry
            assert got.posted_at == clock()

        def replay(self, call: Call) -> None:
            """The same key with the same arguments: the first outcome, nothing written."""
            before = self.read_balance(call.slot)
            fn = getattr(billing, call.op)
            if isinstance(call.outcome, InsufficientBalance):
                with pytest.raises(InsufficientBalance) as refused:
                    fn(**call.kwargs)
                assert refused.value.to_dict() == call.outcome.to_dict()
            else:
                again = fn(**call.kwargs)
                assert again.replayed
                assert again == replace(call.outcome, replayed=True)
            assert self.read_balance(call.slot) == before

        def check_unchanged(self, slot: str) -> None:
            """The ledger still shows the account as the model has it."""
            self.check_balance(slot, self.read_balance(slot))

        def amount_for(self, slot: str, size: int | str) -> int:
            if isinstance(size, int):
                return size
            return max(1, self.available(slot) + EDGES[size])

        def wait(self, seconds: int | str, slot: str, op: str) -> None:
            """Let time pass just before ``op``, without any read in between."""
            if seconds == NEXT_EXPIRY:
                due = [
                    h.expires_at
                    for h in self.holds
                    if h.slot == slot and h.status is HoldStatus.PENDING
                ]
                if due:
                    clock.set(min(due))
            elif isinstance(seconds, int) and seconds:
                clock.advance(seconds)
            if any(h.slot == slot for h in self.expire_overdue()):
                event(f"{op} right after a hold on its account expired")

        def refused(self, op: str, slot: str, kwargs: dict[str, Any], amount: int) -> None:
            """A refusal leaves the account as it was and is stored for replay."""
            assert self.accounts[slot].enforced
            with pytest.raises(InsufficientBalance) as refusal:
                getattr(billing, op)(**kwargs)
            err = refusal.value
            assert err.available == dec(self.available(slot))
            assert err.required == dec(amount)
            self.check_unchanged(slot)
            event(f"{op} refused")
            call = Call(op, slot, kwargs, err)
            self.calls.append(call)
            self.replay(call)

        # ------------------------------------------------------------ rules

        @initialize(
            opening=st.fixed_dictionaries(
                {slot: st.integers(0, 20).map(lambda units: units * MICROS) for slot in SLOTS}
            )
        )
        def opening_credits(self, opening: dict[str, int]) -> None:
            for slot, amount in opening.items():
                if amount:
                    self.credit(slot, amount, tag_user=False, wait=0)

        @initialize(
            opening=st.fixed_dictionaries(
                {slot: st.none() | st.tuples(amounts, ttls) for slot in SLOTS}
            )
        )
        def opening_holds(self, opening: dict[str, tuple[int, int] | None]) -> None:
            for slot, held in opening.items():
                if held is not None:
                    self.hold(slot, *held, tag_user=False, wait=0)

        @rule(slot=st.sampled_from(SLOTS), amount=amounts, tag_user=st.booleans(), wait=waits)
        def credit(self, slot: str, amount: int, tag_user: bool, wait: int | str) -> None:
            self.wait(wait, slot, "credit")
            acct = self.accounts[slot]
            user = self.user_for(slot, tag_user)
            kwargs = {
                "mandate": acct.mandate,
                "amount": dec(amount),
                "user": user,
                "idempotency_key": self.key(),
            }
            got = billing.credit(**kwargs)
            acct.credits += amount
            self.check_entry(got, slot, kind=EntryKind.CREDIT, amount=amount, user=user)
            self.settle(slot)
            self.calls.append(Call("credit", slot, kwargs, got))

        @rule(
            slot=st.sampled_from(SLOTS),
            size=sizes,
            ttl=ttls,
            tag_user=st.booleans(),
            wait=waits,
        )
        def hold(
            self, slot: str, size: int | str, ttl: int, tag_user: bool, wait: int | str
        ) -> None:
            self.wait(wait, slot, "hold")
            amount = self.amount_for(slot, size)
            acct = self.accounts[slot]
            user = self.user_for(slot, tag_user)
            kwargs = {
                "mandate": acct.mandate,
                "amount": dec(amount),
                "user": user,
                "ttl_s": ttl,
                "idempotency_key": self.key(),
            }
            if acct.enforced and self.available(slot) < amount:
                self.refused("hold", slot, kwargs, amount)
                return
            got = billing.hold(**kwargs)
            assert not got.replayed
            assert (got.mandate, got.account, got.user) == (acct.mandate, acct.account, user)
            assert got.amount == dec(amount)
            assert got.status is HoldStatus.PENDING
            assert got.created_at == clock()
            assert got.expires_at == clock() + timedelta(seconds=ttl)
            assert got.id.startswith(f"{acct.mandate}:")
            assert got.id not in {h.id for h in self.holds}
            event("hold placed")
            self.holds.append(HoldModel(slot, got.id, amount, got.expires_at, got))
            self.settle(slot)
            self.calls.append(Call("hold", slot, kwargs, got))

        @precondition(lambda self: self.holds)
        @rule(
            data=st.data(),
            how=st.sampled_from(["below", "equal", "above"]),
            delta=amounts,
            keyed=st.booleans(),
            wait=waits,
            again=again,
        )
        def capture(
            self,
            data: st.DataObject,
            how: str,
            delta: int,
            keyed: bool,
            wait: int | str,
            again: bool,
        ) -> None:
            h = self.pick_hold(data, again)
            self.wait(wait, h.slot, "capture")
            amount = {
                "below": max(1, h.amount - delta),
                "equal": h.amount,
                "above": h.amount + delta,
            }[how]
            kwargs: dict[str, Any] = {"hold_id": h.id, "amount": dec(amount)}
            if keyed:
                kwargs["idempotency_key"] = self.key()
            if h.status is HoldStatus.RELEASED:
                event("capture of a released hold")
                with pytest.raises(HoldAlreadyReleased):
                    billing.capture(**kwargs)
                self.check_unchanged(h.slot)
                return
            if h.status is HoldStatus.CAPTURED:
                # A hold resolves once: the same amount returns the first entry,
                # another amount is a conflict.
                event(f"second capture, same amount: {amount == h.captured}")
                if amount != h.captured:
                    with pytest.raises(HoldAlreadyCaptured):
                        billing.capture(**kwargs)
                    self.check_unchanged(h.slot)
                    return
                got = billing.capture(**kwargs)
                assert h.entry is not None
                assert got == replace(h.entry, replayed=True)
                self.check_unchanged(h.slot)
            else:
                got = billing.capture(**kwargs)
                expired = h.status is HoldStatus.EXPIRED
                assert expired == (h.expires_at <= clock())
                acct = self.accounts[h.slot]
                acct.debits += amount
                h.status, h.captured = HoldStatus.CAPTURED, amount
                # Only the part above what the hold still reserved is drawn from
                # the available balance; a shortfall is measured on that part.
                drawn = amount if expired else max(0, amount - h.amount)
                short = self.expected_shortfall(h.slot, drawn)
                self.check_entry(
                    got,
                    h.slot,
                    kind=EntryKind.DEBIT,
                    amount=amount,
                    user=h.first.user,
                    short=short,
                    hold_id=h.id,
                    after_expiry=expired,
                )
                event(f"capture {how} hold, expired: {expired}, short: {short > 0}")
                h.entry = got
                self.settle(h.slot, short)
            if keyed:
                self.calls.append(Call("capture", h.slot, kwargs, got))

        @precondition(lambda self: self.holds)
        @rule(data=st.data(), keyed=st.booleans(), wait=waits, again=again)
        def release(self, data: st.DataObject, keyed: bool, wait: int | str, again: bool) -> None:
            h = self.pick_hold(data, again)
            self.wait(wait, h.slot, "release")
            kwargs: dict[str, Any] = {"hold_id": h.id}
            if keyed:
                kwargs["idempotency_key"] = self.key()
            event(f"release of a {h.status.value} hold")
            if h.status is HoldStatus.CAPTURED:
                with pytest.raises(HoldAlreadyCaptured):
                    billing.release(**kwargs)
                self.check_unchanged(h.slot)
                return
            got = billing.release(**kwargs)
            assert got.id == h.id
            assert got.amount == dec(h.amount)
            if h.status is HoldStatus.PENDING:
                assert not got.replayed
                assert got.status is HoldStatus.RELEASED
                assert got.resolved_at == clock()
                h.status, h.released = HoldStatus.RELEASED, got
                self.settle(h.slot)
            elif h.status is HoldStatus.RELEASED:
                assert h.released is not None
                assert got == replace(h.released, replayed=True)
                self.check_unchanged(h.slot)
            else:
                # An expired hold's reservation is already free: it stays expired.
                assert got.status is HoldStatus.EXPIRED
                assert not got.replayed
                self.check_unchanged(h.slot)
            if keyed:
                self.calls.append(Call("release", h.slot, kwargs, got))

        @rule(
            slot=st.sampled_from(SLOTS),
            size=sizes,
            already_happened=st.booleans(),
            tag_user=st.booleans(),
            wait=waits,
        )
        def record_usage(
            self,
            slot: str,
            size: int | str,
            already_happened: bool,
            tag_user: bool,
            wait: int | str,
        ) -> None:
            self.wait(wait, slot, "record_usage")
            amount = self.amount_for(slot, size)
            acct = self.accounts[slot]
            user = self.user_for(slot, tag_user)
            kwargs = {
                "mandate": acct.mandate,
                "amount": dec(amount),
                "user": user,
                "already_happened": already_happened,
                "idempotency_key": self.key(),
            }
            if acct.enforced and not already_happened and self.available(slot) < amount:
                self.refused("record_usage", slot, kwargs, amount)
                return
            got = billing.record_usage(**kwargs)
            acct.debits += amount
            short = self.expected_shortfall(slot, amount)
            # Only usage that already happened may take a prepaid account short.
            assert short == 0 or already_happened
            self.check_entry(got, slot, kind=EntryKind.DEBIT, amount=amount, user=user, short=short)
            event(f"usage recorded, already happened: {already_happened}, short: {short > 0}")
            self.settle(slot, short)
            self.calls.append(Call("record_usage", slot, kwargs, got))

        @rule(
            records=st.lists(
                st.tuples(st.sampled_from(SLOTS), sizes, st.booleans(), st.booleans()),
                min_size=1,
                max_size=6,
            ),
            wait=waits,
            together=st.sampled_from(["batch", "group"]),
        )
        def record_usage_batch(
            self, records: list[tuple[str, int | str, bool, bool]], wait: int | str, together: str
        ) -> None:
            """Several usage records in one transaction (rule 13): each keeps the
            outcome it would have alone, in order, seeing the ones before it.
            Sent as one batch, or as concurrent calls that group commit applies
            in one transaction."""
            self.wait(wait, records[0][0], "record_usage_batch")
            sent, expected = [], []
            for slot, size, happened, tag_user in records:
                amount = self.amount_for(slot, size)
                acct = self.accounts[slot]
                kwargs = {
                    "mandate": acct.mandate,
                    "amount": dec(amount),
                    "user": self.user_for(slot, tag_user),
                    "already_happened": happened,
                    "idempotency_key": self.key(),
                }
                sent.append(aibill.UsageRecord(**kwargs))  # type: ignore[arg-type]
                if acct.enforced and not happened and self.available(slot) < amount:
                    expected.append((slot, kwargs, amount, None, self.available(slot)))
                    continue
                acct.debits += amount
                short = self.expected_shortfall(slot, amount)
                expected.append((slot, kwargs, amount, short, acct.balance))
                self.settle(slot, short)
            outcomes = _send(billing, sent, together)
            for (slot, kwargs, amount, short, figure), outcome in zip(
                expected, outcomes, strict=True
            ):
                if short is None:  # refused: the available balance it met
                    assert isinstance(outcome.error, InsufficientBalance), outcome
                    assert (outcome.error.available, outcome.error.required) == (
                        dec(figure),
                        dec(amount),
                    )
                    self.calls.append(Call("record_usage", slot, kwargs, outcome.error))
                    continue
                got = outcome.entry
                assert got is not None and not got.replayed, outcome
                assert (got.amount, got.balance_after) == (dec(amount), dec(figure))
                assert got.shortfall == dec(short) and got.user == kwargs["user"]
                self.calls.append(Call("record_usage", slot, kwargs, got))
            for slot in {slot for slot, *_ in records}:
                self.check_unchanged(slot)
            event(f"{len(records)} usage records sent as one {together}")

        @precondition(lambda self: any(h.status is HoldStatus.PENDING for h in self.holds))
        @rule(
            data=st.data(),
            then=st.sampled_from(["record_usage", "hold"]),
            size=sizes,
            already_happened=st.booleans(),
            ttl=ttls,
        )
        def at_the_instant_a_hold_expires(
            self,
            data: st.DataObject,
            then: str,
            size: int | str,
            already_happened: bool,
            ttl: int,
        ) -> None:
            """At the instant a hold expires, before anything has read its account,
            a usage or a new hold on that account sees the reservation as free."""
            pending = [h for h in self.holds if h.status is HoldStatus.PENDING]
            h = data.draw(st.sampled_from(pending), label="hold")
            clock.set(h.expires_at)
            self.expire_overdue()
            if then == "record_usage":
                self.record_usage(h.slot, size, already_happened, tag_user=False, wait=0)
            else:
                self.hold(h.slot, size, ttl, tag_user=False, wait=0)

        @precondition(lambda self: self.calls)
        @rule(data=st.data())
        def replay_earlier_call(self, data: st.DataObject) -> None:
            call = data.draw(st.sampled_from(self.calls), label="call")
            event(f"replay of {call.op}")
            self.replay(call)

        @precondition(lambda self: self.calls)
        @rule(data=st.data(), delta=st.integers(1, 3 * MICROS))
        def reuse_key_with_other_arguments(self, data: st.DataObject, delta: int) -> None:
            call = data.draw(st.sampled_from(self.calls), label="call")
            kwargs = dict(call.kwargs)
            if call.op == "release":
                kwargs["hold_id"] = f"{self.accounts[call.slot].mandate}:hold_other"
                field = "hold_id"
            else:
                kwargs["amount"] = kwargs["amount"] + dec(delta)
                field = "amount"
            before = self.read_balance(call.slot)
            with pytest.raises(IdempotencyConflict) as conflict:
                getattr(billing, call.op)(**kwargs)
            assert conflict.value.field == field
            assert conflict.value.details["key"] == call.kwargs["idempotency_key"]
            assert self.read_balance(call.slot) == before
            self.replay(call)

        @precondition(lambda self: any(c.op != "credit" for c in self.calls))
        @rule(data=st.data())
        def reuse_key_for_a_credit(self, data: st.DataObject) -> None:
            call = data.draw(
                st.sampled_from([c for c in self.calls if c.op != "credit"]), label="call"
            )
            acct = self.accounts[call.slot]
            before = self.read_balance(call.slot)
            with pytest.raises(IdempotencyConflict) as conflict:
                billing.credit(
                    acct.mandate,
                    Decimal(1),
                    user=acct.user,
                    idempotency_key=call.kwargs["idempotency_key"],
                )
            assert conflict.value.field == "operation"
            assert self.read_balance(call.slot) == before

        @rule(slot=st.sampled_from(SLOTS), limit=overdraft_limits)
        def set_overdraft_limit(self, slot: str, limit: int) -> None:
            acct = self.accounts[slot]
            short_before = max(0, -self.available(slot))
            got = billing.set_overdraft_limit(acct.mandate, dec(limit), user=acct.user)
            acct.overdraft = limit
            # An admin lowering the limit below what is used explains the gap.
            self.settle(slot, max(0, max(0, -self.available(slot)) - short_before))
            self.check_balance(slot, got)

        @rule(seconds=clock_moves, to_next_expiry=st.booleans())
        def let_time_pass(self, seconds: int, to_next_expiry: bool) -> None:
            """A number of seconds, or to the very instant the next hold expires
            (expiry is inclusive: a hold is overdue at its ``expires_at``)."""
            pending = [h.expires_at for h in self.holds if h.status is HoldStatus.PENDING]
            if to_next_expiry and pending:
                clock.set(min(pending))
            else:
                clock.advance(seconds)
            self.expire_overdue()

        def expire_overdue(self) -> list[HoldModel]:
            now = clock()
            expired = []
            for h in self.holds:
                if h.status is HoldStatus.PENDING and h.expires_at <= now:
                    h.status = HoldStatus.EXPIRED
                    expired.append(h)
            for slot in SLOTS:
                self.settle(slot)
            return expired

        # ------------------------------------------------------- invariants

        def check_balance(self, slot: str, got: Balance) -> None:
            acct = self.accounts[slot]
            expected = (
                dec(acct.balance),
                dec(self.pending(slot)),
                dec(self.available(slot)),
                dec(acct.credits),
                dec(acct.debits),
                dec(acct.overdraft),
            )
            assert (
                got.balance,
                got.pending,
                got.available,
                got.credits_posted,
                got.debits_posted,
                got.overdraft_limit,
            ) == expected, (slot, got)
            assert got.available == got.balance - got.pending + got.overdraft_limit
            assert (got.mandate, got.account) == (acct.mandate, acct.account)

        @invariant()
        def ledger_matches_model(self) -> None:
            for mandate in self.mandates:
                assert billing.verify(mandate) == []
            for slot in SLOTS:
                got = self.read_balance(slot)
                self.check_balance(slot, got)
                acct = self.accounts[slot]
                if acct.enforced:
                    # available >= 0, unless marked entries (or a lowered
                    # overdraft limit) explain how far it is below.
                    assert max(Decimal(0), -got.available) <= dec(acct.explained), (slot, got)

    return LedgerMachine


def _send(billing: Billing, records: list[aibill.UsageRecord], together: str) -> list[Any]:
    """``records`` as one batch, or as concurrent ``record_usage`` calls that
    group commit applies in one transaction, in this order."""
    if together == "batch":
        return billing.record_usage_batch(records)
    calls = [
        lambda r=r: billing.record_usage(
            r.mandate,
            amount=r.amount,
            user=r.user,
            already_happened=r.already_happened,
            idempotency_key=r.idempotency_key,
        )
        for r in records
    ]
    return [
        aibill.RecordOutcome(error=o)
        if isinstance(o, aibill.AibillError)
        else aibill.RecordOutcome(entry=o)
        for o in _one_batch(billing, calls)
    ]


@pytest.fixture
def ledger(db_url: str) -> Iterator[tuple[Billing, ManualClock]]:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    # Durability on power loss is not what this test is about: NORMAL spares
    # SQLite an fsync per commit (it is ignored on PostgreSQL).
    # Group commit on for both databases: a lone call is applied exactly as
    # without it, and calls sent together share a transaction.
    billing = aibill.connect(db_url, clock=clock, sqlite_synchronous="NORMAL", group_commit=True)
    yield billing, clock
    billing.close()


@pytest.mark.slow
# A passing run takes seconds; a failing one may spend minutes shrinking to a
# short sequence, which is worth waiting for.
@pytest.mark.timeout(900)
def test_ledger_follows_the_model(ledger: tuple[Billing, ManualClock], backend: str) -> None:
    billing, clock = ledger
    run_state_machine_as_test(make_machine(billing, clock), settings=SETTINGS[backend])
