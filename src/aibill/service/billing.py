"""The ledger's operations. Each public method is one unit of work.

Concurrency rests on one idea: a reservation or a debit is a *conditional*
single-row UPDATE of the account (``... WHERE available >= amount``). SQLite
runs one writer at a time (``BEGIN IMMEDIATE``); PostgreSQL re-checks the
condition after waiting for the row lock. Either way two holds can never
both spend the same money, whether they race in threads or in processes.
"""

from __future__ import annotations

import base64
import copy
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar, Unpack

from sqlalchemy import JSON, Connection, Engine, and_, func, or_, select, update

from aibill.catalog import CATALOG_CURRENCY, Catalog
from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.clock import Clock, system_clock
from aibill.domain.held import HeldCall
from aibill.domain.model import (
    MAX_DESCRIPTION_LENGTH,
    MAX_REASON_LENGTH,
    POOL_ACCOUNT,
    Balance,
    BillingModel,
    CheckResult,
    Drift,
    Entry,
    EntryKind,
    HistoryFilters,
    Hold,
    HoldStatus,
    Mandate,
    Member,
    Page,
    SpendingLimit,
    Tags,
    UsageFilters,
    check_key,
    check_name,
    wallet_account,
)
from aibill.domain.money import check_currency, from_micros, to_micros
from aibill.domain.permissions import check_role
from aibill.domain.prices import Charge, check_provider_cost
from aibill.domain.principal import SYSTEM, Principal, PrincipalKind, Scope
from aibill.domain.reports import GroupBy, UsageRow, UserBalance
from aibill.domain.text import check_line, check_prose, check_searchable, check_text
from aibill.domain.times import check_time
from aibill.domain.usage import Usage
from aibill.service import audit, reports
from aibill.service.access import Access, require_role, roles_of
from aibill.service.codec import entry_from_row, from_snapshot, hold_from_row, snapshot
from aibill.service.keys import Keys
from aibill.service.pricing import Pricing, check_provider_currency
from aibill.service.reports import CsvLines, TextOut
from aibill.store import fast, tx
from aibill.store.schema import (
    accounts,
    entries,
    holds,
    idempotency_keys,
    mandates,
    member_roles,
    memberships,
    spending_limits,
    users,
)
from aibill.store.types import UTCDateTime

T = TypeVar("T")

DEFAULT_HOLD_TTL_S = 900
MAX_HOLD_TTL_S = 7 * 24 * 3600
MAX_PAGE = 1000
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE = 500
MAX_ENTRY_ID = 64
MAX_HOLD_ID = 200
MAX_METADATA_INT = 10**18 - 1
MAX_FILTER_LENGTH = 200
CREDIT_REASONS = ("payment", "admin", "system", "refund", "adjustment")

_A = accounts.c
_H = holds.c


class _Ctx:
    """What one operation knows about its mandate, read inside its transaction."""

    __slots__ = ("currency", "mandate", "member", "model", "stored", "user")

    def __init__(self, mandate: str, model: BillingModel, currency: str) -> None:
        self.mandate = mandate
        self.model = model
        self.currency = currency
        self.user: str | None = None
        self.member = False
        self.stored: tuple[str, dict[str, Any], str, dict[str, Any]] | None = None


