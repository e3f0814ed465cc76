"""The tables. Every table carries ``mandate_id`` and every key starts with it
(DESIGN rule 9), so the schema can be sharded by mandate unchanged. The one
exception is ``users``: an identity is platform-wide (a user belongs to
several mandates) and would be a reference table on a sharded cluster.

Each ledger rule is checked twice: in Python before the write and by a
constraint here (amounts positive, counters never negative, one outcome per
hold, entries that cannot be updated or deleted).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from aibill.store.types import UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

mandates = Table(
    "mandates",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("billing_model", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint(
        "billing_model IN ('unlimited', 'prepay_mandate', 'prepay_user')", name="billing_model"
    ),
)

users = Table(
    "users",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    ForeignKeyConstraint(["mandate_id"], ["mandates.mandate_id"]),
    ForeignKeyConstraint(["user_id"], ["users.user_id"]),
)

accounts = Table(
    "accounts",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("account_id", String(160), primary_key=True),
    Column("user_id", String(128), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("credits_posted", BigInteger, nullable=False, server_default=text("0")),
    Column("debits_posted", BigInteger, nullable=False, server_default=text("0")),
    Column("debits_pending", BigInteger, nullable=False, server_default=text("0")),
    Column("overdraft_limit", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime(), nullable=False),
    ForeignKeyConstraint(["mandate_id"], ["mandates.mandate_id"]),
    CheckConstraint("credits_posted >= 0", name="credits_posted_nonneg"),
    CheckConstraint("debits_posted >= 0", name="debits_posted_nonneg"),
    CheckConstraint("debits_pending >= 0", name="debits_pending_nonneg"),
    CheckConstraint("overdraft_limit >= 0", name="overdraft_limit_nonneg"),
)

holds = Table(
    "holds",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("hold_id", String(200), primary_key=True),
    Column("account_id", String(160), nullable=False),
    Column("user_id", String(128), nullable=True),
    Column("amount_micros", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("resolved_at", UTCDateTime(), nullable=True),
    Column("captured_micros", BigInteger, nullable=True),
    Column("entry_id", String(64), nullable=True),
    Column("metadata", JSON, nullable=False),
    ForeignKeyConstraint(
        ["mandate_id", "account_id"], ["accounts.mandate_id", "accounts.account_id"]
    ),
    CheckConstraint("amount_micros > 0", name="amount_positive"),
    CheckConstraint(
        "status IN ('pending', 'captured', 'released', 'expired')", name="status_known"
    ),
    CheckConstraint(
        "(status = 'captured') = (entry_id IS NOT NULL AND captured_micros IS NOT NULL)",
        name="captured_has_entry",
    ),
    Index(None, "mandate_id", "account_id", "status", "expires_at"),
)

entries = Table(
    "entries",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("entry_id", String(64), primary_key=True),
    Column("account_id", String(160), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("posted_at", UTCDateTime(), nullable=False),
    Column("balance_after_micros", BigInteger, nullable=False),
    Column("user_id", String(128), nullable=True),
    Column("hold_id", String(200), nullable=True),
    Column("over_balance", Boolean, nullable=False),
    Column("shortfall_micros", BigInteger, nullable=False),
    Column("captured_after_expiry", Boolean, nullable=False),
    Column("corrects_entry_id", String(64), nullable=True),
    Column("description", Text, nullable=True),
    Column("metadata", JSON, nullable=False),
    ForeignKeyConstraint(
        ["mandate_id", "account_id"], ["accounts.mandate_id", "accounts.account_id"]
    ),
    ForeignKeyConstraint(
        ["mandate_id", "corrects_entry_id"], ["entries.mandate_id", "entries.entry_id"]
    ),
    CheckConstraint("amount_micros > 0", name="amount_positive"),
    CheckConstraint("kind IN ('credit', 'debit')", name="kind_known"),
    CheckConstraint("shortfall_micros >= 0", name="shortfall_nonneg"),
    CheckConstraint("over_balance OR shortfall_micros = 0", name="shortfall_marked"),
    Index(None, "mandate_id", "posted_at", "entry_id"),
    Index(None, "mandate_id", "account_id", "posted_at", "entry_id"),
    Index(None, "mandate_id", "hold_id", unique=True),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("idempotency_key", String(200), primary_key=True),
    Column("operation", String(32), nullable=False),
    Column("request", JSON, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("result", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint("outcome IN ('ok', 'refused')", name="outcome_known"),
)
