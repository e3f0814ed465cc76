"""What every operation of one principal shares: the engine and its units of
work, the clock, who acts (and what they may do), the pricing, keys and access
services, the audit log, and the steps each operation of the ledger takes
first: read its mandate, name the account, and look up its idempotency key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.clock import Clock
from aibill.domain.model import POOL_ACCOUNT, BillingModel, Entry, Hold, check_name, wallet_account
from aibill.domain.principal import Principal
from aibill.domain.requests import refusal_from_dict
from aibill.service import audit
from aibill.service.access import Access
from aibill.service.authz import Authz
from aibill.service.codec import from_snapshot, snapshot
from aibill.service.keys import Keys
from aibill.service.pricing import Pricing
from aibill.store import access as access_store
from aibill.store import ledger, tx
from aibill.store.group import GroupCommit
from aibill.store.overlay import Prefetch

T = TypeVar("T")


class OpState:
    """What one operation knows about its mandate, read inside its transaction:
    the billing model and currency, the user's membership, and the first
    outcome stored under its idempotency key."""

    __slots__ = ("currency", "mandate", "member", "model", "stored", "user")

    def __init__(self, mandate: str, model: BillingModel, currency: str) -> None:
        self.mandate = mandate
        self.model = model
        self.currency = currency
        self.user: str | None = None
        self.member = False
        self.stored: tuple[str, dict[str, Any], str, dict[str, Any]] | None = None


class Context:
    """The ledger as one principal sees it; each capability of
    :class:`~aibill.service.billing.Billing` works through one."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        principal: Principal,
        *,
        pricing: Pricing,
        keys: Keys,
        access: Access,
        group: GroupCommit | None = None,
    ) -> None:
        self.engine = engine
        self.group = group
        """Shares commits between concurrent money-path writes (None: each commits alone)."""
        self.clock = clock
        self.pg = engine.dialect.name == "postgresql"
        self.principal = principal
        self.authz = Authz(principal, access)
        self.pricing = pricing.bound(self.authorize, self.audit_hook)
        self.keys = keys.bound(self.authorize, self.audit_hook)
        self.access = access.bound(self.authorize, self.audit_hook)

    def acting_as(self, principal: Principal) -> Context:
        """The same ledger acting for ``principal``."""
        return Context(
            self.engine,
            self.clock,
            principal,
            pricing=self.pricing,
            keys=self.keys,
            access=self.access,
            group=self.group,
        )

    # ---------------------------------------------------------- units of work

    def now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise e.InvalidRequest("the clock must return timezone-aware datetimes")
        return now

    def write(self, work: Callable[[Connection], T | tx.Deferred]) -> T:
        return tx.run(self.engine, work)

    def apply(
        self, work: Callable[[Connection], T | tx.Deferred], reads: Prefetch | None = None
    ) -> T:
        """A money-path write: committed with the writes in flight beside it
        (concepts.md rule 13) when group commit is on, else alone. ``reads``
        names the idempotency key and hold it reads first, so that a batch
        reads them for all its writes at once."""
        if self.group is None:
            return tx.run(self.engine, work)
        result: T = self.group.run(work, reads)
        return result

    def read(self, work: Callable[[Connection], T]) -> T:
        return tx.run(self.engine, work, read_only=True)

    # --------------------------------------------------------- who may do it

    def authorize(self, conn: Connection, mandate: str | None, need: Any) -> None:
        self.authz.authorize(conn, mandate, need)

    def audit(
        self,
        conn: Connection,
        mandate: str | None,
        action: str,
        *,
        target: str | None = None,
        before: Any = None,
        after: Any = None,
    ) -> None:
        """Record an administrative change under this principal's name."""
        audit.record(
            conn,
            mandate=mandate,
            actor=self.principal,
            action=action,
            at=self.now(),
            target=target,
            before=before,
            after=after,
        )

    def audit_hook(
        self,
        conn: Connection,
        mandate: str | None,
        action: str,
        target: str | None,
        before: Any,
        after: Any,
    ) -> None:
        self.audit(conn, mandate, action, target=target, before=before, after=after)

    # ------------------------------------------------ the first steps of each

    def op(
        self, conn: Connection, mandate: str, *, user: str | None = None, key: str | None = None
    ) -> OpState:
        """Read the mandate, the user's membership and the idempotency key in one query."""
        check_name(mandate, "mandate")
        if user is not None:
            check_name(user, "user")
        row = ledger.mandate(conn, mandate, user, key)
        if row is None:
            raise e.UnknownMandate(mandate)
        op = OpState(mandate, BillingModel(row.billing_model), row.currency)
        if user is not None:
            op.user, op.member = user, row.member is not None
        if key is not None and row.operation is not None:
            op.stored = (row.operation, row.request, row.outcome, row.result)
        return op

    def account_for(self, conn: Connection, op: OpState, user: str | None) -> str:
        """The account the mandate's billing model names for this user."""
        if user is not None:
            if op.user != user:  # membership not read with the mandate
                op = self.op(conn, op.mandate, user=user)
            if not op.member:
                # A mandate's principal learns only "not a member", whether or
                # not the name exists elsewhere (docs/access.md).
                if not self.authz.sees_all_users(conn) or access_store.user_exists(conn, user):
                    raise e.NotAMember(op.mandate, user)
                raise e.UnknownUser(user)
        if op.model is BillingModel.PREPAY_USER:
            if user is None:
                raise e.InvalidRequest(
                    f"Mandate {op.mandate!r} bills each user's wallet; name the user.",
                    field="user",
                )
            return wallet_account(user)
        return POOL_ACCOUNT

    def replay(
        self, op: OpState, key: str, operation: str, request: dict[str, Any]
    ) -> Hold | Entry | tx.Deferred | None:
        """The stored first outcome of ``key`` (read by :meth:`op`), or None if the key is new."""
        if op.stored is None:
            return None
        stored_operation, first, outcome, result = op.stored
        differs = rules.request_difference(stored_operation, first, operation, request)
        if differs is not None:
            raise e.IdempotencyConflict(key, differs.field, differs.first, differs.now)
        if outcome == "refused":
            return tx.Deferred(refusal_from_dict(result))
        return from_snapshot(result)

    def remember(
        self,
        conn: Connection,
        mandate: str,
        key: str,
        operation: str,
        request: dict[str, Any],
        result: Hold | Entry | e.Refused,
        now: datetime,
    ) -> None:
        """Store the first outcome of ``key``, in the operation's transaction."""
        ledger.insert_outcome(conn, outcome_row(mandate, key, operation, request, result, now))


def outcome_row(
    mandate: str,
    key: str,
    operation: str,
    request: dict[str, Any],
    result: Hold | Entry | e.Refused,
    now: datetime,
) -> dict[str, Any]:
    """The idempotency record of ``key``'s first outcome, as stored (and as
    :meth:`Context.replay` reads it back)."""
    refused = isinstance(result, e.Refused)
    return {
        "mandate_id": mandate,
        "idempotency_key": key,
        "operation": operation,
        "request": request,
        "outcome": "refused" if refused else "ok",
        "result": result.to_dict() if isinstance(result, e.Refused) else snapshot(result),
        "created_at": now,
    }


def expect(value: Hold | Entry | tx.Deferred, kind: type[T]) -> T:
    """A replayed outcome, of the kind the operation returns."""
    if not isinstance(value, kind):  # a key stored by another operation is caught earlier
        raise AssertionError(f"stored result is {type(value).__name__}, expected {kind.__name__}")
    return value
