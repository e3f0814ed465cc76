"""usage reports read daily rollups: running totals per mandate, UTC day and tags

``usage_days`` totals the usage debits per mandate, day, user, provider,
model, feature code and provider currency; ``usage_days_by_instance`` per
mandate, day, feature instance, provider, model, feature code and provider
currency. A trigger on ``entries`` adds each usage debit to its row
in both, in the debit's own transaction, so a rollup never disagrees with the
entries. Existing usage is totalled from the entries.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 23:10:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = {
    "usage_days": ("user_id", "provider", "model", "feature_code"),
    "usage_days_by_instance": ("feature_instance", "provider", "model", "feature_code"),
}
_SUMS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_micros",
    "cost_pico",
    "amount_micros",
)
_WHEN = "NEW.kind = 'debit' AND NEW.reason = 'usage'"
_LENGTHS = {
    "user_id": 128,
    "provider": 64,
    "model": 160,
    "feature_code": 64,
    "feature_instance": 128,
}


def _day(row: str, postgres: bool) -> str:
    """A debit's UTC day in each database's SQL; SQLite keeps times as
    SQLAlchemy's text "YYYY-MM-DD HH:MM:SS.ffffff"."""
    if postgres:
        return f"CAST(({row}posted_at AT TIME ZONE 'UTC') AS date)"
    return f"substr({row}posted_at, 1, 10)"


def _values(row: str) -> list[str]:
    """What one debit adds to each total (``row`` is ``NEW.`` or '')."""
    pico = f"{row}provider_cost_pico"
    return [
        "1",
        f"COALESCE({row}input_tokens, 0)",
        f"COALESCE({row}output_tokens, 0)",
        f"COALESCE({row}cache_read_tokens, 0)",
        f"COALESCE({row}cache_write_tokens, 0)",
        f"COALESCE({pico} / 1000000, 0)",
        f"COALESCE({pico} % 1000000, 0)",
        f"{row}amount_micros",
    ]


def _add(table: str, postgres: bool) -> str:
    """The upsert that adds ``NEW`` (a usage debit) to its row of ``table``."""
    tags = _TABLES[table]
    key = ["mandate_id", "day", *tags, "provider_currency"]
    values = [
        "NEW.mandate_id",
        _day("NEW.", postgres),
        *(f"COALESCE(NEW.{tag}, '')" for tag in tags),
        "COALESCE(NEW.provider_currency, '')",
        *_values("NEW."),
    ]
    sums = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in _SUMS)
    return (
        f"INSERT INTO {table} ({', '.join([*key, *_SUMS])}) VALUES ({', '.join(values)})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sums}"
    )


def _fill(table: str, postgres: bool) -> str:
    """The INSERT that totals the existing usage debits into ``table``."""
    tags = _TABLES[table]
    key = ["mandate_id", "day", *tags, "provider_currency"]
    groups = [
        "mandate_id",
        _day("", postgres),
        *(f"COALESCE({tag}, '')" for tag in tags),
        "COALESCE(provider_currency, '')",
    ]
    sums = ["COUNT(*)", *(f"SUM({v})" for v in _values("")[1:])]
    return (
        f"INSERT INTO {table} ({', '.join([*key, *_SUMS])})"
        f" SELECT {', '.join([*groups, *sums])} FROM entries"
        " WHERE kind = 'debit' AND reason = 'usage'"
        f" GROUP BY {', '.join(groups)}"
    )


def _create(table: str) -> None:
    columns: list[sa.Column[Any]] = [
        sa.Column("mandate_id", sa.String(128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(tag, sa.String(_LENGTHS[tag]), nullable=False) for tag in _TABLES[table]),
        sa.Column("provider_currency", sa.String(3), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _SUMS),
    ]
    key = ["mandate_id", "day", *_TABLES[table], "provider_currency"]
    op.create_table(
        table,
        *columns,
        sa.ForeignKeyConstraint(
            ["mandate_id"], ["mandates.mandate_id"], name=f"fk_{table}_mandate_id_mandates"
        ),
        sa.PrimaryKeyConstraint(*key, name=f"pk_{table}"),
        sqlite_with_rowid=False,
        postgresql_with={"fillfactor": 50},
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _TABLES:
        _create(table)
    adds = "; ".join(_add(table, postgres) for table in _TABLES)
    if postgres:
        op.execute(
            "CREATE FUNCTION aibill_roll_up_usage() RETURNS trigger LANGUAGE plpgsql"
            f" AS $$ BEGIN {adds}; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER entries_roll_up_usage AFTER INSERT ON entries FOR EACH ROW"
            f" WHEN ({_WHEN}) EXECUTE FUNCTION aibill_roll_up_usage()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER entries_roll_up_usage AFTER INSERT ON entries WHEN {_WHEN}"
            f" BEGIN {adds}; END"
        )
    for table in _TABLES:
        op.execute(_fill(table, postgres))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS entries_roll_up_usage ON entries")
        op.execute("DROP FUNCTION IF EXISTS aibill_roll_up_usage()")
    else:
        op.execute("DROP TRIGGER IF EXISTS entries_roll_up_usage")
    for table in _TABLES:
        op.drop_table(table)