class Billing:
    """aibill's ledger: mandates, accounts, holds, captures, credits, history.

    Create it with :func:`aibill.connect`. It is safe to share between
    threads; a process that forks must create its own.
    """

    def __init__(
        self, engine: Engine, *, clock: Clock = system_clock, catalog: Catalog | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._pg = engine.dialect.name == "postgresql"
        self._principal: Principal = SYSTEM
        self.pricing = Pricing(
            engine, clock=clock, catalog=catalog, guard=self._authorize, auditor=self._audit_hook
        )
        self.keys = Keys(engine, clock=clock, guard=self._authorize, auditor=self._audit_hook)
        self.access = Access(engine, clock=clock, guard=self._authorize, auditor=self._audit_hook)
        """The provider registry, system admins, roles and rules."""
        """API keys: create (the secret shown once), list, revoke, authenticate."""
        """Exchange rates, markups and custom prices (:class:`~aibill.service.pricing.Pricing`)."""

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def principal(self) -> Principal:
        """Who this ledger acts for: the trusted system principal unless
        :meth:`as_principal` said otherwise."""
        return self._principal

    @property
    def clock(self) -> Clock:
        """The clock every operation reads the time from."""
        return self._clock

    def may(self, need: Scope | str, mandate: str | None = None) -> bool:
        """Whether this principal may do ``need`` operations (``billing:read``,
        ``billing:admin``, ...) on ``mandate`` (``None``: the platform's settings):
        the decision each such operation makes, asked without doing anything.
        For a user interface deciding what to offer; every operation still
        decides for itself."""
        try:
            scope = Scope(need)
        except ValueError:
            raise e.InvalidRequest(f"Unknown scope {need!r}.", field="need") from None
        try:
            self._read(lambda conn: self._authorize(conn, mandate, scope))
        except e.PermissionDenied:
            return False
        return True

    def authenticate(self, key: str) -> Billing:
        """This ledger acting for the holder of API ``key``; ``InvalidApiKey``
        (the same answer for every reason) if the key is refused."""
        return self.as_principal(self.keys.authenticate(key))

    def as_principal(self, principal: Principal) -> Billing:
        """This ledger acting for ``principal``: every operation then checks that
        the principal may do it (its mandate, its roles, its key's scopes), and
        administrative changes are audited under its name. Shares the engine."""
        if not isinstance(principal, Principal):
            raise e.InvalidRequest("principal must be an aibill Principal.", field="principal")
        view = copy.copy(self)
        view._principal = principal
        view.pricing = self.pricing.bound(view._authorize, view._audit_hook)
        view.keys = self.keys.bound(view._authorize, view._audit_hook)
        view.access = self.access.bound(view._authorize, view._audit_hook)
        return view

    def _authorize(self, conn: Connection, mandate: str | None, need: Scope) -> None:
        """Refuse unless the principal may do a ``need`` operation on ``mandate``
        (``None``: the platform). Fails closed; a principal of another mandate
        learns nothing about whether ``mandate`` exists."""
        if mandate is not None:
            check_name(mandate, "mandate")  # before any query sees it (concepts.md rule 12)
        p = self._principal
        if p.kind is PrincipalKind.SYSTEM:
            return
        if not _scope_allows(p.scopes, need):
            raise e.PermissionDenied(
                f"This key's scopes ({', '.join(sorted(p.scopes))}) do not allow {need.value}.",
                scope=need.value,
            )
        if p.kind is PrincipalKind.SYSADMIN:
            if p.user is not None and not _is_sysadmin(conn, p.user):
                raise e.PermissionDenied("This principal is no longer a system admin.")
            return
        if mandate is None or p.mandate != mandate or p.user is None:
            raise e.PermissionDenied(
                "Not allowed for this principal (or there is no such mandate)."
            )
        if need is Scope.ADMIN and not _has_role(conn, mandate, p.user, "admin"):
            raise e.PermissionDenied(
                f"{p.user!r} is not an admin of mandate {mandate!r}.", user=p.user
            )
        if not _is_member(conn, mandate, p.user):
            raise e.PermissionDenied(
                "Not allowed for this principal (or there is no such mandate)."
            )

    def _sees_all_users(self, conn: Connection) -> bool:
        """May this principal learn whether a user name exists outside its
        mandate? The system and system admins may; a mandate's key may not."""
        try:
            self._authorize(conn, None, Scope.READ)
        except e.PermissionDenied:
            return False
        return True

    def _spend_refusal(
        self,
        conn: Connection,
        ctx: _Ctx,
        user: str | None,
        provider: str | None,
        *,
        happened: bool = False,
        provider_ok: bool,
    ) -> e.SpendNotAllowed | None:
        """Why this call may not make the mandate pay, or None (concepts.md rule 10).

        Before the fact, the billed ``user`` needs a role that lets them spend
        when the call names no provider (with one, the provider rule has
        decided for them: ``provider_ok``). The principal's own user needs one
        always, even naming another user, unless the provider rule has just
        allowed that same user this call. The system and system admins are
        trusted. Usage that already happened is recorded whoever it names, but
        only by a principal that may spend.
        """
        if user is not None and provider is None and not happened:
            refusal = self._spender(conn, ctx.mandate, user, None)
            if refusal is not None:
                return refusal
        p = self._principal
        if p.kind is not PrincipalKind.USER or p.user is None:
            return None
        if user == p.user and provider is None and not happened:
            return None  # decided just above
        if provider is not None and provider_ok and user in (None, p.user):
            return None  # may use this provider: may pay for this call
        return self._spender(conn, ctx.mandate, p.user, provider)

    def _spender(
        self, conn: Connection, mandate: str, user: str, provider: str | None
    ) -> e.SpendNotAllowed | None:
        decision = self.access.spend_decision(conn, mandate, user, provider)
        if decision.allowed:
            return None
        return e.SpendNotAllowed(user, mandate, tuple(decision.roles), decision.reason)

    def _capture_refusal(self, conn: Connection, ctx: _Ctx, row: Any) -> e.SpendNotAllowed | None:
        """A principal captures a hold billed to its own user, or any hold of
        the mandate if it may spend (on the hold's provider, when it names one).
        So a viewer's key cannot post another user's hold, for any amount."""
        p = self._principal
        if p.kind is not PrincipalKind.USER or p.user is None or row.user_id == p.user:
            return None
        return self._spender(conn, ctx.mandate, p.user, row.provider)

    def _use_or_read(self) -> Scope:
        """``billing:read`` for a principal that may read, else ``billing:use``."""
        p = self._principal
        if p.kind is PrincipalKind.SYSTEM or _scope_allows(p.scopes, Scope.READ):
            return Scope.READ
        return Scope.USE

    def _authorize_balance(self, conn: Connection, mandate: str, user: str | None) -> None:
        """``billing:read`` reads any account's balance. ``billing:use`` reads
        the balance of the account it bills: its own user's (or the pool), or
        any member's when it may spend, as a hold naming that user would."""
        p = self._principal
        need = self._use_or_read()
        self._authorize(conn, mandate, need)
        other = p.user is not None and user not in (None, p.user)
        if need is Scope.USE and p.kind is PrincipalKind.USER and other:
            assert p.user is not None
            refusal = self._spender(conn, mandate, p.user, None)
            if refusal is not None:
                raise refusal

    def _audit(
        self,
        conn: Connection,
        mandate: str | None,
        action: str,
        *,
        target: str | None = None,
        before: Any = None,
        after: Any = None,
    ) -> None:
        audit.record(
            conn,
            mandate=mandate,
            actor=self._principal,
            action=action,
            at=self._now(),
            target=target,
            before=before,
            after=after,
        )

    def _audit_hook(
        self,
        conn: Connection,
        mandate: str | None,
        action: str,
        target: str | None,
        before: Any,
        after: Any,
    ) -> None:
        self._audit(conn, mandate, action, target=target, before=before, after=after)

    def audit_log(
        self, mandate: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> audit.AuditPage:
        """A mandate's audit log, newest first, for its admins; ``None``: the
        platform's, for system admins."""

        def work(conn: Connection) -> audit.AuditPage:
            self._authorize(conn, mandate, Scope.ADMIN)
            return audit.read(conn, mandate, limit=limit, cursor=cursor)

        return self._read(work)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Billing:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise e.InvalidRequest("the clock must return timezone-aware datetimes")
        return now

    def _write(self, work: Callable[[Connection], T | tx.Deferred]) -> T:
        return tx.run(self._engine, work)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return tx.run(self._engine, work, read_only=True)

    def _insert(self, conn: Connection, table: Any, **values: Any) -> None:
        fast = _FAST_INSERTS.get(table.name)
        if fast is not None:
            fast.run(conn, values)
        else:
            conn.execute(table.insert(), values)

    def _ctx(
        self, conn: Connection, mandate: str, *, user: str | None = None, key: str | None = None
    ) -> _Ctx:
        """Read the mandate, the user's membership and the idempotency key in one query."""
        check_name(mandate, "mandate")
        if user is not None:
            check_name(user, "user")
        stmt = _CTX_QUERIES[(user is not None, key is not None)]
        row = stmt.first(conn, {"mandate": mandate, "user": user, "key": key})
        if row is None:
            raise e.UnknownMandate(mandate)
        ctx = _Ctx(mandate, BillingModel(row.billing_model), row.currency)
        if user is not None:
            ctx.user, ctx.member = user, row.member is not None
        if key is not None and row.operation is not None:
            ctx.stored = (row.operation, row.request, row.outcome, row.result)
        return ctx

    def _account_for(self, conn: Connection, ctx: _Ctx, user: str | None) -> str:
        """The account the mandate's billing model names for this user."""
        if user is not None:
            if ctx.user != user:  # membership not read with the mandate
                ctx = self._ctx(conn, ctx.mandate, user=user)
            if not ctx.member:
                # A mandate's principal learns only "not a member", whether or
                # not the name exists elsewhere (docs/access.md).
                if (
                    not self._sees_all_users(conn)
                    or conn.execute(select(users.c.user_id).where(users.c.user_id == user)).first()
                ):
                    raise e.NotAMember(ctx.mandate, user)
                raise e.UnknownUser(user)
        if ctx.model is BillingModel.PREPAY_USER:
            if user is None:
                raise e.InvalidRequest(
                    f"Mandate {ctx.mandate!r} bills each user's wallet; name the user.",
                    field="user",
                )
            return wallet_account(user)
        return POOL_ACCOUNT

    def _sweep(self, conn: Connection, mandate: str, account: str, now: datetime) -> int:
        """Expire the account's overdue holds, freeing their reservations; returns
        how many micro-units were freed."""
        rows = conn.execute(
            update(holds)
            .where(
                _H.mandate_id == mandate,
                _H.account_id == account,
                _H.status == HoldStatus.PENDING.value,
                _H.expires_at <= now,
            )
            .values(status=HoldStatus.EXPIRED.value, resolved_at=now)
            .returning(_H.amount_micros)
        ).all()
        freed: int = sum(r.amount_micros for r in rows)
        if freed:
            conn.execute(
                update(accounts)
                .where(_A.mandate_id == mandate, _A.account_id == account)
                .values(debits_pending=_A.debits_pending - freed)
            )
        return freed

    def _replay(
        self, ctx: _Ctx, key: str, operation: str, request: dict[str, Any]
    ) -> Hold | Entry | tx.Deferred | None:
        """The stored first outcome of ``key`` (read by ``_ctx``), or None if the key is new."""
        if ctx.stored is None:
            return None
        stored_operation, first, outcome, result = ctx.stored
        differs = rules.request_difference(stored_operation, first, operation, request)
        if differs is not None:
            raise e.IdempotencyConflict(key, differs.field, differs.first, differs.now)
        if outcome == "refused":
            return tx.Deferred(_refusal_from_dict(result))
        return from_snapshot(result)

    def _remember(
        self,
        conn: Connection,
        mandate: str,
        key: str,
        operation: str,
        request: dict[str, Any],
        result: Hold | Entry | e.Refused,
        now: datetime,
    ) -> None:
        refused = isinstance(result, e.Refused)
        self._insert(
            conn,
            idempotency_keys,
            mandate_id=mandate,
            idempotency_key=key,
            operation=operation,
            request=request,
            outcome="refused" if refused else "ok",
            result=result.to_dict() if isinstance(result, e.Refused) else snapshot(result),
            created_at=now,
        )

    # ------------------------------------------------------------ tenants, users

    def create_mandate(
        self,
        mandate: str,
        *,
        billing_model: str | BillingModel = BillingModel.PREPAY_MANDATE,
        currency: str = "CHF",
    ) -> Mandate:
        """Create a mandate (idempotent: the same call again returns it)."""
        check_name(mandate, "mandate")
        model = _billing_model(billing_model)
        check_currency(currency)

        def work(conn: Connection) -> Mandate:
            self._authorize(conn, None, Scope.ADMIN)
            row = conn.execute(select(mandates).where(mandates.c.mandate_id == mandate)).first()
            if row is not None:
                for name, stored, asked in (
                    ("billing_model", row.billing_model, model.value),
                    ("currency", row.currency, currency),
                ):
                    if stored != asked:
                        raise e.AlreadyExists(
                            f"Mandate {mandate!r} exists with {name}={stored!r}, not {asked!r}.",
                            mandate=mandate,
                            field=name,
                        )
                return Mandate(mandate, model, currency, row.created_at)
            now = self._now()
            self._insert(
                conn,
                mandates,
                mandate_id=mandate,
                billing_model=model.value,
                currency=currency,
                created_at=now,
            )
            if model is not BillingModel.PREPAY_USER:
                self._insert(
                    conn,
                    accounts,
                    mandate_id=mandate,
                    account_id=POOL_ACCOUNT,
                    currency=currency,
                    created_at=now,
                )
            created = Mandate(mandate, model, currency, now)
            self._audit(conn, mandate, "mandate.create", target=mandate, after=created)
            return created

        return self._write(work)

    def get_mandate(self, mandate: str) -> Mandate:
        def work(conn: Connection) -> Mandate:
            self._authorize(conn, mandate, Scope.READ)
            row = conn.execute(select(mandates).where(mandates.c.mandate_id == mandate)).first()
            if row is None:
                raise e.UnknownMandate(mandate)
            return Mandate(mandate, BillingModel(row.billing_model), row.currency, row.created_at)

        return self._read(work)

    def mandates(self) -> list[Mandate]:
        """The mandates this principal may see, by name: every mandate for the
        system and a system admin, its own for a mandate's key."""

        def work(conn: Connection) -> list[Mandate]:
            p = self._principal
            query = select(mandates).order_by(mandates.c.mandate_id)
            if p.kind not in (PrincipalKind.SYSTEM, PrincipalKind.SYSADMIN):
                if p.mandate is None:
                    return []
                self._authorize(conn, p.mandate, Scope.READ)
                query = query.where(mandates.c.mandate_id == p.mandate)
            else:
                self._authorize(conn, None, Scope.READ)
            return [
                Mandate(r.mandate_id, BillingModel(r.billing_model), r.currency, r.created_at)
                for r in conn.execute(query)
            ]

        return self._read(work)

    def set_billing_model(self, mandate: str, billing_model: str | BillingModel) -> Mandate:
        """Change how ``mandate`` is billed (idempotent: the same model again changes
        nothing). Refused with ``holds_in_flight`` while any hold is pending,
        because a pending hold reserves money on an account the new model would
        no longer name. Money stays where it is: the pool keeps its balance when
        wallets take over, and the wallets keep theirs when the pool does; an
        admin moves it with credits and adjustments. Audited."""
        check_name(mandate, "mandate")
        model = _billing_model(billing_model)

        def work(conn: Connection) -> Mandate:
            self._authorize(conn, mandate, Scope.ADMIN)
            row = conn.execute(select(mandates).where(mandates.c.mandate_id == mandate)).first()
            if row is None:
                raise e.UnknownMandate(mandate)
            before = Mandate(mandate, BillingModel(row.billing_model), row.currency, row.created_at)
            if before.billing_model is model:
                return before
            now = self._now()
            self._sweep_mandate(conn, mandate, now)
            self._refuse_holds_in_flight(conn, mandate)
            conn.execute(
                update(mandates)
                .where(mandates.c.mandate_id == mandate)
                .values(billing_model=model.value)
            )
            self._open_accounts_of(conn, mandate, model, row.currency, now)
            after = replace(before, billing_model=model)
            self._audit(
                conn, mandate, "mandate.billing_model", target=mandate, before=before, after=after
            )
            return after

        return self._write(work)

    def _refuse_holds_in_flight(self, conn: Connection, mandate: str) -> None:
        """Raise ``HoldsInFlight`` while any hold of ``mandate`` is pending."""
        pending = conn.execute(
            select(func.count())
            .select_from(holds)
            .where(_H.mandate_id == mandate, _H.status == HoldStatus.PENDING.value)
        ).scalar_one()
        if pending:
            raise e.HoldsInFlight(
                f"Mandate {mandate!r} has {pending} hold(s) in flight; capture or release "
                "them (or let them expire) before changing its billing model.",
                mandate=mandate,
                holds=pending,
            )

    def _open_accounts_of(
        self, conn: Connection, mandate: str, model: BillingModel, currency: str, now: datetime
    ) -> None:
        """Open the accounts ``model`` names that ``mandate`` does not have yet:
        each member's wallet, or the pool."""
        have = {
            r.account_id
            for r in conn.execute(select(_A.account_id).where(_A.mandate_id == mandate))
        }
        if model is BillingModel.PREPAY_USER:
            members = conn.execute(
                select(memberships.c.user_id)
                .where(memberships.c.mandate_id == mandate)
                .order_by(memberships.c.user_id)
            ).scalars()
            for member in members:
                if wallet_account(member) not in have:
                    self._insert(
                        conn,
                        accounts,
                        mandate_id=mandate,
                        account_id=wallet_account(member),
                        user_id=member,
                        currency=currency,
                        created_at=now,
                    )
        elif POOL_ACCOUNT not in have:
            self._insert(
                conn,
                accounts,
                mandate_id=mandate,
                account_id=POOL_ACCOUNT,
                currency=currency,
                created_at=now,
            )

    def _sweep_mandate(self, conn: Connection, mandate: str, now: datetime) -> None:
        overdue = (
            conn.execute(
                select(_H.account_id)
                .where(
                    _H.mandate_id == mandate,
                    _H.status == HoldStatus.PENDING.value,
                    _H.expires_at <= now,
                )
                .distinct()
            )
            .scalars()
            .all()
        )
        for account in sorted(overdue):
            self._sweep(conn, mandate, account, now)

    def members(self, mandate: str) -> list[Member]:
        """The members of ``mandate`` with their roles, by user name."""

        def work(conn: Connection) -> list[Member]:
            self._authorize(conn, mandate, Scope.READ)
            self._ctx(conn, mandate)
            roles: dict[str, list[str]] = {}
            for r in conn.execute(
                select(member_roles.c.user_id, member_roles.c.role)
                .where(member_roles.c.mandate_id == mandate)
                .order_by(member_roles.c.role)
            ):
                roles.setdefault(r.user_id, []).append(r.role)
            return [
                Member(r.user_id, tuple(roles.get(r.user_id, ())), r.created_at)
                for r in conn.execute(
                    select(memberships.c.user_id, memberships.c.created_at)
                    .where(memberships.c.mandate_id == mandate)
                    .order_by(memberships.c.user_id)
                )
            ]

        return self._read(work)

    def users(self) -> list[str]:
        """Every registered user identity (platform-wide: the system or a system admin)."""

        def work(conn: Connection) -> list[str]:
            self._authorize(conn, None, Scope.READ)
            return list(conn.execute(select(users.c.user_id).order_by(users.c.user_id)).scalars())

        return self._read(work)

    def accounts(self, mandate: str) -> list[Balance]:
        """Every account of ``mandate`` (the pool, and the users' wallets), by
        account name. Overdue holds are expired first, as :meth:`balance` does."""

        def overdue(conn: Connection) -> bool:
            self._authorize(conn, mandate, Scope.READ)
            self._ctx(conn, mandate)
            return (
                conn.execute(
                    select(_H.hold_id)
                    .where(
                        _H.mandate_id == mandate,
                        _H.status == HoldStatus.PENDING.value,
                        _H.expires_at <= self._now(),
                    )
                    .limit(1)
                ).first()
                is not None
            )

        def sweep(conn: Connection) -> None:
            self._authorize(conn, mandate, Scope.READ)
            self._sweep_mandate(conn, mandate, self._now())

        def work(conn: Connection) -> list[Balance]:
            self._authorize(conn, mandate, Scope.READ)
            ctx = self._ctx(conn, mandate)
            names = (
                conn.execute(
                    select(_A.account_id).where(_A.mandate_id == mandate).order_by(_A.account_id)
                )
                .scalars()
                .all()
            )
            return [self._balance(conn, ctx, name) for name in names]

        if self._read(overdue):
            self._write(sweep)
        return self._read(work)

    def open_holds(self, mandate: str, *, limit: int = 100) -> list[Hold]:
        """The holds of ``mandate`` still pending (in flight), newest first; at
        most ``limit`` (1 to 1,000). A hold past its expiry that no sweep has
        seen yet is not listed: it no longer reserves anything."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise e.InvalidRequest(f"limit must be from 1 to {MAX_PAGE}.", field="limit")

        def work(conn: Connection) -> list[Hold]:
            self._authorize(conn, mandate, Scope.READ)
            ctx = self._ctx(conn, mandate)
            rows = conn.execute(
                select(holds)
                .where(
                    _H.mandate_id == mandate,
                    _H.status == HoldStatus.PENDING.value,
                    _H.expires_at > self._now(),
                )
                .order_by(_H.created_at.desc(), _H.hold_id.desc())
                .limit(limit)
            ).all()
            return [hold_from_row(r, ctx.currency) for r in rows]

        return self._read(work)

    def add_user(self, user: str) -> str:
        """Register a user identity (idempotent)."""
        check_name(user, "user")

        def work(conn: Connection) -> str:
            # A mandate's admin may register identities (to make them members).
            self._authorize(conn, self._principal.mandate, Scope.ADMIN)
            if conn.execute(select(users.c.user_id).where(users.c.user_id == user)).first() is None:
                self._insert(conn, users, user_id=user, created_at=self._now())
                self._audit(conn, None, "user.add", target=user)
            return user

        return self._write(work)

    def add_member(self, mandate: str, user: str, *, role: str | None = "member") -> list[str]:
        """Make ``user`` a member of ``mandate`` with ``role`` (``member`` unless
        said otherwise; ``None``: no role yet); a per-user mandate opens their wallet.
        A user name not registered yet is registered (as :meth:`add_user` does).

        Adding someone who is already a member gives them ``role`` if they lack
        it (audited as a ``role.grant``, as :meth:`Access.grant_role` does), and
        changes nothing otherwise. Returns the member's roles afterwards."""
        check_name(mandate, "mandate")
        check_name(user, "user")
        if role is not None:
            check_role(role)

        def work(conn: Connection) -> list[str]:
            self._authorize(conn, mandate, Scope.ADMIN)
            ctx = self._ctx(conn, mandate)
            if role is not None:
                require_role(conn, mandate, role)
            # Users are bare identities: a name no one registered yet is
            # registered here, so the answer never tells a mandate's admin
            # whether it existed (recorded in the platform's audit log only).
            if conn.execute(select(users.c.user_id).where(users.c.user_id == user)).first() is None:
                self._insert(conn, users, user_id=user, created_at=self._now())
                self._audit(conn, None, "user.add", target=user)
            exists = conn.execute(
                select(memberships.c.user_id).where(
                    memberships.c.mandate_id == mandate, memberships.c.user_id == user
                )
            ).first()
            if exists is not None:
                return self._grant_on_add(conn, mandate, user, role)
            now = self._now()
            self._insert(conn, memberships, mandate_id=mandate, user_id=user, created_at=now)
            if role is not None:
                self._insert(
                    conn, member_roles, mandate_id=mandate, user_id=user, role=role, created_at=now
                )
            self._audit(conn, mandate, "member.add", target=user, after={"role": role})
            if ctx.model is BillingModel.PREPAY_USER:
                self._insert(
                    conn,
                    accounts,
                    mandate_id=mandate,
                    account_id=wallet_account(user),
                    user_id=user,
                    currency=ctx.currency,
                    created_at=now,
                )
            return [role] if role is not None else []

        return self._write(work)

    def _grant_on_add(
        self, conn: Connection, mandate: str, user: str, role: str | None
    ) -> list[str]:
        """``add_member`` of someone already a member: the role they lack is granted."""
        held = roles_of(conn, mandate, user)
        if role is None or role in held:
            return held
        self._insert(
            conn, member_roles, mandate_id=mandate, user_id=user, role=role, created_at=self._now()
        )
        after = sorted([*held, role])
        self._audit(
            conn, mandate, "role.grant", target=user, before={"roles": held}, after={"roles": after}
        )
        return after

    def set_overdraft_limit(
        self, mandate: str, amount: Decimal, *, user: str | None = None
    ) -> Balance:
        """How far the account may go below zero for holds and usage (0 by default)."""
        limit = to_micros(amount, field="overdraft_limit", allow_zero=True)

        def work(conn: Connection) -> Balance:
            self._authorize(conn, mandate, Scope.ADMIN)
            ctx = self._ctx(conn, mandate, user=user)
            account = self._account_for(conn, ctx, user)
            before = self._balance(conn, ctx, account).overdraft_limit
            conn.execute(
                update(accounts)
                .where(_A.mandate_id == mandate, _A.account_id == account)
                .values(overdraft_limit=limit)
            )
            self._audit(
                conn,
                mandate,
                "account.overdraft_limit",
                target=account,
                before={"overdraft_limit": before},
                after={"overdraft_limit": from_micros(limit)},
            )
            self._sweep(conn, mandate, account, self._now())
            return self._balance(conn, ctx, account)

        return self._write(work)

    # ------------------------------------------------------------------- money

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
        micros = to_micros(amount)
        key = check_key(idempotency_key)
        request = _credit_request(micros, user, reason, description, corrects)

        def work(conn: Connection) -> Entry | tx.Deferred:
            self._authorize(conn, mandate, Scope.ADMIN)
            ctx = self._ctx(conn, mandate, user=user, key=key)
            replay = self._replay(ctx, key, "credit", request)
            if replay is not None:
                return _expect(replay, Entry)
            account = self._account_for(conn, ctx, user)
            if corrects is not None:
                self._require_entry(conn, mandate, corrects)
            now = self._now()
            row = conn.execute(
                update(accounts)
                .where(_A.mandate_id == mandate, _A.account_id == account)
                .values(credits_posted=_A.credits_posted + micros)
                .returning(_A.credits_posted, _A.debits_posted)
            ).one()
            entry = self._post(
                conn,
                ctx,
                _Posting(
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
            self._remember(conn, mandate, key, "credit", request, entry, now)
            self._audit(
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

        return self._write(work)

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
        key = check_key(idempotency_key)
        _check_ttl(ttl_s)
        meta = _check_metadata(metadata)
        tags = Tags(provider, model, feature_code, feature_instance, workflow_id)
        asked = _Asked.of(amount, tags, input_tokens, max_output_tokens)
        request = {
            **asked.request,
            **tags.as_request(),
            "user": user,
            "ttl_s": ttl_s,
            "metadata": meta,
        }

        def work(conn: Connection) -> Hold | tx.Deferred:
            self._authorize(conn, mandate, Scope.USE)
            ctx = self._ctx(conn, mandate, user=user, key=key)
            replay = self._replay(ctx, key, "hold", request)
            if replay is not None:
                return replay if isinstance(replay, tx.Deferred) else _expect(replay, Hold)
            account = self._account_for(conn, ctx, user)
            now = self._now()
            taken = self._take_hold(conn, ctx, account, user, tags, asked, now)
            if isinstance(taken, e.Refused):
                self._remember(conn, mandate, key, "hold", request, taken, now)
                return tx.Deferred(taken)
            micros, charge = taken
            hold = _new_hold(ctx, account, user, micros, charge, tags, meta, now, ttl_s)
            self._insert(conn, holds, **_hold_row(hold, micros))
            self._remember(conn, mandate, key, "hold", request, hold, now)
            return hold

        return HeldCall.of(self, self._write(work))

    def _take_hold(
        self,
        conn: Connection,
        ctx: _Ctx,
        account: str,
        user: str | None,
        tags: Tags,
        asked: _Asked,
        now: datetime,
    ) -> e.Refused | tuple[int, Charge | None]:
        """Decide a hold and reserve its amount: the refusal to store, or the
        micros reserved and the estimate they came from. Who may use the
        provider, and who may spend, is decided before anything is priced or
        moved; the reservation itself is the atomic check of rule 2."""
        refusal: e.Refused | None = self._provider_refusal(conn, ctx, user, tags.provider)
        if refusal is None:
            refusal = self._spend_refusal(conn, ctx, user, tags.provider, provider_ok=True)
        if refusal is not None:
            return refusal
        charge = asked.estimate(self, conn, ctx, tags, now)
        micros = charge.amount_micros if charge else asked.micros
        limit = self._limits(conn, ctx, user, tags.feature_instance, micros, now)
        if limit is not None:
            return limit
        enforce = ctx.model.enforced
        if self._take(conn, ctx, account, micros, now, pending=True, enforce=enforce) is None:
            return self._insufficient(conn, ctx, account, micros)
        return micros, charge

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
        tags = Tags(provider, model)
        asked = _Asked.of(None, tags, input_tokens, max_output_tokens)
        when = _aware(at, "at") if at is not None else None

        def work(conn: Connection) -> Charge:
            self._authorize(conn, mandate, Scope.USE)
            ctx = self._ctx(conn, mandate)
            charge = asked.estimate(self, conn, ctx, tags, when or self._now())
            assert charge is not None  # the priced form always prices
            return charge

        return self._read(work)

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
        tags = Tags(provider=provider, model=model, feature_instance=feature_instance)
        asked = _Asked.for_check(estimate, tags, input_tokens, max_output_tokens)

        def work(conn: Connection) -> CheckResult:
            self._authorize(conn, mandate, Scope.USE)
            ctx = self._ctx(conn, mandate, user=user)
            account = self._account_for(conn, ctx, user)
            balance = self._balance(conn, ctx, account)
            now = self._now()
            charge = asked.estimate(self, conn, ctx, tags, now)
            micros = charge.amount_micros if charge else asked.micros
            reason = "ok"
            forbidden: e.Refused | None = self._provider_refusal(conn, ctx, user, provider)
            if forbidden is None:
                forbidden = self._spend_refusal(conn, ctx, user, provider, provider_ok=True)
            limit = self._limits(conn, ctx, user, feature_instance, micros, now, lock=False)
            available = self._available_now(conn, ctx, account, now)
            if forbidden is not None:
                reason = forbidden.code
            elif limit is not None:
                reason = limit.code
            elif not rules.fits(available, micros, enforced=ctx.model.enforced):
                reason = e.InsufficientBalance.code
            return CheckResult(
                allowed=reason == "ok",
                reason=reason,
                balance=balance.balance,
                available=from_micros(available),
                billing_model=ctx.model,
                account=account,
                currency=ctx.currency,
                estimate=from_micros(micros),
            )

        return self._read(work)

    def _provider_refusal(
        self, conn: Connection, ctx: _Ctx, user: str | None, provider: str | None
    ) -> e.ProviderNotAllowed | None:
        """Why the call may not use ``provider``, or None when it may (concepts.md
        rule 10). The user asked about is ``user``, else the principal's own;
        with neither there is nobody to allow, and the answer is no."""
        if provider is None:
            return None
        who = user if user is not None else self._principal.user
        if who is None:
            return e.ProviderNotAllowed(
                provider, None, (), "the call names no user whose permissions to check"
            )
        decision = self.access.provider_decision(conn, ctx.mandate, who, provider)
        if decision.allowed:
            return None
        return e.ProviderNotAllowed(provider, who, tuple(decision.roles), decision.reason)

    def _available_now(self, conn: Connection, ctx: _Ctx, account: str, now: datetime) -> int:
        """Available balance, not counting holds that are past their time."""
        row = _READ_COUNTERS.one(conn, {"mandate": ctx.mandate, "account": account})
        overdue = conn.execute(
            select(func.coalesce(func.sum(_H.amount_micros), 0)).where(
                _H.mandate_id == ctx.mandate,
                _H.account_id == account,
                _H.status == HoldStatus.PENDING.value,
                _H.expires_at <= now,
            )
        ).scalar_one()
        return rules.account_available(row, overdue=int(overdue))

    def _limits(
        self,
        conn: Connection,
        ctx: _Ctx,
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
        stmt = _LIMITS_FOR_UPDATE if (lock and self._pg) else _LIMITS
        rows = stmt.run(
            conn, {"mandate": ctx.mandate, "user": user, "feature_instance": feature_instance}
        )
        for row in rows:
            start = rules.period_start(now, row.period)
            spent = self._spent(conn, ctx.mandate, row.scope, row.subject, start, now)
            if rules.limit_passed(row.amount_micros, spent, micros):
                left = rules.limit_left(row.amount_micros, spent)
                return e.LimitExceeded(
                    f"The {row.period}ly limit of {from_micros(row.amount_micros)} {ctx.currency}"
                    f" for {row.scope.replace('_', ' ')} {row.subject!r} would be passed:"
                    f" {from_micros(left)} {ctx.currency} left,"
                    f" {from_micros(micros)} {ctx.currency} asked.",
                    scope=row.scope,
                    subject=row.subject,
                    period=row.period,
                    limit=str(from_micros(row.amount_micros)),
                    spent=str(from_micros(spent)),
                    left=str(from_micros(left)),
                    required=str(from_micros(micros)),
                    currency=ctx.currency,
                )
        return None

    def _spent(
        self,
        conn: Connection,
        mandate: str,
        scope: str,
        subject: str,
        start: datetime,
        now: datetime,
    ) -> int:
        column_e = entries.c.user_id if scope == "user" else entries.c.feature_instance
        column_h = _H.user_id if scope == "user" else _H.feature_instance
        posted = conn.execute(
            select(func.coalesce(func.sum(entries.c.amount_micros), 0)).where(
                entries.c.mandate_id == mandate,
                column_e == subject,
                entries.c.kind == EntryKind.DEBIT.value,
                entries.c.posted_at >= start,
            )
        ).scalar_one()
        # Every open hold counts, whenever it was placed: if captured, it posts now.
        held = conn.execute(
            select(func.coalesce(func.sum(_H.amount_micros), 0)).where(
                _H.mandate_id == mandate,
                _H.status == HoldStatus.PENDING.value,
                column_h == subject,
                _H.expires_at > now,
            )
        ).scalar_one()
        return int(posted) + int(held)

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
        scope, subject = _limit_subject(user, feature_instance)
        if period not in PERIODS:
            raise e.InvalidRequest(
                f"period must be one of {', '.join(PERIODS)}, not {period!r}.", field="period"
            )
        micros = None if amount is None else to_micros(amount, allow_zero=True)

        def work(conn: Connection) -> SpendingLimit | None:
            self._authorize(conn, mandate, Scope.ADMIN)
            ctx = self._ctx(conn, mandate)
            if scope == "user":
                self._account_for(conn, ctx, subject)  # the user must be a member
            key = {
                "mandate_id": mandate,
                "scope": scope,
                "subject": subject,
                "period": period,
            }
            where = [spending_limits.c[k] == v for k, v in key.items()]
            old = conn.execute(select(spending_limits.c.amount_micros).where(*where)).scalar()
            if old == micros:  # unchanged (or nothing to remove): nothing to record
                return (
                    None
                    if micros is None
                    else SpendingLimit(
                        mandate, scope, subject, period, from_micros(micros), ctx.currency
                    )
                )
            conn.execute(spending_limits.delete().where(*where))
            target = f"{scope}:{subject}/{period}"
            before = None if old is None else {"amount": from_micros(old)}
            if micros is None:
                self._audit(conn, mandate, "limit.remove", target=target, before=before)
                return None
            now = self._now()
            conn.execute(
                spending_limits.insert().values(**key, amount_micros=micros, updated_at=now)
            )
            self._audit(
                conn,
                mandate,
                "limit.set",
                target=target,
                before=before,
                after={"amount": from_micros(micros)},
            )
            return SpendingLimit(mandate, scope, subject, period, from_micros(micros), ctx.currency)

        return self._write(work)

    def spending_limits(self, mandate: str) -> list[SpendingLimit]:
        def work(conn: Connection) -> list[SpendingLimit]:
            self._authorize(conn, mandate, Scope.READ)
            ctx = self._ctx(conn, mandate)
            c = spending_limits.c
            rows = conn.execute(
                select(spending_limits)
                .where(c.mandate_id == mandate)
                .order_by(c.scope, c.subject, c.period)
            ).all()
            return [
                SpendingLimit(
                    mandate,
                    r.scope,
                    r.subject,
                    r.period,
                    from_micros(r.amount_micros),
                    ctx.currency,
                )
                for r in rows
            ]

        return self._read(work)

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
        if (amount is None) == (usage is None):
            raise e.InvalidRequest("Give either amount= or usage=.", field="amount")
        micros = to_micros(amount) if amount is not None else None
        if usage is not None and not isinstance(usage, Usage):
            raise e.InvalidRequest("usage must be an aibill.Usage.", field="usage")
        mandate = _mandate_of(hold_id)
        key = check_key(idempotency_key) if idempotency_key is not None else None
        _check_description(description)
        request = {
            "hold_id": hold_id,
            "amount": None if micros is None else str(from_micros(micros)),
            "usage": None if usage is None else _usage_json(usage),
            "description": description,
        }

        def work(conn: Connection) -> Entry:
            self._authorize(conn, mandate, Scope.USE)
            ctx = self._ctx(conn, mandate, key=key)
            row = self._lock_hold(conn, mandate, hold_id)
            refusal = self._capture_refusal(conn, ctx, row)
            if refusal is not None:  # raised, not stored: a retry once allowed still posts
                raise refusal
            if key is not None:
                replay = self._replay(ctx, key, "capture", request)
                if replay is not None:
                    return _expect(replay, Entry)
            now = self._now()
            status = HoldStatus(row.status)
            if status is HoldStatus.CAPTURED:
                entry = self._recapture(conn, ctx, row, micros, usage)
            elif status is HoldStatus.RELEASED:
                raise e.HoldAlreadyReleased(
                    f"Hold {hold_id!r} was released; it cannot be captured.", hold_id=hold_id
                )
            else:
                charge = self._capture_charge(conn, ctx, row, usage, now)
                posted = charge.amount_micros if charge else micros
                assert posted is not None
                entry = self._capture(conn, ctx, row, posted, now, description, charge)
            if key is not None:
                self._remember(conn, mandate, key, "capture", request, entry, now)
            return entry

        return self._write(work)

    def _recapture(
        self, conn: Connection, ctx: _Ctx, row: Any, micros: int | None, usage: Usage | None
    ) -> Entry:
        """A captured hold captured again: the first entry as a replay when the
        capture is the same, else ``HoldAlreadyCaptured``."""
        first = self._entry_by_id(conn, ctx, row.entry_id)
        if not _same_capture(first, micros, usage):
            raise e.HoldAlreadyCaptured(
                f"Hold {row.hold_id!r} was already captured for {first.amount} {ctx.currency}.",
                hold_id=row.hold_id,
                captured=first.amount,
                entry_id=first.id,
            )
        return first.as_replay()

    def _capture_charge(
        self, conn: Connection, ctx: _Ctx, row: Any, usage: Usage | None, now: datetime
    ) -> Charge | None:
        """The price of ``usage`` on the hold's provider and model at ``now``
        (None when the capture gives an amount)."""
        if usage is None:
            return None
        if row.provider is None or row.model is None:
            raise e.InvalidRequest(
                f"Hold {row.hold_id!r} names no provider and model to price; "
                "capture it with amount=.",
                field="usage",
            )
        return self.pricing.quote(
            conn,
            mandate=ctx.mandate,
            currency=ctx.currency,
            provider=row.provider,
            model=row.model,
            usage=usage,
            at=now,
        )

    def _capture(
        self,
        conn: Connection,
        ctx: _Ctx,
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
        entry_id = _entry_id()
        acct = _POST_CAPTURE.one(
            conn,
            {
                "mandate": ctx.mandate,
                "account": row.account_id,
                "micros": posting.debit,
                "freed": posting.freed,
            },
        )
        _MARK_CAPTURED.run(
            conn,
            {
                "mandate": ctx.mandate,
                "hold": row.hold_id,
                "now": now,
                "micros": micros,
                "entry": entry_id,
            },
        )
        # A shortfall is measured on the part drawn from the available balance.
        shortfall = self._settled_shortfall(conn, ctx, row.account_id, acct, posting.drawn, now)
        tags = Tags(
            row.provider, row.model, row.feature_code, row.feature_instance, row.workflow_id
        )
        return self._post(
            conn,
            ctx,
            _Posting(
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

    def release(self, hold_id: str, *, idempotency_key: str | None = None) -> Hold:
        """Free a hold without a debit (the call failed or never started).

        Releasing a released hold returns it; releasing an expired hold returns
        it unchanged (its reservation is already free); releasing a captured
        hold is a conflict.
        """
        mandate = _mandate_of(hold_id)
        key = check_key(idempotency_key) if idempotency_key is not None else None
        request = {"hold_id": hold_id}

        def work(conn: Connection) -> Hold:
            self._authorize(conn, mandate, Scope.USE)
            ctx = self._ctx(conn, mandate, key=key)
            if key is not None:
                replay = self._replay(ctx, key, "release", request)
                if replay is not None:
                    return _expect(replay, Hold)
            row = self._lock_hold(conn, mandate, hold_id)
            now = self._now()
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
                conn.execute(
                    update(holds)
                    .where(_H.mandate_id == mandate, _H.hold_id == hold_id)
                    .values(status=ended.value, resolved_at=now)
                )
                conn.execute(
                    update(accounts)
                    .where(_A.mandate_id == mandate, _A.account_id == row.account_id)
                    .values(debits_pending=_A.debits_pending - row.amount_micros)
                )
                hold = replace(hold_from_row(row, ctx.currency), status=ended, resolved_at=now)
            elif status is HoldStatus.RELEASED:
                hold = hold_from_row(row, ctx.currency).as_replay()
            else:
                hold = hold_from_row(row, ctx.currency)
            if key is not None:
                self._remember(conn, mandate, key, "release", request, hold, now)
            return hold

        return self._write(work)

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
        key = check_key(idempotency_key)
        _check_description(description)
        meta = _check_metadata(metadata)
        tags = Tags(provider, model, feature_code, feature_instance, workflow_id)
        asked = _Posted.of(amount, usage, provider_cost, provider_currency, tags)
        request = {
            **asked.request,
            **tags.as_request(),
            "user": user,
            "already_happened": bool(already_happened),
            "description": description,
            "metadata": meta,
        }

        def work(conn: Connection) -> Entry | tx.Deferred:
            self._authorize(conn, mandate, Scope.USE)
            ctx = self._ctx(conn, mandate, user=user, key=key)
            replay = self._replay(ctx, key, "record_usage", request)
            if replay is not None:
                return replay if isinstance(replay, tx.Deferred) else _expect(replay, Entry)
            account = self._account_for(conn, ctx, user)
            now = self._now()
            use = _Usage(account, user, tags, asked, already_happened, now, description, meta)
            outcome = self._take_usage(conn, ctx, use)
            if isinstance(outcome, e.Refused):
                self._remember(conn, mandate, key, "record_usage", request, outcome, now)
                return tx.Deferred(outcome)
            entry = self._post(conn, ctx, outcome)
            self._remember(conn, mandate, key, "record_usage", request, entry, now)
            return entry

        return self._write(work)

    def _take_usage(self, conn: Connection, ctx: _Ctx, use: _Usage) -> e.Refused | _Posting:
        """Decide ``record_usage``'s debit and draw it from the account: the
        refusal to store, or the entry to post. Usage that ``happened`` passes
        the provider rule, the limits and the balance, marked on the entry."""
        happened, now, tags = use.happened, use.now, use.tags
        forbidden = self._provider_refusal(conn, ctx, use.user, tags.provider)
        if forbidden is not None and not happened:
            return forbidden
        spend = self._spend_refusal(
            conn, ctx, use.user, tags.provider, happened=happened, provider_ok=forbidden is None
        )
        if spend is not None:
            return spend
        charge = use.asked.charge(self.pricing, conn, ctx, tags, now)
        posted = charge.amount_micros if charge else use.asked.micros
        limit = self._limits(conn, ctx, use.user, tags.feature_instance, posted, now)
        if limit is not None and not happened:
            return limit
        enforce = ctx.model.enforced and not happened
        acct = self._take(conn, ctx, use.account, posted, now, pending=False, enforce=enforce)
        if acct is None:
            return self._insufficient(conn, ctx, use.account, posted)
        return _Posting(
            account=use.account,
            kind=EntryKind.DEBIT,
            micros=posted,
            reason="usage",
            now=now,
            balance_after=rules.balance(acct.credits_posted, acct.debits_posted),
            user=use.user,
            shortfall=self._settled_shortfall(conn, ctx, use.account, acct, posted, now),
            description=use.description,
            metadata=use.metadata,
            tags=tags,
            charge=charge,
            over_limit=_limit_name(limit) if limit else None,
            provider_not_allowed=forbidden is not None,
        )

    def _take(
        self,
        conn: Connection,
        ctx: _Ctx,
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
        stmt = _TAKE[(pending, enforce)]
        params = {"mandate": ctx.mandate, "account": account, "micros": micros}
        row = stmt.first(conn, params)
        if row is None and enforce and self._sweep(conn, ctx.mandate, account, now):
            row = stmt.first(conn, params)
        return row

    def _settled_shortfall(
        self, conn: Connection, ctx: _Ctx, account: str, acct: Any, micros: int, now: datetime
    ) -> int:
        """The shortfall of a just-posted debit, once overdue holds are expired:
        money an expired hold still seemed to reserve was in fact available."""
        shortfall = self._shortfall(ctx, acct, micros)
        if shortfall and self._sweep(conn, ctx.mandate, account, now):
            acct = _READ_COUNTERS.one(conn, {"mandate": ctx.mandate, "account": account})
            shortfall = self._shortfall(ctx, acct, micros)
        return shortfall

    def _shortfall(self, ctx: _Ctx, acct: Any, micros: int) -> int:
        """How much of ``micros`` just drawn from the available balance it could not cover."""
        available = rules.account_available(acct)
        return rules.shortfall(micros, available, enforced=ctx.model.enforced)

    def _insufficient(self, conn: Connection, ctx: _Ctx, account: str, micros: int) -> e.Refused:
        row = conn.execute(
            select(*_COUNTERS).where(_A.mandate_id == ctx.mandate, _A.account_id == account)
        ).first()
        if row is None:
            raise e.UnknownAccount(
                f"Mandate {ctx.mandate!r} has no account {account!r}.", account=account
            )
        return e.InsufficientBalance(
            account=account,
            available=from_micros(rules.account_available(row)),
            required=from_micros(micros),
            currency=ctx.currency,
        )

    def _post(self, conn: Connection, ctx: _Ctx, posting: _Posting) -> Entry:
        """Insert the ledger entry ``posting`` describes and return it."""
        entry = posting.entry(ctx)
        self._insert(conn, entries, **posting.row(ctx, entry))
        return entry

    def _lock_hold(self, conn: Connection, mandate: str, hold_id: str) -> Any:
        stmt = _LOCK_HOLD if self._pg else _READ_HOLD
        row = stmt.first(conn, {"mandate": mandate, "hold": hold_id})
        if row is None:
            raise e.HoldNotFound(hold_id)
        return row

    def _require_entry(self, conn: Connection, mandate: str, entry_id: str) -> None:
        found = conn.execute(
            select(entries.c.entry_id).where(
                entries.c.mandate_id == mandate, entries.c.entry_id == entry_id
            )
        ).first()
        if found is None:
            raise e.NotFound(f"No entry with id {entry_id!r}.", entry_id=entry_id)

    def _entry_by_id(self, conn: Connection, ctx: _Ctx, entry_id: str) -> Entry:
        row = conn.execute(
            select(entries).where(
                entries.c.mandate_id == ctx.mandate, entries.c.entry_id == entry_id
            )
        ).one()
        return entry_from_row(row, ctx.currency)

    # ----------------------------------------------------------------- reading

    def balance(self, mandate: str, *, user: str | None = None) -> Balance:
        """The account the billing model names for ``user``.

        Overdue holds no longer count as pending: if the account has any, they
        are expired first (a short write); otherwise this only reads.
        ``billing:read`` reads any account; ``billing:use`` the account it bills
        (see :meth:`_authorize_balance`).
        """

        def read(conn: Connection) -> Balance | None:
            self._authorize_balance(conn, mandate, user)
            ctx = self._ctx(conn, mandate, user=user)
            account = self._account_for(conn, ctx, user)
            overdue = conn.execute(
                select(_H.hold_id)
                .where(
                    _H.mandate_id == mandate,
                    _H.account_id == account,
                    _H.status == HoldStatus.PENDING.value,
                    _H.expires_at <= self._now(),
                )
                .limit(1)
            ).first()
            return None if overdue else self._balance(conn, ctx, account)

        def sweep(conn: Connection) -> Balance:
            self._authorize_balance(conn, mandate, user)
            ctx = self._ctx(conn, mandate, user=user)
            account = self._account_for(conn, ctx, user)
            self._sweep(conn, mandate, account, self._now())
            return self._balance(conn, ctx, account)

        return self._read(read) or self._write(sweep)

    def _balance(self, conn: Connection, ctx: _Ctx, account: str) -> Balance:
        row = conn.execute(
            select(_A.user_id, *_COUNTERS).where(
                _A.mandate_id == ctx.mandate, _A.account_id == account
            )
        ).first()
        if row is None:
            raise e.UnknownAccount(
                f"Mandate {ctx.mandate!r} has no account {account!r}.", account=account
            )
        return Balance(
            balance=from_micros(rules.balance(row.credits_posted, row.debits_posted)),
            available=from_micros(rules.account_available(row)),
            pending=from_micros(row.debits_pending),
            currency=ctx.currency,
            account=account,
            mandate=ctx.mandate,
            credits_posted=from_micros(row.credits_posted),
            debits_posted=from_micros(row.debits_posted),
            overdraft_limit=from_micros(row.overdraft_limit),
            user=row.user_id,
        )

    def get_hold(self, hold_id: str) -> Hold:
        """One hold, as :meth:`hold` returned it and as it is now: for a key
        with ``billing:use`` (it is what a hold call returns) or ``billing:read``."""
        mandate = _mandate_of(hold_id)

        def work(conn: Connection) -> Hold:
            self._authorize(conn, mandate, self._use_or_read())
            ctx = self._ctx(conn, mandate)
            row = conn.execute(
                select(holds).where(_H.mandate_id == mandate, _H.hold_id == hold_id)
            ).first()
            if row is None:
                raise e.HoldNotFound(hold_id)
            return hold_from_row(row, ctx.currency)

        return self._read(work)

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
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise e.InvalidRequest(f"limit must be from 1 to {MAX_PAGE}.", field="limit")
        after = _decode_cursor(cursor) if cursor else None
        kind = _entry_kind(kind) if kind is not None else None
        for name, when in (("since", since), ("until", until)):
            if when is not None:
                _aware(when, name)
        _check_filters(
            user=user,
            account=account,
            reason=reason,
            hold_id=hold_id,
            provider=provider,
            model=model,
            feature_code=feature_code,
            feature_instance=feature_instance,
            workflow_id=workflow_id,
        )
        equal = {
            "user_id": user,
            "account_id": account,
            "kind": kind.value if kind else None,
            "reason": reason,
            "hold_id": hold_id,
            "provider": provider,
            "model": model,
            "feature_code": feature_code,
            "feature_instance": feature_instance,
            "workflow_id": workflow_id,
        }
        stmt = _history_stmt(mandate, equal, since, until, after, limit)

        def work(conn: Connection) -> Page:
            self._authorize(conn, mandate, Scope.READ)
            ctx = self._ctx(conn, mandate)
            rows = conn.execute(stmt).all()
            items = [entry_from_row(r, ctx.currency) for r in rows[:limit]]
            more = len(rows) > limit
            return Page(items, _encode_cursor(items[-1]) if more and items else None)

        return self._read(work)

    def verify(self, mandate: str | None = None) -> list[Drift]:
        """Recompute every account's counters from its entries and open holds.

        Returns the differences found; an empty list means the ledger is sound.
        """

        def work(conn: Connection) -> list[Drift]:
            self._authorize(conn, mandate, Scope.READ)
            found: list[Drift] = []
            sums: dict[tuple[str, str], dict[str, int]] = {}
            c = entries.c
            q = select(
                c.mandate_id, c.account_id, c.kind, func.coalesce(func.sum(c.amount_micros), 0)
            ).group_by(c.mandate_id, c.account_id, c.kind)
            if mandate is not None:
                q = q.where(c.mandate_id == mandate)
            for m, a, kind, total in conn.execute(q):
                name = "credits_posted" if kind == "credit" else "debits_posted"
                sums.setdefault((m, a), {})[name] = int(total)
            hq = (
                select(_H.mandate_id, _H.account_id, func.sum(_H.amount_micros))
                .where(_H.status == HoldStatus.PENDING.value)
                .group_by(_H.mandate_id, _H.account_id)
            )
            if mandate is not None:
                hq = hq.where(_H.mandate_id == mandate)
            for m, a, total in conn.execute(hq):
                sums.setdefault((m, a), {})["debits_pending"] = int(total)
            aq = select(_A.mandate_id, _A.account_id, *_COUNTERS[:3])
            if mandate is not None:
                aq = aq.where(_A.mandate_id == mandate)
            for row in conn.execute(aq):
                computed = sums.pop((row.mandate_id, row.account_id), {})
                for name in ("credits_posted", "debits_posted", "debits_pending"):
                    stored = getattr(row, name)
                    if stored != computed.get(name, 0):
                        found.append(
                            Drift(
                                row.mandate_id, row.account_id, name, stored, computed.get(name, 0)
                            )
                        )
            for (m, a), computed in sums.items():
                for name, value in computed.items():
                    found.append(Drift(m, a, name, 0, value))
            return found

        return self._read(work)

    def sweep_expired(self, mandate: str | None = None) -> int:
        """Expire every overdue hold (for a background sweeper); returns how many."""
        now = self._now()
        q = (
            select(_H.mandate_id, _H.account_id)
            .where(_H.status == HoldStatus.PENDING.value, _H.expires_at <= now)
            .distinct()
        )
        if mandate is not None:
            q = q.where(_H.mandate_id == mandate)

        def find(conn: Connection) -> list[Any]:
            self._authorize(conn, mandate, Scope.USE)
            return list(conn.execute(q).all())

        targets = self._read(find)
        count = 0
        for m, a in targets:

            def work(conn: Connection, m: str = m, a: str = a) -> int:
                before = conn.execute(
                    select(func.count()).where(
                        _H.mandate_id == m,
                        _H.account_id == a,
                        _H.status == HoldStatus.PENDING.value,
                        _H.expires_at <= now,
                    )
                ).scalar_one()
                self._sweep(conn, m, a, now)
                return int(before)

            count += self._write(work)
        return count

    # ----- provider permissions (the work is done in aibill.service.access)

    def is_provider_allowed(self, mandate: str, user: str, provider: str) -> bool:
        """May ``user`` use ``provider`` in ``mandate`` now? False on any doubt,
        and for a principal that may not read ``mandate``."""
        return self.access.is_provider_allowed(mandate, user, provider)

    def allowed_providers(self, mandate: str, user: str) -> list[str]:
        """The enabled providers ``user`` may use in ``mandate``, sorted
        (``PermissionDenied`` for a principal that may not read ``mandate``)."""
        return self.access.allowed_providers(mandate, user)

    # ----- reports (the work is done in aibill.service.reports)

    def balances_for_user(self, user: str) -> list[UserBalance]:
        """One row per mandate ``user`` belongs to, for the account the mandate's
        billing model names for them (the pool, or their wallet), sorted by mandate.
        Raises ``UnknownUser`` for a user aibill does not know."""
        p = self._principal
        if p.kind is not PrincipalKind.SYSTEM:
            # Another user's balances are the platform's business; one's own
            # is a report of one's mandate (billing:read).
            where = p.mandate if p.kind is PrincipalKind.USER and p.user == user else None
            self._read(lambda conn: self._authorize(conn, where, Scope.READ))
        rows = reports.balances_for_user(self, user)
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
        self._read(lambda conn: self._authorize(conn, mandate, Scope.READ))
        return reports.usage_report(
            self,
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
            self, mandate, page_size=page_size, spreadsheet_safe=spreadsheet_safe, **filters
        )

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
        self._read(lambda conn: self._authorize(conn, mandate, Scope.READ))
        return reports.iter_usage_report_csv(
            self, mandate, group_by=group_by, spreadsheet_safe=spreadsheet_safe, **filters
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


# The statements of the hot path, as SQL both backends accept (see store.fast).
_COUNTERS = (_A.credits_posted, _A.debits_posted, _A.debits_pending, _A.overdraft_limit)
_COUNTER_SQL = "credits_posted, debits_posted, debits_pending, overdraft_limit"
_AVAILABLE_SQL = rules.AVAILABLE_SQL  # rules.available, over an accounts row (rule 2)
_HOLD_TIMES = ("created_at", "expires_at", "resolved_at")
_HOLD_JSON = ("metadata", "estimate")


def _ctx_query(with_user: bool, with_key: bool) -> fast.Statement:
    cols = ["m.billing_model", "m.currency"]
    joins = []
    if with_user:
        cols.append("mb.user_id AS member")
        joins.append(
            "LEFT JOIN memberships mb ON mb.mandate_id = m.mandate_id AND mb.user_id = :user"
        )
    if with_key:
        cols += ["k.operation", "k.request", "k.outcome", "k.result"]
        joins.append(
            "LEFT JOIN idempotency_keys k"
            " ON k.mandate_id = m.mandate_id AND k.idempotency_key = :key"
        )
    return fast.Statement(
        f"SELECT {', '.join(cols)} FROM mandates m {' '.join(joins)} WHERE m.mandate_id = :mandate",
        json_columns=("request", "result"),
    )


def _take_stmt(pending: bool, enforce: bool) -> fast.Statement:
    column = "debits_pending" if pending else "debits_posted"
    condition = f" AND {_AVAILABLE_SQL} >= :micros" if enforce else ""
    return fast.Statement(
        f"UPDATE accounts SET {column} = {column} + :micros"
        f" WHERE mandate_id = :mandate AND account_id = :account{condition}"
        f" RETURNING {_COUNTER_SQL}"
    )


def _insert_stmt(table: Any) -> fast.Statement:
    """INSERT of every column; times and JSON converted as their column types say."""
    names = [c.name for c in table.columns]
    return fast.Statement(
        f"INSERT INTO {table.name} ({', '.join(names)})"
        f" VALUES ({', '.join(':' + n for n in names)})",
        times=[c.name for c in table.columns if isinstance(c.type, UTCDateTime)],
        json_columns=[c.name for c in table.columns if isinstance(c.type, JSON)],
    )


_CTX_QUERIES = {(u, k): _ctx_query(u, k) for u in (False, True) for k in (False, True)}
_TAKE = {(p, f): _take_stmt(p, f) for p in (False, True) for f in (False, True)}
_FAST_INSERTS: dict[str, fast.Statement] = {
    t.name: _insert_stmt(t) for t in (holds, entries, idempotency_keys)
}
_POST_CAPTURE = fast.Statement(
    "UPDATE accounts SET debits_posted = debits_posted + :micros,"
    " debits_pending = debits_pending - :freed"
    f" WHERE mandate_id = :mandate AND account_id = :account RETURNING {_COUNTER_SQL}"
)
_READ_COUNTERS = fast.Statement(
    f"SELECT {_COUNTER_SQL} FROM accounts WHERE mandate_id = :mandate AND account_id = :account"
)
_MARK_CAPTURED = fast.Statement(
    "UPDATE holds SET status = 'captured', resolved_at = :now, captured_micros = :micros,"
    " entry_id = :entry WHERE mandate_id = :mandate AND hold_id = :hold",
    times=("now",),
)
_HOLD_SQL = (
    f"SELECT {', '.join(c.name for c in holds.columns)} FROM holds"
    " WHERE mandate_id = :mandate AND hold_id = :hold"
)
_READ_HOLD = fast.Statement(_HOLD_SQL, times=_HOLD_TIMES, json_columns=_HOLD_JSON)
_LOCK_HOLD = fast.Statement(_HOLD_SQL + " FOR UPDATE", times=_HOLD_TIMES, json_columns=_HOLD_JSON)


_LIMITS_SQL = (
    "SELECT scope, subject, period, amount_micros FROM spending_limits"
    " WHERE mandate_id = :mandate AND ((scope = 'user' AND subject = :user)"
    " OR (scope = 'feature_instance' AND subject = :feature_instance))"
    " ORDER BY scope, subject, period"
)
_LIMITS = fast.Statement(_LIMITS_SQL)
_LIMITS_FOR_UPDATE = fast.Statement(_LIMITS_SQL + " FOR UPDATE")
_NO_TAGS = Tags()
PERIODS = rules.PERIODS


@dataclass(frozen=True, slots=True)
class _Posting:
    """One ledger entry about to be written: what ``_post`` inserts."""

    account: str
    kind: EntryKind
    micros: int
    reason: str
    now: datetime
    balance_after: int
    user: str | None = None
    hold_id: str | None = None
    shortfall: int = 0
    captured_after_expiry: bool = False
    description: str | None = None
    corrects: str | None = None
    metadata: dict[str, Any] | None = None
    entry_id: str | None = None
    tags: Tags = _NO_TAGS
    charge: Charge | None = None
    over_limit: str | None = None
    provider_not_allowed: bool = False

    def entry(self, ctx: _Ctx) -> Entry:
        """The entry as the caller sees it."""
        tags, charge = self.tags, self.charge
        usage = charge.usage if charge else None
        return Entry(
            id=self.entry_id or _entry_id(),
            mandate=ctx.mandate,
            account=self.account,
            kind=self.kind,
            amount=from_micros(self.micros),
            currency=ctx.currency,
            reason=self.reason,
            posted_at=self.now,
            balance_after=from_micros(self.balance_after),
            user=self.user,
            hold_id=self.hold_id,
            over_balance=self.shortfall > 0,
            shortfall=from_micros(self.shortfall),
            captured_after_expiry=self.captured_after_expiry,
            corrects=self.corrects,
            description=self.description,
            metadata=self.metadata or {},
            provider=tags.provider,
            model=tags.model,
            model_matched=charge.model_matched if charge else None,
            feature_code=tags.feature_code,
            feature_instance=tags.feature_instance,
            workflow_id=tags.workflow_id,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            cache_read_tokens=usage.cache_read_tokens if usage else None,
            cache_write_tokens=usage.cache_write_tokens if usage else None,
            provider_cost=charge.provider_cost if charge else None,
            provider_currency=charge.provider_currency if charge else None,
            price_source=charge.price_source if charge else None,
            fx_rate=charge.fx_rate if charge else None,
            markup_percent=charge.markup_percent if charge else None,
            breakdown=_charge_json(charge) if charge else None,
            over_limit=self.over_limit,
            provider_not_allowed=self.provider_not_allowed,
        )

    def row(self, ctx: _Ctx, entry: Entry) -> dict[str, Any]:
        """The ``entries`` row of ``entry``, as stored."""
        charge = self.charge
        return {
            "mandate_id": ctx.mandate,
            "entry_id": entry.id,
            "account_id": self.account,
            "kind": self.kind.value,
            "amount_micros": self.micros,
            "reason": self.reason,
            "posted_at": self.now,
            "balance_after_micros": self.balance_after,
            "user_id": self.user,
            "hold_id": self.hold_id,
            "over_balance": self.shortfall > 0,
            "shortfall_micros": self.shortfall,
            "captured_after_expiry": self.captured_after_expiry,
            "corrects_entry_id": self.corrects,
            "description": self.description,
            "metadata": entry.metadata,
            **self.tags.as_request(),
            "model_matched": entry.model_matched,
            "input_tokens": entry.input_tokens,
            "output_tokens": entry.output_tokens,
            "cache_read_tokens": entry.cache_read_tokens,
            "cache_write_tokens": entry.cache_write_tokens,
            "provider_cost_pico": charge.provider_cost_pico if charge else None,
            "provider_currency": entry.provider_currency,
            "price_source": entry.price_source,
            "fx_rate": None if charge is None else str(charge.fx_rate),
            "markup_percent": None if charge is None else str(charge.markup_percent),
            "breakdown": entry.breakdown,
            "over_limit": self.over_limit,
            "provider_not_allowed": self.provider_not_allowed or None,
        }


def _limit_subject(user: str | None, feature_instance: str | None) -> tuple[str, str]:
    if (user is None) == (feature_instance is None):
        raise e.InvalidRequest(
            "A spending limit is for one user or one feature instance: give exactly one.",
            field="user",
        )
    if user is not None:
        return "user", check_name(user, "user")
    Tags(feature_instance=feature_instance)  # validates
    assert feature_instance is not None
    return "feature_instance", feature_instance


def _limit_name(limit: e.LimitExceeded) -> str:
    d = limit.details
    return f"{d['scope']}:{d['subject']}/{d['period']}"[:64]


@dataclass(frozen=True, slots=True)
class _Usage:
    """What one ``record_usage`` call draws (whose account, for what, and when)
    and what its entry says."""

    account: str
    user: str | None
    tags: Tags
    asked: _Posted
    happened: bool
    now: datetime
    description: str | None
    metadata: dict[str, Any]


class _Posted:
    """What ``record_usage`` posts: a fixed amount, usage to price, or a
    provider cost to price (``request`` is how the idempotency record keeps it)."""

    __slots__ = ("cost", "cost_currency", "micros", "request", "usage")

    def __init__(
        self,
        micros: int,
        usage: Usage | None,
        cost: Decimal | None,
        cost_currency: str,
        request: dict[str, Any],
    ) -> None:
        self.micros, self.usage, self.request = micros, usage, request
        self.cost, self.cost_currency = cost, cost_currency

    @classmethod
    def of(
        cls,
        amount: Decimal | None,
        usage: Usage | None,
        provider_cost: Decimal | None,
        provider_currency: str | None,
        tags: Tags,
    ) -> _Posted:
        given = [v for v in (amount, usage, provider_cost) if v is not None]
        if len(given) != 1:
            raise e.InvalidRequest(
                "Give one of amount=, usage= (with provider and model) or provider_cost=.",
                field="amount",
            )
        if provider_currency is not None and provider_cost is None:
            raise e.InvalidRequest(
                "provider_currency goes with provider_cost=.", field="provider_currency"
            )
        if provider_cost is not None:
            cost = check_provider_cost(provider_cost)
            currency = check_provider_currency(provider_currency or CATALOG_CURRENCY)
            text = format(cost.normalize(), "f")
            request = {"amount": None, "usage": None, "provider_cost": text}
            return cls(0, None, cost, currency, {**request, "provider_currency": currency})
        if usage is not None:
            if not isinstance(usage, Usage):
                raise e.InvalidRequest("usage must be an aibill.Usage.", field="usage")
            if tags.provider is None or tags.model is None:
                raise e.InvalidRequest("Pricing usage needs provider and model.", field="model")
            return cls(0, usage, None, "", {"amount": None, "usage": _usage_json(usage)})
        micros = to_micros(amount)
        return cls(micros, None, None, "", {"amount": str(from_micros(micros)), "usage": None})

    def charge(
        self, pricing: Pricing, conn: Connection, ctx: _Ctx, tags: Tags, now: datetime
    ) -> Charge | None:
        """The priced forms' charge, in the mandate's currency at ``now``."""
        if self.cost is not None:
            return pricing.quote_cost(
                conn,
                mandate=ctx.mandate,
                currency=ctx.currency,
                provider_cost=self.cost,
                provider_currency=self.cost_currency,
                provider=tags.provider,
                model=tags.model,
                at=now,
            )
        if self.usage is None:
            return None
        assert tags.provider is not None and tags.model is not None
        return pricing.quote(
            conn,
            mandate=ctx.mandate,
            currency=ctx.currency,
            provider=tags.provider,
            model=tags.model,
            usage=self.usage,
            at=now,
        )


class _Asked:
    """What a hold asks for: a fixed amount, or tokens to price as an estimate."""

    __slots__ = ("input_tokens", "max_output_tokens", "micros", "request")

    def __init__(
        self,
        micros: int,
        input_tokens: int | None,
        max_output_tokens: int | None,
        request: dict[str, Any],
    ) -> None:
        self.micros = micros
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        self.request = request

    @classmethod
    def of(
        cls,
        amount: Decimal | None,
        tags: Tags,
        input_tokens: int | None,
        max_output_tokens: int | None,
    ) -> _Asked:
        priced = input_tokens is not None or max_output_tokens is not None
        if amount is not None:
            if priced:
                raise e.InvalidRequest(
                    "Give either amount= or the tokens to price, not both.", field="amount"
                )
            micros = to_micros(amount)
            return cls(micros, None, None, {"amount": str(from_micros(micros))})
        if not priced:
            raise e.InvalidRequest(
                "Give amount=, or provider, model, input_tokens and max_output_tokens.",
                field="amount",
            )
        if tags.provider is None or tags.model is None:
            raise e.InvalidRequest("Pricing a call needs provider and model.", field="model")
        counts = {"input_tokens": input_tokens, "max_output_tokens": max_output_tokens}
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**12:
                raise e.InvalidRequest(f"{name} must be a whole number >= 0.", field=name)
        return cls(0, input_tokens, max_output_tokens, {"amount": None, **counts})

    @classmethod
    def for_check(
        cls,
        estimate: Decimal | None,
        tags: Tags,
        input_tokens: int | None,
        max_output_tokens: int | None,
    ) -> _Asked:
        """What a check asks about: an ``estimate`` (zero allowed), or the
        priced form, which needs all of provider, model and both counts."""
        priced = {"model": tags.model, "input_tokens": input_tokens}
        priced["max_output_tokens"] = max_output_tokens
        if estimate is not None:
            given = [name for name, value in priced.items() if value is not None]
            if given:
                raise e.InvalidRequest(
                    f"Give either estimate= or the call to price ({', '.join(given)}), not both.",
                    field="estimate",
                )
            return cls(to_micros(estimate, field="estimate", allow_zero=True), None, None, {})
        missing = [name for name, value in priced.items() if value is None]
        if tags.provider is None:
            missing.insert(0, "provider")
        if missing:
            raise e.InvalidRequest(
                "Give estimate=, or the call to price: provider, model, input_tokens and "
                f"max_output_tokens (missing: {', '.join(missing)}).",
                field=missing[0] if len(missing) < 4 else "estimate",
            )
        return cls.of(None, tags, input_tokens, max_output_tokens)

    def estimate(
        self, billing: Billing, conn: Connection, ctx: _Ctx, tags: Tags, now: datetime
    ) -> Charge | None:
        if self.input_tokens is None or self.max_output_tokens is None:
            return None
        assert tags.provider is not None and tags.model is not None
        limit = billing.pricing.output_limit(conn, ctx.mandate, tags.provider, tags.model)
        output = self.max_output_tokens if limit is None else min(self.max_output_tokens, limit)
        usage = Usage(input_tokens=self.input_tokens, output_tokens=output)
        return billing.pricing.quote(
            conn,
            mandate=ctx.mandate,
            currency=ctx.currency,
            provider=tags.provider,
            model=tags.model,
            usage=usage,
            at=now,
        )


def _credit_request(
    micros: int, user: str | None, reason: str, description: str | None, corrects: str | None
) -> dict[str, Any]:
    """Check a credit's reason and texts; the request its idempotency record keeps."""
    if reason not in CREDIT_REASONS:
        raise e.InvalidRequest(
            f"reason must be one of {', '.join(CREDIT_REASONS)}, not {reason!r}.",
            field="reason",
        )
    _check_description(description)
    if corrects is not None:
        check_line(corrects, "corrects", max_length=MAX_ENTRY_ID)
    return {
        "amount": str(from_micros(micros)),
        "user": user,
        "reason": reason,
        "description": description,
        "corrects": corrects,
    }


def _new_hold(
    ctx: _Ctx,
    account: str,
    user: str | None,
    micros: int,
    charge: Charge | None,
    tags: Tags,
    meta: dict[str, str | int],
    now: datetime,
    ttl_s: int,
) -> Hold:
    """The pending hold ``hold`` creates, as its caller sees it."""
    return Hold(
        id=f"{ctx.mandate}:hold_{_token()}",
        mandate=ctx.mandate,
        account=account,
        user=user,
        amount=from_micros(micros),
        currency=ctx.currency,
        status=HoldStatus.PENDING,
        created_at=now,
        expires_at=rules.hold_expires_at(now, ttl_s),
        metadata=meta,
        provider=tags.provider,
        model=tags.model,
        model_matched=charge.model_matched if charge else None,
        feature_code=tags.feature_code,
        feature_instance=tags.feature_instance,
        workflow_id=tags.workflow_id,
        estimate=_charge_json(charge) if charge else None,
    )


def _hold_row(hold: Hold, micros: int) -> dict[str, Any]:
    """The ``holds`` row of a new pending ``hold``, as stored."""
    return {
        "mandate_id": hold.mandate,
        "hold_id": hold.id,
        "account_id": hold.account,
        "user_id": hold.user,
        "amount_micros": micros,
        "status": HoldStatus.PENDING.value,
        "created_at": hold.created_at,
        "expires_at": hold.expires_at,
        "metadata": hold.metadata,
        "provider": hold.provider,
        "model": hold.model,
        "feature_code": hold.feature_code,
        "feature_instance": hold.feature_instance,
        "workflow_id": hold.workflow_id,
        "model_matched": hold.model_matched,
        "estimate": hold.estimate,
    }


def _check_ttl(ttl_s: object) -> None:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_HOLD_TTL_S:
        raise e.InvalidRequest(
            f"ttl_s must be a whole number of seconds from 1 to {MAX_HOLD_TTL_S}.", field="ttl_s"
        )


def _aware(value: datetime, name: str) -> datetime:
    """A timezone-aware time within the range the stores hold, in UTC."""
    return check_time(value, name)


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "input_audio_tokens": usage.input_audio_tokens,
        "output_audio_tokens": usage.output_audio_tokens,
        "requests": usage.requests,
    }


def _charge_json(charge: Charge) -> dict[str, Any]:
    """The whole breakdown of a priced amount, JSON-ready, money as strings:
    usage, unit prices and components, provider cost, rate, markup, amount."""
    return dict(charge.breakdown)


def _same_capture(first: Entry, micros: int | None, usage: Usage | None) -> bool:
    """Does a second capture ask for what the first one posted? (rule 3, in
    :func:`aibill.domain.rules.same_capture`)"""
    first_tokens = (
        None
        if first.input_tokens is None
        else (
            first.input_tokens,
            first.output_tokens,
            first.cache_read_tokens,
            first.cache_write_tokens,
        )
    )
    tokens = (
        None
        if usage is None
        else (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
    )
    first_micros = to_micros(first.amount, allow_zero=True)
    return rules.same_capture(first_micros, first_tokens, micros, tokens)


def _scope_allows(scopes: frozenset[Scope], need: Scope) -> bool:
    """An admin key may do everything; otherwise a key does what its scopes
    name and no more: a use key does not read the mandate's history, reports
    or settings (concepts.md rule 10; the table in ``docs/api-keys.md``)."""
    if Scope.ADMIN in scopes:
        return True
    return need in scopes


def _billing_model(value: str | BillingModel) -> BillingModel:
    try:
        return BillingModel(value)
    except ValueError:
        raise e.InvalidRequest(
            f"billing_model must be one of {', '.join(m.value for m in BillingModel)}, "
            f"not {value!r}.",
            field="billing_model",
        ) from None


def _has_role(conn: Connection, mandate: str, user: str, role: str) -> bool:
    found = _ROLE.first(conn, {"mandate": mandate, "user": user, "role": role})
    return found is not None or _is_sysadmin(conn, user)


def _is_member(conn: Connection, mandate: str, user: str) -> bool:
    return _MEMBER.first(conn, {"mandate": mandate, "user": user}) is not None


def _is_sysadmin(conn: Connection, user: str) -> bool:
    return _SYSADMIN.first(conn, {"user": user}) is not None


_ROLE = fast.Statement(
    "SELECT role FROM member_roles WHERE mandate_id = :mandate AND user_id = :user AND role = :role"
)
_MEMBER = fast.Statement(
    "SELECT user_id FROM memberships WHERE mandate_id = :mandate AND user_id = :user"
)
_SYSADMIN = fast.Statement("SELECT user_id FROM platform_admins WHERE user_id = :user")


def _token(nbytes: int = 12) -> str:
    return secrets.token_hex(nbytes)


def _entry_id() -> str:
    """Unique, and roughly in posting order (a tiebreak for equal posting times)."""
    return f"e{time.time_ns() // 1000:014x}{_token(5)}"


def _mandate_of(hold_id: object) -> str:
    if not isinstance(hold_id, str) or ":" not in hold_id:
        raise e.InvalidRequest(f"{hold_id!r} is not a hold id.", field="hold_id")
    check_line(hold_id, "hold_id", max_length=MAX_HOLD_ID)
    return hold_id.split(":", 1)[0]


def _expect(value: Hold | Entry | tx.Deferred, kind: type[T]) -> T:
    if not isinstance(value, kind):  # a key stored by another operation is caught earlier
        raise AssertionError(f"stored result is {type(value).__name__}, expected {kind.__name__}")
    return value


def _refusal_from_dict(data: dict[str, Any]) -> e.Refused:
    """A stored refusal, rebuilt as the same error class with the same details."""
    details = dict(data.get("details", {}))
    code = data.get("code")
    if code == e.InsufficientBalance.code:
        return e.InsufficientBalance(
            account=details["account"],
            available=Decimal(details["available"]),
            required=Decimal(details["required"]),
            currency=details["currency"],
        )
    cls = e.REFUSAL_TYPES.get(str(code), e.Refused)
    err = cls.__new__(cls)
    e.AibillError.__init__(err, str(data.get("message", "refused")), **details)
    return err


def _check_description(description: str | None) -> None:
    if description is not None:
        check_prose(description, "description", max_length=MAX_DESCRIPTION_LENGTH)


def _check_metadata(metadata: Mapping[str, str | int] | None) -> dict[str, str | int]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or len(metadata) > MAX_METADATA_KEYS:
        raise e.InvalidRequest(
            f"metadata must be a mapping of at most {MAX_METADATA_KEYS} keys.", field="metadata"
        )
    out: dict[str, str | int] = {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not k:
            raise e.InvalidRequest(f"metadata key {k!r} is not a short string.", field="metadata")
        check_text(k, "metadata", label="A metadata key", max_length=MAX_REASON_LENGTH)
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise e.InvalidRequest(
                f"metadata[{k!r}] must be a string (at most {MAX_METADATA_VALUE} characters) "
                "or an integer.",
                field=f"metadata.{k}",
            )
        if isinstance(v, str):
            check_prose(v, f"metadata.{k}", max_length=MAX_METADATA_VALUE)
        elif abs(v) > MAX_METADATA_INT:
            raise e.InvalidRequest(
                f"metadata[{k!r}] must be an integer of at most 18 digits.",
                field=f"metadata.{k}",
            )
        out[k] = v
    return out


def _check_filters(**filters: str | None) -> None:
    """Every text a read filters on is one both databases can compare."""
    for name, value in filters.items():
        if value is not None:
            check_searchable(value, name, max_length=MAX_FILTER_LENGTH)


def _entry_kind(kind: str | EntryKind) -> EntryKind:
    try:
        return EntryKind(kind)
    except ValueError:
        raise e.InvalidRequest("kind must be 'credit' or 'debit'.", field="kind") from None


def _history_stmt(
    mandate: str,
    equal: Mapping[str, str | None],
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Any:
    """The page query of ``history``: entries of ``mandate`` whose columns equal
    the given (non-None) values, in ``since <= posted_at < until``, newest first,
    after the cursor, one more than ``limit`` to tell whether more follow."""
    c = entries.c
    conds = [c.mandate_id == mandate]
    conds += [c[name] == value for name, value in equal.items() if value is not None]
    if since is not None:
        conds.append(c.posted_at >= since)
    if until is not None:
        conds.append(c.posted_at < until)
    if after is not None:
        conds.append(
            or_(c.posted_at < after[0], and_(c.posted_at == after[0], c.entry_id < after[1]))
        )
    return (
        select(entries)
        .where(*conds)
        .order_by(c.posted_at.desc(), c.entry_id.desc())
        .limit(limit + 1)
    )


def _encode_cursor(entry: Entry) -> str:
    raw = f"{entry.posted_at.isoformat()}|{entry.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, entry_id = raw.split("|", 1)
        when = check_time(datetime.fromisoformat(at), "cursor")
        if "\x00" in entry_id or len(entry_id) > MAX_ENTRY_ID:
            raise ValueError
        return when, entry_id
    except (ValueError, UnicodeDecodeError, e.InvalidRequest):
        raise e.InvalidRequest(
            "cursor is not one that history() returned.", field="cursor"
        ) from None


__all__ = ["Billing"]
