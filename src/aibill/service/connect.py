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
    key_cache_s: float = 0.0,
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
    (docs/concepts.md rule 13); a lone operation is not delayed. On by
    default (``None``); ``False`` switches it off.

    ``key_cache_s``: how many seconds ``billing.authenticate`` may trust an API
    key it verified without reading it again (at most 60; never past the key's
    expiry; a revocation through this ledger is seen at once, one by another
    process within that time). 0, the default, reads the key each time;
    ``aibill serve`` uses 1 (``AIBILL_KEY_CACHE_S``).
    """
    return open_billing(
        url,
        clock=clock,
        catalog=catalog,
        migrate=migrate,
        pool_size=pool_size,
        sqlite_synchronous=sqlite_synchronous,
        group_commit=group_commit,
        key_cache_s=key_cache_s,
    )
