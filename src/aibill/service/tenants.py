"""Tenants and their people: mandates and their billing model, user
identities, members and their first role, and an account's overdraft limit.
Every change is idempotent and audited."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain.model import (
    POOL_ACCOUNT,
    Balance,
    BillingModel,
    Mandate,
    Member,
    check_name,
    wallet_account,
)
from aibill.domain.money import check_currency, from_micros, to_micros
from aibill.domain.permissions import check_role
from aibill.domain.principal import PrincipalKind, Scope
from aibill.domain.requests import billing_model as check_billing_model
from aibill.service.access import require_role, roles_of
from aibill.service.context import Context
from aibill.service.reads import balance_of, expire_overdue_of
from aibill.store import access as access_store
from aibill.store import decisions, ledger, tenants


class Tenants:
    """Mandates, users and members."""

    def __init__(self, context: Context) -> None:
        self._cx = context

    def create_mandate(
        self,
        mandate: str,
        *,
        billing_model: str | BillingModel = BillingModel.PREPAY_MANDATE,
        currency: str = "CHF",
    ) -> Mandate:
        """Create a mandate (idempotent: the same call again returns it)."""
        cx = self._cx
        check_name(mandate, "mandate")
        model = check_billing_model(billing_model)
        check_currency(currency)

        def work(conn: Connection) -> Mandate:
            cx.authorize(conn, None, Scope.ADMIN)
            row = tenants.mandate_row(conn, mandate)
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
            now = cx.now()
            tenants.insert_mandate(conn, mandate, model.value, currency, now)
            if model is not BillingModel.PREPAY_USER:
                tenants.open_account(conn, mandate, POOL_ACCOUNT, currency, now)
            created = Mandate(mandate, model, currency, now)
            cx.audit(conn, mandate, "mandate.create", target=mandate, after=created)
            return created

        return cx.write(work)

    def get_mandate(self, mandate: str) -> Mandate:
        cx = self._cx

        def work(conn: Connection) -> Mandate:
            cx.authorize(conn, mandate, Scope.READ)
            row = tenants.mandate_row(conn, mandate)
            if row is None:
                raise e.UnknownMandate(mandate)
            return Mandate(mandate, BillingModel(row.billing_model), row.currency, row.created_at)

        return cx.read(work)

    def mandates(self) -> list[Mandate]:
        """The mandates this principal may see, by name: every mandate for the
        system and a system admin, its own for a mandate's key."""
        cx = self._cx

        def work(conn: Connection) -> list[Mandate]:
            p = cx.principal
            only = None
            if p.kind not in (PrincipalKind.SYSTEM, PrincipalKind.SYSADMIN):
                if p.mandate is None:
                    return []
                cx.authorize(conn, p.mandate, Scope.READ)
                only = p.mandate
            else:
                cx.authorize(conn, None, Scope.READ)
            return [
                Mandate(r.mandate_id, BillingModel(r.billing_model), r.currency, r.created_at)
                for r in tenants.mandate_rows(conn, only)
            ]

        return cx.read(work)

    def set_billing_model(self, mandate: str, billing_model: str | BillingModel) -> Mandate:
        """Change how ``mandate`` is billed (idempotent: the same model again changes
        nothing). Refused with ``holds_in_flight`` while any hold is pending,
        because a pending hold reserves money on an account the new model would
        no longer name. Money stays where it is: the pool keeps its balance when
        wallets take over, and the wallets keep theirs when the pool does; an
        admin moves it with credits and adjustments. Audited."""
        cx = self._cx
        check_name(mandate, "mandate")
        model = check_billing_model(billing_model)

        def work(conn: Connection) -> Mandate:
            cx.authorize(conn, mandate, Scope.ADMIN)
            row = tenants.mandate_row(conn, mandate)
            if row is None:
                raise e.UnknownMandate(mandate)
            before = Mandate(mandate, BillingModel(row.billing_model), row.currency, row.created_at)
            if before.billing_model is model:
                return before
            now = cx.now()
            expire_overdue_of(conn, mandate, now)
            _refuse_holds_in_flight(conn, mandate)
            tenants.set_billing_model(conn, mandate, model.value)
            _open_accounts_of(conn, mandate, model, row.currency, now)
            after = replace(before, billing_model=model)
            cx.audit(
                conn, mandate, "mandate.billing_model", target=mandate, before=before, after=after
            )
            return after

        return cx.write(work)

    def members(self, mandate: str) -> list[Member]:
        """The members of ``mandate`` with their roles, by user name."""
        cx = self._cx

        def work(conn: Connection) -> list[Member]:
            cx.authorize(conn, mandate, Scope.READ)
            cx.op(conn, mandate)
            roles = tenants.roles_by_member(conn, mandate)
            return [
                Member(r.user_id, tuple(roles.get(r.user_id, ())), r.created_at)
                for r in tenants.member_rows(conn, mandate)
            ]

        return cx.read(work)

    def users(self) -> list[str]:
        """Every registered user identity (platform-wide: the system or a system admin)."""
        cx = self._cx

        def work(conn: Connection) -> list[str]:
            cx.authorize(conn, None, Scope.READ)
            return tenants.user_names(conn)

        return cx.read(work)

    def add_user(self, user: str) -> str:
        """Register a user identity (idempotent)."""
        cx = self._cx
        check_name(user, "user")

        def work(conn: Connection) -> str:
            # A mandate's admin may register identities (to make them members).
            cx.authorize(conn, cx.principal.mandate, Scope.ADMIN)
            self._register(conn, user)
            return user

        return cx.write(work)

    def _register(self, conn: Connection, user: str) -> None:
        """Register ``user`` unless known (recorded in the platform's audit log)."""
        if not access_store.user_exists(conn, user):
            tenants.insert_user(conn, user, self._cx.now())
            self._cx.audit(conn, None, "user.add", target=user)

    def add_member(self, mandate: str, user: str, *, role: str | None = "member") -> list[str]:
        """Make ``user`` a member of ``mandate`` with ``role`` (``member`` unless
        said otherwise; ``None``: no role yet); a per-user mandate opens their wallet.
        A user name not registered yet is registered (as :meth:`add_user` does).

        Adding someone who is already a member gives them ``role`` if they lack
        it (audited as a ``role.grant``, as :meth:`Access.grant_role` does), and
        changes nothing otherwise. Returns the member's roles afterwards."""
        cx = self._cx
        check_name(mandate, "mandate")
        check_name(user, "user")
        if role is not None:
            check_role(role)

        def work(conn: Connection) -> list[str]:
            cx.authorize(conn, mandate, Scope.ADMIN)
            op = cx.op(conn, mandate)
            if role is not None:
                require_role(conn, mandate, role)
            # Users are bare identities: a name no one registered yet is
            # registered here, so the answer never tells a mandate's admin
            # whether it existed (recorded in the platform's audit log only).
            self._register(conn, user)
            if decisions.is_member(conn, mandate, user):
                return self._grant_on_add(conn, mandate, user, role)
            now = cx.now()
            tenants.insert_member(conn, mandate, user, now)
            if role is not None:
                tenants.insert_member_role(conn, mandate, user, role, now)
            cx.audit(conn, mandate, "member.add", target=user, after={"role": role})
            if op.model is BillingModel.PREPAY_USER:
                tenants.open_account(conn, mandate, wallet_account(user), op.currency, now, user)
            return [role] if role is not None else []

        return cx.write(work)

    def _grant_on_add(
        self, conn: Connection, mandate: str, user: str, role: str | None
    ) -> list[str]:
        """``add_member`` of someone already a member: the role they lack is granted."""
        held = roles_of(conn, mandate, user)
        if role is None or role in held:
            return held
        tenants.insert_member_role(conn, mandate, user, role, self._cx.now())
        after = sorted([*held, role])
        self._cx.audit(
            conn, mandate, "role.grant", target=user, before={"roles": held}, after={"roles": after}
        )
        return after

    def set_overdraft_limit(
        self, mandate: str, amount: Decimal, *, user: str | None = None
    ) -> Balance:
        """How far the account may go below zero for holds and usage (0 by default)."""
        cx = self._cx
        limit = to_micros(amount, field="overdraft_limit", allow_zero=True)

        def work(conn: Connection) -> Balance:
            cx.authorize(conn, mandate, Scope.ADMIN)
            op = cx.op(conn, mandate, user=user)
            account = cx.account_for(conn, op, user)
            before = balance_of(conn, op, account).overdraft_limit
            tenants.set_overdraft_limit(conn, mandate, account, limit)
            cx.audit(
                conn,
                mandate,
                "account.overdraft_limit",
                target=account,
                before={"overdraft_limit": before},
                after={"overdraft_limit": from_micros(limit)},
            )
            ledger.expire_overdue(conn, mandate, account, cx.now())
            return balance_of(conn, op, account)

        return cx.write(work)


def _refuse_holds_in_flight(conn: Connection, mandate: str) -> None:
    """Raise ``HoldsInFlight`` while any hold of ``mandate`` is pending."""
    pending = tenants.pending_holds(conn, mandate)
    if pending:
        raise e.HoldsInFlight(
            f"Mandate {mandate!r} has {pending} hold(s) in flight; capture or release "
            "them (or let them expire) before changing its billing model.",
            mandate=mandate,
            holds=pending,
        )


def _open_accounts_of(
    conn: Connection, mandate: str, model: BillingModel, currency: str, now: datetime
) -> None:
    """Open the accounts ``model`` names that ``mandate`` does not have yet:
    each member's wallet, or the pool."""
    have = set(tenants.account_names(conn, mandate))
    if model is BillingModel.PREPAY_USER:
        for member in tenants.member_names(conn, mandate):
            if wallet_account(member) not in have:
                tenants.open_account(conn, mandate, wallet_account(member), currency, now, member)
    elif POOL_ACCOUNT not in have:
        tenants.open_account(conn, mandate, POOL_ACCOUNT, currency, now)
