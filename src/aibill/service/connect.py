"""Open a ledger: build the engine, bring its schema up to date, and hand back
the :class:`~aibill.service.billing.Billing` service (``aibill.connect``)."""

from __future__ import annotations

from aibill.catalog import Catalog
from aibill.domain.clock import Clock, system_clock
from aibill.service.billing import Billing
from aibill.store.engine import make_engine
from aibill.store.migrate import upgrade

__all__ = ["connect"]


def connect(
    url: str = "sqlite:///aibill.db",
    *,
    clock: Clock = system_clock,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 5,
    migrate: bool = True,
    catalog: Catalog | None = None,
) -> Billing:
    """Open the ledger at ``url`` (SQLite or ``postgresql+psycopg://``) and bring
    its schema up to date.

    ``sqlite_synchronous`` trades durability for speed on SQLite: ``FULL``
    (the default) survives power loss; ``NORMAL`` may lose the last
    transactions on power loss (never on a process crash); ``OFF`` is for
    throwaway data only.
    """
    engine = make_engine(url, sqlite_synchronous=sqlite_synchronous, pool_size=pool_size)
    if migrate:
        upgrade(engine)
    return Billing(engine, clock=clock, catalog=catalog)
