"""What the parts of the pricing service share: the store, the clock, the
price catalog, and the principal a call acts for (see
:class:`aibill.service.pricing.Pricing`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine

from aibill.catalog import Catalog
from aibill.domain.clock import Clock, system_clock
from aibill.domain.errors import PermissionDenied, UnknownMandate
from aibill.domain.principal import Scope
from aibill.domain.times import check_time
from aibill.service.hooks import Auditor, Guard, SettingsService
from aibill.store import ledger


class PricingBase(SettingsService):
    """The engine, clock and catalog of a pricing service, a unit of work per
    call, and the guard and audit writer of the principal it acts for."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = system_clock,
        catalog: Catalog | None = None,
        guard: Guard | None = None,
        auditor: Auditor | None = None,
    ) -> None:
        super().__init__(engine, clock=clock, guard=guard, auditor=auditor)
        self._catalog = catalog if catalog is not None else Catalog()

    @property
    def catalog(self) -> Catalog:
        """The provider price catalog used when no custom price applies."""
        return self._catalog

    def _now(self) -> datetime:
        return check_time(self._clock(), "clock")

    def _guard_call_cost(self, conn: Connection, mandate: str) -> None:
        """What a call in ``mandate`` will cost (its markup, a model's price):
        for a key that makes calls there (``billing:use``, as ``estimate``
        tells it) or reads it (``billing:read``)."""
        try:
            self._authorize(conn, mandate, Scope.USE)
        except PermissionDenied:
            self._authorize(conn, mandate, Scope.READ)


def require_mandate(conn: Connection, mandate: str) -> None:
    """Raise ``UnknownMandate`` unless the mandate exists."""
    if ledger.mandate(conn, mandate, None, None) is None:
        raise UnknownMandate(mandate)


def stored_decimal(value: Decimal) -> str:
    """How an exact Decimal is stored: plain notation, never an exponent."""
    return format(value, "f")


def optional_stored_decimal(value: Decimal | None) -> str | None:
    """:func:`stored_decimal`, None kept."""
    return None if value is None else stored_decimal(value)
