"""The tables. Every table carries ``mandate_id`` and every key starts with it
(concepts.md rule 9), so the schema can be sharded by mandate unchanged. The
exceptions are the platform-wide *reference tables* (``REFERENCE_TABLES``):
identities (a user belongs to several mandates), exchange rates, and the platform's own prices and
markups. They hold no mandate's data and would be replicated to every node of
a sharded cluster, so a mandate's transaction can read them locally.

Each ledger rule is checked twice: in Python before the write and by a
constraint here (amounts positive, counters never negative, one outcome per
hold, entries that cannot be updated or deleted).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
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
REFERENCE_TABLES = frozenset(
    {
        "users",
        "exchange_rates",
        "platform_prices",
        "platform_markups",
        "providers",
        "platform_admins",
        "platform_api_keys",
        "platform_audit_log",
        "platform_web_sessions",
        "alembic_version",
    }
)


def _usage_columns() -> list[Column[Any]]:
    """What a priced call is about: tagged on holds and on the entries they post."""
    return [
        Column("provider", String(64), nullable=True),
        Column("model", String(160), nullable=True),
        Column("model_matched", String(160), nullable=True),
        Column("feature_code", String(64), nullable=True),
        Column("feature_instance", String(128), nullable=True),
        Column("workflow_id", String(128), nullable=True),
    ]


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
    *_usage_columns(),
    Column("estimate", JSON, nullable=True),
    ForeignKeyConstraint(
        ["mandate_id", "account_id"], ["accounts.mandate_id", "accounts.account_id"]
    ),
    CheckConstraint("amount_micros >= 0", name="amount_nonneg"),
    CheckConstraint(
        "status IN ('pending', 'captured', 'released', 'expired')", name="status_known"
    ),
    CheckConstraint(
        "(status = 'captured') = (entry_id IS NOT NULL AND captured_micros IS NOT NULL)",
        name="captured_has_entry",
    ),
    Index(None, "mandate_id", "account_id", "status", "expires_at"),
    Index(None, "mandate_id", "status", "user_id"),
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
    *_usage_columns(),
    Column("input_tokens", BigInteger, nullable=True),
    Column("output_tokens", BigInteger, nullable=True),
    Column("cache_read_tokens", BigInteger, nullable=True),
    Column("cache_write_tokens", BigInteger, nullable=True),
    # Exact provider cost in pico-units (10^-12) of provider_currency: a
    # per-million-token price with six decimals times whole tokens is exact.
    Column("provider_cost_pico", BigInteger, nullable=True),
    Column("provider_currency", String(3), nullable=True),
    Column("price_source", String(160), nullable=True),
    Column("fx_rate", String(40), nullable=True),
    Column("markup_percent", String(40), nullable=True),
    Column("breakdown", JSON, nullable=True),
    # Which spending limit this usage went past (usage that happened is recorded anyway).
    Column("over_limit", String(64), nullable=True),
    # Usage that happened on a provider the user may not use is recorded, and marked.
    Column("provider_not_allowed", Boolean, nullable=True),
    ForeignKeyConstraint(
        ["mandate_id", "account_id"], ["accounts.mandate_id", "accounts.account_id"]
    ),
    ForeignKeyConstraint(
        ["mandate_id", "corrects_entry_id"], ["entries.mandate_id", "entries.entry_id"]
    ),
    # A priced call may cost nothing (a free model, zero tokens); a credit never.
    CheckConstraint(
        "amount_micros > 0 OR (kind = 'debit' AND amount_micros = 0)", name="amount_positive"
    ),
    CheckConstraint("kind IN ('credit', 'debit')", name="kind_known"),
    CheckConstraint("shortfall_micros >= 0", name="shortfall_nonneg"),
    CheckConstraint("over_balance OR shortfall_micros = 0", name="shortfall_marked"),
    Index(None, "mandate_id", "posted_at", "entry_id"),
    Index(None, "mandate_id", "account_id", "posted_at", "entry_id"),
    Index(None, "mandate_id", "hold_id", unique=True),
    Index(None, "mandate_id", "user_id", "posted_at"),
    Index(None, "mandate_id", "feature_instance", "posted_at"),
    # A workflow is looked up on its own, and is rare in a big ledger.
    Index(None, "mandate_id", "workflow_id", "posted_at", "entry_id"),
)


def _usage_rollup(name: str, *tags: Column[Any]) -> Table:
    """A running total of usage debits (``kind = 'debit'``, ``reason =
    'usage'``) per mandate, UTC day, ``tags`` and provider currency, kept by a
    trigger on entries in the debit's own transaction (migration 0008), so
    that a usage report over whole days reads one row per group and day,
    whatever the number of calls. An untagged value is kept as '' (a stored
    tag is never empty), so that the key is one unique row on both databases.
    The provider cost is kept in two halves, like the report sums it: whole
    micro-units and the pico rest."""
    return Table(
        name,
        metadata,
        Column("mandate_id", String(128), primary_key=True),
        Column("day", Date, primary_key=True),
        *tags,
        Column("provider", String(64), primary_key=True),
        Column("model", String(160), primary_key=True),
        Column("feature_code", String(64), primary_key=True),
        Column("provider_currency", String(3), primary_key=True),
        Column("calls", BigInteger, nullable=False),
        Column("input_tokens", BigInteger, nullable=False),
        Column("output_tokens", BigInteger, nullable=False),
        Column("cache_read_tokens", BigInteger, nullable=False),
        Column("cache_write_tokens", BigInteger, nullable=False),
        Column("cost_micros", BigInteger, nullable=False),
        Column("cost_pico", BigInteger, nullable=False),
        Column("amount_micros", BigInteger, nullable=False),
        ForeignKeyConstraint(["mandate_id"], ["mandates.mandate_id"]),
        # Kept in key order on SQLite, so that a range of days is read in
        # one pass; room on each page on PostgreSQL, so that an update can
        # stay on its page (a HOT update) instead of bloating the table.
        sqlite_with_rowid=False,
        postgresql_with={"fillfactor": 50},
    )


# Two rollups, each small whatever the number of calls: per user (the reports
# by user, and every report the dashboard draws), and per feature instance.
# Users and instances multiply: a report that needs both, or a workflow (a
# run, not a dimension to roll up), reads the entries, through the user's,
# the instance's or the workflow's index when it filters by one.
usage_days = _usage_rollup("usage_days", Column("user_id", String(128), primary_key=True))
usage_days_by_instance = _usage_rollup(
    "usage_days_by_instance", Column("feature_instance", String(128), primary_key=True)
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


# -------------------------------------------------------------------- pricing
# Decimal values that must stay exact (rates, prices, percentages) are stored
# as decimal strings: neither backend gets a chance to round them.

exchange_rates = Table(
    "exchange_rates",
    metadata,
    Column("base", String(3), primary_key=True),
    Column("quote", String(3), primary_key=True),
    Column("valid_from", UTCDateTime(), primary_key=True),
    Column("rate", String(40), nullable=False),
    Column("source", String(64), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
)


def _price_columns() -> list[Column[Any]]:
    return [
        Column("provider", String(64), primary_key=True),
        Column("model", String(160), primary_key=True),
        Column("valid_from", UTCDateTime(), primary_key=True),
        Column("price_id", String(64), nullable=False),
        Column("currency", String(3), nullable=False),
        # Per million tokens, and per request; NULL: the model has no such price.
        Column("input_mtok", String(40), nullable=False),
        Column("output_mtok", String(40), nullable=False),
        Column("cache_read_mtok", String(40), nullable=True),
        Column("cache_write_mtok", String(40), nullable=True),
        Column("per_request", String(40), nullable=True),
        Column("output_limit", BigInteger, nullable=True),
        Column("created_at", UTCDateTime(), nullable=False),
    ]


platform_prices = Table("platform_prices", metadata, *_price_columns())

mandate_prices = Table(
    "mandate_prices",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    *_price_columns(),
    ForeignKeyConstraint(["mandate_id"], ["mandates.mandate_id"]),
)

# Markups: provider '' and model '' mean "any"; the most specific row wins.
platform_markups = Table(
    "platform_markups",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("model", String(160), primary_key=True),
    Column("percent", String(40), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

mandate_markups = Table(
    "mandate_markups",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("provider", String(64), primary_key=True),
    Column("model", String(160), primary_key=True),
    Column("percent", String(40), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    ForeignKeyConstraint(["mandate_id"], ["mandates.mandate_id"]),
)

spending_limits = Table(
    "spending_limits",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("scope", String(32), primary_key=True),
    Column("subject", String(128), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("amount_micros", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # What the subject's debits add up to in the period that starts at
    # spent_since, kept by a trigger on entries in the debit's transaction
    # (migration 0006), so that a limit check reads one row whatever the history.
    Column("spent_since", UTCDateTime(), nullable=False),
    Column("spent_micros", BigInteger, nullable=False),
    ForeignKeyConstraint(["mandate_id"], ["mandates.mandate_id"]),
    CheckConstraint("scope IN ('user', 'feature_instance')", name="scope_known"),
    CheckConstraint("period IN ('day', 'week', 'month')", name="period_known"),
    CheckConstraint("amount_micros >= 0", name="amount_nonneg"),
)


# ------------------------------------------------------------- access control

providers = Table(
    "providers",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("display_name", String(128), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

platform_admins = Table(
    "platform_admins",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    ForeignKeyConstraint(["user_id"], ["users.user_id"]),
)

member_roles = Table(
    "member_roles",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    ForeignKeyConstraint(
        ["mandate_id", "user_id"], ["memberships.mandate_id", "memberships.user_id"]
    ),
)

custom_roles = Table(
    "custom_roles",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("description", String(500), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    ForeignKeyConstraint(["mandate_id"], ["mandates.mandate_id"]),
)

permission_rules = Table(
    "permission_rules",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    Column("rule_id", String(64), primary_key=True),
    Column("role", String(64), nullable=False),
    Column("context", String(16), nullable=False),
    Column("item", String(200), nullable=False),
    Column("can_view", Boolean, nullable=False),
    Column("can_create", Boolean, nullable=False),
    Column("can_update", Boolean, nullable=False),
    Column("can_delete", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    ForeignKeyConstraint(["mandate_id"], ["mandates.mandate_id"]),
    CheckConstraint("context IN ('resource', 'data', 'ui')", name="context_known"),
    Index(None, "mandate_id", "role"),
)


def _key_columns() -> list[Column[Any]]:
    return [
        Column("key_id", String(32), primary_key=True),
        Column("user_id", String(128), nullable=False),
        Column("name", String(128), nullable=True),
        # SHA-256 of the secret: the secret is 256 random bits, so a fast hash
        # is enough; it is compared in constant time.
        Column("secret_hash", String(64), nullable=False),
        Column("scopes", JSON, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("expires_at", UTCDateTime(), nullable=True),
        Column("revoked_at", UTCDateTime(), nullable=True),
        Column("last_used_at", UTCDateTime(), nullable=True),
    ]


api_keys = Table(
    "api_keys",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    *_key_columns(),
    ForeignKeyConstraint(
        ["mandate_id", "user_id"], ["memberships.mandate_id", "memberships.user_id"]
    ),
)

platform_api_keys = Table("platform_api_keys", metadata, *_key_columns())


def _audit_columns() -> list[Column[Any]]:
    return [
        Column("audit_id", String(64), primary_key=True),
        Column("at", UTCDateTime(), nullable=False),
        Column("actor", String(160), nullable=False),
        Column("action", String(64), nullable=False),
        Column("target", String(300), nullable=True),
        Column("before", JSON, nullable=True),
        Column("after", JSON, nullable=True),
    ]


audit_log = Table(
    "audit_log",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    *_audit_columns(),
    # (at, audit_id) is a page's position: its index makes a deep page's
    # row comparison an index condition.
    Index(None, "mandate_id", "at", "audit_id"),
)

platform_audit_log = Table(
    "platform_audit_log", metadata, *_audit_columns(), Index(None, "at", "audit_id")
)


# -------------------------------------------------------------- web sessions
# A dashboard sign-in: opened with an API key, which it names (never holds).
# The session's secret is stored as its SHA-256, like a key's.


def _session_columns() -> list[Column[Any]]:
    return [
        Column("session_id", String(32), primary_key=True),
        Column("key_id", String(32), nullable=False),
        Column("secret_hash", String(64), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("expires_at", UTCDateTime(), nullable=False),
        Column("last_seen_at", UTCDateTime(), nullable=False),
    ]


web_sessions = Table(
    "web_sessions",
    metadata,
    Column("mandate_id", String(128), primary_key=True),
    *_session_columns(),
    ForeignKeyConstraint(["mandate_id", "key_id"], ["api_keys.mandate_id", "api_keys.key_id"]),
    Index(None, "mandate_id", "expires_at"),
)

platform_web_sessions = Table(
    "platform_web_sessions",
    metadata,
    *_session_columns(),
    ForeignKeyConstraint(["key_id"], ["platform_api_keys.key_id"]),
)
