"""Where every program opens its ledger: the engine with its timeouts, the
schema brought up to date, the price catalog and the
:class:`~aibill.service.billing.Billing` service.

``aibill.connect``, ``aibill serve`` (and each of its worker processes), the
command line on a local database and the seed's billing interface all open
their ledger with :func:`open_billing` (the server through
:func:`open_configured`, which reads its settings).
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Engine

from aibill.catalog import Catalog
from aibill.domain.clock import Clock, system_clock
from aibill.service.billing import Billing
from aibill.service.keys import check_cache_s
from aibill.settings import Settings
from aibill.store.engine import DEFAULT_TIMEOUTS, StoreTimeouts, make_engine
from aibill.store.migrate import upgrade

__all__ = [
    "DEFAULT_DATABASE_URL",
    "MIGRATION_STATEMENT_TIMEOUT_S",
    "open_billing",
    "open_configured",
    "store_timeouts",
]

DEFAULT_DATABASE_URL = "sqlite:///aibill.db"
MIGRATION_STATEMENT_TIMEOUT_S = 3600.0
"""How long one migration statement may run on PostgreSQL (rewriting a large
table can take longer than a request may)."""


def open_billing(
    url: str = DEFAULT_DATABASE_URL,
    *,
    clock: Clock = system_clock,
    catalog: Catalog | None = None,
    migrate: bool = True,
    pool_size: int = 5,
    sqlite_synchronous: str = "FULL",
    timeouts: StoreTimeouts = DEFAULT_TIMEOUTS,
    migration_statement_s: float | None = None,
    group_commit: bool | None = None,
    key_cache_s: float = 0.0,
) -> Billing:
    """The ledger at ``url`` (SQLite or PostgreSQL), its schema brought up to
    date unless ``migrate`` is False.

    The engine keeps at most ``pool_size`` idle connections and gives up after
    ``timeouts``. With ``migration_statement_s``, the migrations run on
    PostgreSQL on an engine of their own whose statements may take that long;
    otherwise (and always on SQLite, which has no statement timeout and whose
    in-memory ledger lives in one engine) on the ledger's engine. A schema that
    cannot be brought up to date closes the engine and raises. ``group_commit``
    and ``key_cache_s``: see :class:`~aibill.service.billing.Billing`.
    """
    check_cache_s(key_cache_s)  # before anything is opened
    engine = make_engine(
        url, sqlite_synchronous=sqlite_synchronous, pool_size=pool_size, timeouts=timeouts
    )
    if migrate:
        try:
            _upgrade(engine, url, timeouts, migration_statement_s)
        except BaseException:
            engine.dispose()
            raise
    return Billing(
        engine,
        clock=clock,
        catalog=catalog if catalog is not None else Catalog(),
        group_commit=group_commit,
        key_cache_s=key_cache_s,
    )


def _upgrade(engine: Engine, url: str, timeouts: StoreTimeouts, statement_s: float | None) -> None:
    """Bring the schema up to date, on PostgreSQL with ``statement_s`` (when
    given) on a one-connection engine closed afterwards."""
    if statement_s is None or engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    long = replace(timeouts, statement_s=statement_s)
    migrating = make_engine(url, pool_size=1, timeouts=long)
    try:
        upgrade(migrating)
    finally:
        migrating.dispose()


def store_timeouts(settings: Settings) -> StoreTimeouts:
    """The store's timeouts the settings give (``AIBILL_DB_*_TIMEOUT_S``)."""
    return StoreTimeouts(
        connect_s=settings.db_connect_timeout_s,
        statement_s=settings.db_statement_timeout_s,
        pool_s=settings.db_pool_timeout_s,
    )


def open_configured(settings: Settings) -> Billing:
    """The server's ledger: the settings' database, durability and timeouts,
    its schema brought up to date by migrations that may run for up to
    :data:`MIGRATION_STATEMENT_TIMEOUT_S` each on PostgreSQL."""
    return open_billing(
        settings.database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        timeouts=store_timeouts(settings),
        migration_statement_s=MIGRATION_STATEMENT_TIMEOUT_S,
        group_commit=settings.group_commit,
        key_cache_s=settings.key_cache_s,
    )
