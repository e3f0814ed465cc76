"""Open a ledger: build the engine, bring its schema up to date, and hand back
the :class:`~aibill.service.billing.Billing` service (``aibill.connect``)."""

from __future__ import annotations

from aibill.catalog import Catalog
from aibill.domain.clock import Clock, system_clock
from aibill.service.billing import Billing
from aibill.service.root import DEFAULT_DATABASE_URL, open_billing

__all__ = ["connect"]


def connect(
    url: str = DEFAULT_DATABASE_URL,
    *,
    clock: Clock = system_clock,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 5,
    migrate: bool = True,
    catalog: Catalog | None = None,
    group_commit: bool | None = None,
) -> Billing:
    """Open the ledger at ``url`` (SQLite or ``postgresql+psycopg://``) and bring
    its schema up to date.

    ``sqlite_synchronous`` trades durability for speed on SQLite: ``FULL``
    (the default) survives power loss; ``NORMAL`` may lose the last
    transactions on power loss (never on a process crash); ``OFF`` is for
    throwaway data only.

    ``group_commit``: holds, captures, releases, usage records and credits in
    flight at once in this process share one transaction and one commit, each
    with its own outcome, none acknowledged before the commit
    (docs/concepts.md rule 13); a lone operation is not delayed. By default
    (``None``) it is on for SQLite and off for PostgreSQL, where it was
    measured slower; ``True`` or ``False`` decides.
    """
    return open_billing(
        url,
        clock=clock,
        catalog=catalog,
        migrate=migrate,
        pool_size=pool_size,
        sqlite_synchronous=sqlite_synchronous,
        group_commit=group_commit,
    )
