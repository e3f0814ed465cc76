"""A page's cursor is an index condition on both databases, so a page deep in a
big ledger costs what the first page costs (and an export, which reads page
after page, runs at the speed of its writer). The test asks each database how
it would run the statement the library sent for a deep page; and the schema
the migrations build is the one the code declares (the indexes included)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal as D
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, text

from aibill import Billing, UsageRecord
from aibill.store.schema import metadata


def _plan(billing: Billing, table: str, read: Callable[[], Any]) -> str:
    """How the database runs the paged SELECT on ``table`` that ``read`` sends."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if f"FROM {table}" in statement and "ORDER BY" in statement:
            sent.append((statement, params))

    event.listen(billing.engine, "before_cursor_execute", capture)
    try:
        read()
    finally:
        event.remove(billing.engine, "before_cursor_execute", capture)
    statement, params = sent[-1]
    with billing.engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if billing.engine.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
            return " ".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = off")  # a small table would be scanned anyway
        cursor.execute("EXPLAIN " + statement, params)
        return " ".join(row[0] for row in cursor.fetchall())


def _is_index_condition(plan: str, first: str, second: str) -> bool:
    if "SEARCH" in plan:  # SQLite: the row comparison is among the index's constraints
        return f"({first},{second})<(?,?)" in plan
    return "Index Cond" in plan and f"ROW({first}, ({second})::text) <" in plan


@pytest.fixture
def busy(billing: Billing) -> Iterator[Billing]:
    """A mandate with some history, and the planner's statistics of it: a
    plan for a nearly empty table is the planner's guess, not what a ledger
    that has grown gets."""
    billing.create_mandate("acme", currency="USD")
    billing.credit("acme", D("100"), idempotency_key="funding")
    for i in range(6):
        billing.record_usage("acme", amount=D("0.01"), idempotency_key=f"u{i}")
        billing.set_overdraft_limit("acme", D(i))
    billing.record_usage_batch(
        [
            UsageRecord("acme", f"b{i}", amount=D("0.01"), workflow_id=f"wf-{i % 100}")
            for i in range(600)
        ]
    )
    with billing.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    yield billing


def test_a_deep_history_page_is_an_index_condition(busy: Billing) -> None:
    first = busy.history("acme", limit=2)
    assert first.cursor is not None
    plan = _plan(busy, "entries", lambda: busy.history("acme", limit=2, cursor=first.cursor))
    assert _is_index_condition(plan, "posted_at", "entry_id"), plan
    second = busy.history("acme", limit=2, cursor=first.cursor)
    every = busy.history("acme", limit=4).entries
    assert [e.id for e in first.entries + second.entries] == [e.id for e in every]


def test_a_deep_audit_page_is_an_index_condition(busy: Billing) -> None:
    first = busy.audit_log("acme", limit=2)
    assert first.cursor is not None
    plan = _plan(busy, "audit_log", lambda: busy.audit_log("acme", limit=2, cursor=first.cursor))
    assert _is_index_condition(plan, "at", "audit_id"), plan
    second = busy.audit_log("acme", limit=2, cursor=first.cursor)
    every = busy.audit_log("acme", limit=100).records
    assert first.records + second.records == every[:4]


def test_the_migrations_build_the_declared_schema(billing: Billing) -> None:
    with billing.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_a_workflows_history_reads_its_own_index(busy: Billing) -> None:
    """A workflow is rare in a big ledger: its page reads the workflow's index,
    not the mandate's whole history."""
    first = busy.history("acme", workflow_id="wf-7", limit=2)
    assert first.cursor is not None
    plan = _plan(
        busy, "entries", lambda: busy.history("acme", workflow_id="wf-7", cursor=first.cursor)
    )
    assert "ix_entries_mandate_id_workflow_id_posted_at_entry_id" in plan, plan
