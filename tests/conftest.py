"""Fixtures: every ledger test runs on a real SQLite file and a real PostgreSQL.

PostgreSQL is at ``AIBILL_TEST_PG`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``,
used only to create throwaway databases). Each test gets an empty, migrated
database of its own: on SQLite a copy of a file migrated once; on PostgreSQL a
clone of a migrated template, emptied and handed to the next test when this one
is done (see ``PostgresServer``). When ``CI=true`` an unreachable PostgreSQL
fails the PostgreSQL tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
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


# What a database's schema is made of, counted: a test that changed it (dropped a
# constraint to stage an impossible state) leaves a database that is not reused.
SCHEMA_FINGERPRINT = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'),
       (SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE n.nspname = 'public'),
       (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND NOT t.tgisinternal),
       (SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'),
       (SELECT version_num FROM alembic_version)
"""


class PostgresServer:
    """Hands out migrated, empty databases on the test PostgreSQL.

    The first is cloned from a template migrated once. A database a test is
    done with is emptied (its connections ended, every row deleted) and handed
    out again, unless the test changed its schema; emptying costs a few
    milliseconds where cloning costs a few hundred (it copies and syncs every
    file of the template).
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self._admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.template: str | None = None
        self.error: str | None = None
        self._fingerprint: tuple[object, ...] | None = None
        self._spare: list[str] = []
        self._made: set[str] = set()
        try:
            with self._admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            where = self.admin_url.render_as_string(hide_password=True)
            self.error = f"PostgreSQL at {where} is unreachable: {exc}"

    def url(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def _conninfo(self, database: str) -> str:
        url = self.admin_url.set(drivername="postgresql", database=database)
        return url.render_as_string(hide_password=False)

    def _exec(self, sql: str) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(sql))

    def create(self) -> str:
        """A migrated database with no rows; returns its URL."""
        if self.template is None:
            name = f"aibill_tmpl_{uuid.uuid4().hex[:10]}"
            self._exec(f'CREATE DATABASE "{name}"')
            billing = aibill.connect(self.url(name))
            billing.close()
            with psycopg.connect(self._conninfo(name)) as conn:
                self._fingerprint = tuple(conn.execute(SCHEMA_FINGERPRINT).fetchone() or ())
            self.template = name
        if self._spare:
            return self.url(self._spare.pop())
        name = f"aibill_t_{uuid.uuid4().hex[:12]}"
        self._exec(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self._made.add(name)
        return self.url(name)

    def drop(self, url: str) -> None:
        """Done with ``url``: emptied for the next test, or dropped."""
        name = make_url(url).database
        assert name
        if name in self._made and self._empty(name):
            self._spare.append(name)
            return
        self._made.discard(name)
        self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _empty(self, name: str) -> bool:
        """End every other connection to ``name`` and delete every row (triggers,
        the append-only ones and the foreign keys' too, off for this); False when
        its schema is no longer the template's or it cannot be done."""
        try:
            with psycopg.connect(self._conninfo(name), autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if tuple(conn.execute(SCHEMA_FINGERPRINT).fetchone() or ()) != self._fingerprint:
                    return False
                tables = [
                    row[0]
                    for row in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                        " AND tablename <> 'alembic_version'"
                    )
                ]
                with conn.transaction():
                    conn.execute("SET LOCAL session_replication_role = replica")
                    conn.execute("SET LOCAL lock_timeout = '5s'")
                    for table in tables:
                        conn.execute(f'DELETE FROM "{table}"')  # type: ignore[arg-type]
            return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        for name in self._made:  # the spare ones among them
            self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
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


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite ledger, made once per test process and copied for
    each test (migrating a new file costs more than most tests themselves)."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    aibill.connect(f"sqlite:///{path}").close()
    # Closed cleanly, SQLite folds its write-ahead log into the file and removes
    # it: the one file is the whole database.
    assert not path.with_name("ledger.db-wal").exists()
    return path


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty (migrated) database URL on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
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
