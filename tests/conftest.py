"""Fixtures: every ledger test runs on a real SQLite file and a real PostgreSQL.

PostgreSQL is at ``AIBILL_TEST_PG`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``,
used only to create throwaway databases). Each test gets its own database,
cloned from a migrated template. When ``CI=true`` an unreachable PostgreSQL
fails the PostgreSQL tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import aibill
from aibill import Billing, ManualClock

PG_ADMIN_URL = os.environ.get(
    "AIBILL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ["sqlite", "postgres"]


class PostgresServer:
    """Creates and drops throwaway databases on the test PostgreSQL."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self._admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.template: str | None = None
        self.error: str | None = None
        try:
            with self._admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            where = self.admin_url.render_as_string(hide_password=True)
            self.error = f"PostgreSQL at {where} is unreachable: {exc}"

    def url(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def _exec(self, sql: str) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(sql))

    def create(self) -> str:
        """A new, migrated, empty database; returns its URL."""
        if self.template is None:
            name = f"aibill_tmpl_{uuid.uuid4().hex[:10]}"
            self._exec(f'CREATE DATABASE "{name}"')
            billing = aibill.connect(self.url(name))
            billing.close()
            self.template = name
        name = f"aibill_t_{uuid.uuid4().hex[:12]}"
        self._exec(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        if self.template:
            self._exec(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self._admin.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer(PG_ADMIN_URL)
    yield server
    if server.error is None:
        server.close()


def need_pg(server: PostgresServer) -> None:
    if server.error is not None:
        if IN_CI:
            pytest.fail(f"CI=true requires PostgreSQL: {server.error}")
        pytest.skip(server.error)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    need_pg(server)
    url = server.create()
    yield url
    server.drop(url)


@pytest.fixture
def backend(db_url: str) -> str:
    return "postgres" if db_url.startswith("postgresql") else "sqlite"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def billing(db_url: str, clock: ManualClock) -> Iterator[Billing]:
    b = aibill.connect(db_url, clock=clock)
    yield b
    b.close()


@pytest.fixture
def pg_billing(pg_server: PostgresServer, clock: ManualClock) -> Iterator[Billing]:
    """A ledger on a fresh PostgreSQL database only (for what only a server does)."""
    need_pg(pg_server)
    url = pg_server.create()
    b = aibill.connect(url, clock=clock)
    yield b
    b.close()
    pg_server.drop(url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "postgres":
            item.add_marker(pytest.mark.postgres)
