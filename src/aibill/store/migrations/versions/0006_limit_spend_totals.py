"""spending limits keep what their period has spent: a running total per limit

Each spending limit row gets ``spent_since`` (the start of the period counted)
and ``spent_micros`` (what the subject's debits add up to since then, in that
period). A trigger on ``entries`` adds each debit to the limits of its user
and feature instance, in the debit's own transaction; a debit of a later
period starts the count again. Existing limits are counted from their
entries for the period running now.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 19:10:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import aibill.store.types
from aibill.domain.rules import period_start

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHEN = "NEW.kind = 'debit' AND (NEW.user_id IS NOT NULL OR NEW.feature_instance IS NOT NULL)"
_COLUMNS = {"user": "user_id", "feature_instance": "feature_instance"}

# The start of a debit's period, and of the next, as aibill.domain.rules
# period_start and period_end compute them (UTC day, ISO week from Monday,
# calendar month), in each database's SQL; SQLite keeps times as SQLAlchemy's
# text "YYYY-MM-DD HH:MM:SS.ffffff".
_SQLITE_START = (
    "(CASE period WHEN 'day' THEN date(NEW.posted_at)"
    " WHEN 'week' THEN date(NEW.posted_at, '-6 days', 'weekday 1')"
    " ELSE date(NEW.posted_at, 'start of month') END || ' 00:00:00.000000')"
)
_SQLITE_END = (
    "(CASE period WHEN 'day' THEN date(NEW.posted_at, '+1 day')"
    " WHEN 'week' THEN date(NEW.posted_at, '-6 days', 'weekday 1', '+7 days')"
    " ELSE date(NEW.posted_at, 'start of month', '+1 month') END || ' 00:00:00.000000')"
)
_PG_START = "aibill_period_start(NEW.posted_at, period)"
_PG_END = (
    "(aibill_period_start(NEW.posted_at, period) + CASE period WHEN 'day' THEN interval '1 day'"
    " WHEN 'week' THEN interval '7 days' ELSE interval '1 month' END)"
)


def _count(scope: str, start: str, end: str, greatest: str) -> str:
    """The UPDATE that counts a new debit in its ``scope``'s limits: added to
    the period being counted; the first debit of a later period starts that
    period's count from its entries (the debit included), so a debit written
    earlier with a clock ahead is not lost; one of an earlier period leaves
    the count as it is."""
    column = _COLUMNS[scope]
    recount = (
        "(SELECT COALESCE(SUM(e.amount_micros), 0) FROM entries e"
        f" WHERE e.mandate_id = NEW.mandate_id AND e.{column} = NEW.{column}"
        f" AND e.kind = 'debit' AND e.posted_at >= {start} AND e.posted_at < {end})"
    )
    return (
        "UPDATE spending_limits SET"
        f" spent_micros = CASE WHEN spent_since = {start} THEN spent_micros + NEW.amount_micros"
        f" WHEN spent_since < {start} THEN {recount} ELSE spent_micros END,"
        f" spent_since = {greatest}(spent_since, {start})"
        f" WHERE mandate_id = NEW.mandate_id AND scope = '{scope}' AND subject = NEW.{column}"
    )


def _counts(start: str, end: str, greatest: str) -> str:
    return "; ".join(_count(scope, start, end, greatest) for scope in _COLUMNS)


def upgrade() -> None:
    with op.batch_alter_table("spending_limits") as batch:
        batch.add_column(
            sa.Column(
                "spent_since",
                aibill.store.types.UTCDateTime(timezone=True),
                nullable=False,
                server_default="1970-01-01 00:00:00.000000",  # counted below
            )
        )
        batch.add_column(
            sa.Column("spent_micros", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("spending_limits") as batch:
        batch.alter_column("spent_since", server_default=None)
        batch.alter_column("spent_micros", server_default=None)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION aibill_period_start(at timestamptz, period text)"
            " RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$ SELECT date_trunc("
            "CASE period WHEN 'day' THEN 'day' WHEN 'week' THEN 'week' ELSE 'month' END,"
            " at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' $$"
        )
        op.execute(
            "CREATE FUNCTION aibill_count_limit_spend() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN"
            # Most mandates have no limit: one probe of the key instead of two UPDATEs.
            " IF NOT EXISTS (SELECT 1 FROM spending_limits WHERE mandate_id = NEW.mandate_id)"
            " THEN RETURN NULL; END IF;"
            f" {_counts(_PG_START, _PG_END, 'GREATEST')}; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER entries_count_limit_spend AFTER INSERT ON entries FOR EACH ROW"
            f" WHEN ({_WHEN}) EXECUTE FUNCTION aibill_count_limit_spend()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER entries_count_limit_spend AFTER INSERT ON entries WHEN {_WHEN}"
            " AND EXISTS (SELECT 1 FROM spending_limits WHERE mandate_id = NEW.mandate_id)"
            f" BEGIN {_counts(_SQLITE_START, _SQLITE_END, 'max')}; END"
        )
    _count_existing()


def _count_existing() -> None:
    """Count each existing limit's period running now from its entries."""
    conn = op.get_bind()
    limits = sa.table(
        "spending_limits",
        sa.column("mandate_id"),
        sa.column("scope"),
        sa.column("subject"),
        sa.column("period"),
        sa.column("spent_since", aibill.store.types.UTCDateTime(timezone=True)),
        sa.column("spent_micros", sa.BigInteger()),
    )
    entries = sa.table(
        "entries",
        sa.column("mandate_id"),
        sa.column("kind"),
        sa.column("amount_micros", sa.BigInteger()),
        sa.column("user_id"),
        sa.column("feature_instance"),
        sa.column("posted_at", aibill.store.types.UTCDateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    rows = conn.execute(
        sa.select(limits.c.mandate_id, limits.c.scope, limits.c.subject, limits.c.period)
    ).all()
    for mandate, scope, subject, period in rows:
        start = period_start(now, period)
        column = entries.c.user_id if scope == "user" else entries.c.feature_instance
        spent = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(entries.c.amount_micros), 0)).where(
                entries.c.mandate_id == mandate,
                entries.c.kind == "debit",
                column == subject,
                entries.c.posted_at >= start,
            )
        ).scalar_one()
        conn.execute(
            limits.update()
            .where(
                limits.c.mandate_id == mandate,
                limits.c.scope == scope,
                limits.c.subject == subject,
                limits.c.period == period,
            )
            .values(spent_since=start, spent_micros=int(spent))
        )


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER IF EXISTS entries_count_limit_spend ON entries"
        if op.get_bind().dialect.name == "postgresql"
        else "DROP TRIGGER IF EXISTS entries_count_limit_spend"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS aibill_count_limit_spend()")
        op.execute("DROP FUNCTION IF EXISTS aibill_period_start(timestamptz, text)")
    with op.batch_alter_table("spending_limits") as batch:
        batch.drop_column("spent_micros")
        batch.drop_column("spent_since")
