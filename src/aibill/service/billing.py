"""The ledger, as one object: :class:`Billing` composes the capabilities of
the service layer and keeps aibill's public surface in one place.

Each method is done by one capability, named beside it:

- the money path, :mod:`aibill.service.money` (check, estimate, hold,
  capture, release, record_usage, credit);
- tenants and members, :mod:`aibill.service.tenants`;
- spending limits, :mod:`aibill.service.limits`;
- reading, reports and exports, :mod:`aibill.service.reads`;
- verify and sweeps, :mod:`aibill.service.upkeep`;
- authorization, :mod:`aibill.service.authz` (through the
  :class:`~aibill.service.context.Context` every capability shares);
- exchange rates, markups and prices (``billing.pricing``), API keys
  (``billing.keys``), providers, roles and rules (``billing.access``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from sqlalchemy import Engine

from aibill.catalog import Catalog
from aibill.domain import errors as e
from aibill.domain.clock import Clock, system_clock
from aibill.domain.principal import SYSTEM, Principal, Scope
from aibill.domain.requests import CREDIT_REASONS, PERIODS
from aibill.service.access import Access
from aibill.service.context import Context
from aibill.service.keys import Keys
from aibill.service.limits import Limits
from aibill.service.money import MoneyPath
from aibill.service.pricing import Pricing
from aibill.service.reads import Reads
from aibill.service.tenants import Tenants
from aibill.service.upkeep import Upkeep
from aibill.store.group import GroupCommit

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["CREDIT_REASONS", "PERIODS", "Billing"]


class _Via(Generic[P, R]):
    """A method of :class:`Billing` that one of its capabilities does:
    ``hold = _Via("money", MoneyPath.hold)`` is ``billing.money.hold``, with
    its signature and docstring."""

    def __init__(self, part: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self._part = part
        self._method = method
        self._name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Callable[Concatenate[Any, P], R]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Callable[P, R]: ...

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:  # on the class: the capability's function, for help() and inspect
            return self._method
        method: Callable[P, R] = getattr(getattr(obj, self._part), self._name)
        return method


class Billing:
    """aibill's ledger: mandates, accounts, holds, captures, credits, history.

    Create it with :func:`aibill.connect`. It is safe to share between
    threads; a process that forks must create its own.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = system_clock,
        catalog: Catalog | None = None,
        group_commit: bool | None = None,
        key_cache_s: float = 0.0,
    ) -> None:
        """``group_commit``: concurrent money-path writes of this ledger share
        one transaction and one commit (concepts.md rule 13); off, each commits
        alone. ``None`` (the default): on, on both databases; it was measured
        faster or level in every case (docs/performance.md#group-commit).

        ``key_cache_s``: how long :meth:`authenticate` trusts an API key it
        verified without reading it again (0, the default: never; see
        :class:`~aibill.service.keys.Keys` and docs/api-keys.md)."""
        pricing = Pricing(engine, clock=clock, catalog=catalog)
        keys = Keys(engine, clock=clock, cache_s=key_cache_s)
        forget = functools.partial(keys.forget_holder, mandate=None)
        access = Access(engine, clock=clock, on_sysadmin_removed=forget)
        group = None if group_commit is False else GroupCommit(engine)
        self._compose(
            Context(engine, clock, SYSTEM, pricing=pricing, keys=keys, access=access, group=group)
        )

    def _compose(self, context: Context) -> None:
        self._cx = context
        self.pricing: Pricing = context.pricing
        """Exchange rates, markups and custom prices (:class:`~aibill.service.pricing.Pricing`)."""
        self.keys: Keys = context.keys
        """API keys: create (the secret shown once), list, revoke, authenticate."""
        self.access: Access = context.access
        """The provider registry, system admins, roles and rules."""
        self.money = MoneyPath(context)
        self.tenants = Tenants(context)
        self.limits = Limits(context)
        self.reads = Reads(context)
        self.upkeep = Upkeep(context)

    @property
    def engine(self) -> Engine:
        return self._cx.engine

    @property
    def principal(self) -> Principal:
        """Who this ledger acts for: the trusted system principal unless
        :meth:`as_principal` said otherwise."""
        return self._cx.principal

    @property
    def group_commit(self) -> GroupCommit | None:
        """What shares commits between this ledger's concurrent money-path
        writes (its ``batches`` and ``units`` count them), or None when off."""
        return self._cx.group

    @property
    def clock(self) -> Clock:
        """The clock every operation reads the time from."""
        return self._cx.clock

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
            self._cx.read(lambda conn: self._cx.authorize(conn, mandate, scope))
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
        view = Billing.__new__(Billing)
        view._compose(self._cx.acting_as(principal))
        return view

    def close(self) -> None:
        self._cx.engine.dispose()

    def __enter__(self) -> Billing:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # the money path (aibill.service.money)
    check = _Via("money", MoneyPath.check)
    estimate = _Via("money", MoneyPath.estimate)
    hold = _Via("money", MoneyPath.hold)
    capture = _Via("money", MoneyPath.capture)
    release = _Via("money", MoneyPath.release)
    record_usage = _Via("money", MoneyPath.record_usage)
    record_usage_batch = _Via("money", MoneyPath.record_usage_batch)
    credit = _Via("money", MoneyPath.credit)

    # tenants and members (aibill.service.tenants)
    create_mandate = _Via("tenants", Tenants.create_mandate)
    get_mandate = _Via("tenants", Tenants.get_mandate)
    mandates = _Via("tenants", Tenants.mandates)
    set_billing_model = _Via("tenants", Tenants.set_billing_model)
    members = _Via("tenants", Tenants.members)
    users = _Via("tenants", Tenants.users)
    add_user = _Via("tenants", Tenants.add_user)
    add_member = _Via("tenants", Tenants.add_member)
    set_overdraft_limit = _Via("tenants", Tenants.set_overdraft_limit)

    # spending limits (aibill.service.limits)
    set_spending_limit = _Via("limits", Limits.set_spending_limit)
    spending_limits = _Via("limits", Limits.spending_limits)

    # reading, reports and exports (aibill.service.reads)
    balance = _Via("reads", Reads.balance)
    accounts = _Via("reads", Reads.accounts)
    get_hold = _Via("reads", Reads.get_hold)
    open_holds = _Via("reads", Reads.open_holds)
    history = _Via("reads", Reads.history)
    audit_log = _Via("reads", Reads.audit_log)
    balances_for_user = _Via("reads", Reads.balances_for_user)
    usage_report = _Via("reads", Reads.usage_report)
    iter_history_csv = _Via("reads", Reads.iter_history_csv)
    export_history_csv = _Via("reads", Reads.export_history_csv)
    iter_usage_report_csv = _Via("reads", Reads.iter_usage_report_csv)
    export_usage_report_csv = _Via("reads", Reads.export_usage_report_csv)

    # verify and sweeps (aibill.service.upkeep)
    verify = _Via("upkeep", Upkeep.verify)
    sweep_expired = _Via("upkeep", Upkeep.sweep_expired)

    # provider permissions (aibill.service.access)

    def is_provider_allowed(self, mandate: str, user: str, provider: str) -> bool:
        """May ``user`` use ``provider`` in ``mandate`` now? False on any doubt,
        and for a principal that may not read ``mandate``."""
        return self.access.is_provider_allowed(mandate, user, provider)

    def allowed_providers(self, mandate: str, user: str) -> list[str]:
        """The enabled providers ``user`` may use in ``mandate``, sorted
        (``PermissionDenied`` for a principal that may not read ``mandate``)."""
        return self.access.allowed_providers(mandate, user)
