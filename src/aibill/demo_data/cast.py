"""The demo's cast and its plans: the mandates and their people, the providers,
roles and rules, the models and how they are used, and the money, prices and
limits of the month."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from aibill.domain.model import BillingModel

DAYS: Final = 30
"""The demo month: the 30 calendar days (UTC) up to and including ``now``'s."""
RECORDS_PER_TRANCHE: Final = 1000
"""Prepaid accounts get one payment per started 1,000 records."""
RATE_SOURCE: Final = "demo:ecb"
"""The ``source`` of the demo's exchange rates (how a second run recognises them)."""
PENDING_TTL_S: Final = 15 * 60
"""The in-flight holds' time to live: the ledger's default, as a gateway's holds have."""
PENDING_AGES_S: Final = (40, 150)
"""How long before ``now`` the two in-flight holds were placed (calls still running)."""


# ----------------------------------------------------------------- the cast

_PREPAY_MANDATE, _PREPAY_USER, _UNLIMITED = (
    BillingModel.PREPAY_MANDATE,
    BillingModel.PREPAY_USER,
    BillingModel.UNLIMITED,
)


@dataclass(frozen=True, slots=True)
class MandatePlan:
    id: str
    billing_model: BillingModel
    currency: str
    utc_offset_h: int
    """Where its people work: local time = UTC + offset (winter time)."""
    share: float
    """Its share of the usage records."""
    users: tuple[tuple[str, str, float], ...]
    """(user, role, share of the mandate's records); role ``viewer`` with a share
    uses only what the mandate's rules let viewers use."""
    providers: Mapping[str, float]
    """How much it likes each provider (multiplies the model weights); a
    provider missing here is not used."""
    instances: Mapping[str, str]
    """feature code -> feature instance."""
    features: Mapping[str, float]


MANDATES: Final = (
    MandatePlan(
        "acme",
        _PREPAY_MANDATE,
        "CHF",
        1,
        0.40,
        (
            ("anna.meier", "admin", 0.12),
            ("lukas.weber", "member", 0.34),
            ("sara.keller", "member", 0.30),
            ("marco.rossi", "member", 0.16),
            ("nina.huber", "viewer", 0.08),
        ),
        {"openai": 1.0, "anthropic": 1.6, "google": 0.6, "mistral": 0.8, "selfhosted": 0.8},
        {
            "chatplayground": "acme-chat",
            "automation": "acme-support-triage",
            "summarizer": "acme-meeting-notes",
        },
        {"chatplayground": 0.50, "automation": 0.30, "summarizer": 0.20},
    ),
    MandatePlan(
        "globex",
        _PREPAY_USER,
        "EUR",
        1,
        0.25,
        (
            ("claire.dubois", "admin", 0.20),
            ("felix.wagner", "staff", 0.44),
            ("lea.martin", "staff", 0.10),
            ("marco.rossi", "staff", 0.26),
            ("paul.girard", "viewer", 0.0),
        ),
        {"openai": 1.0, "anthropic": 0.9, "mistral": 1.8, "selfhosted": 1.2},
        {
            "chatplayground": "globex-chat",
            "automation": "globex-invoice-extraction",
            "summarizer": "globex-contract-digest",
        },
        {"chatplayground": 0.40, "automation": 0.40, "summarizer": 0.20},
    ),
    MandatePlan(
        "initech",
        _UNLIMITED,
        "USD",
        -5,
        0.35,
        (
            ("bill.lumbergh", "admin", 0.10),
            ("peter.gibbons", "member", 0.36),
            ("michael.bolton", "member", 0.30),
            ("samir.nagheenanajar", "member", 0.24),
            ("milton.waddams", "viewer", 0.0),
        ),
        {"openai": 1.7, "anthropic": 1.0, "google": 1.0, "mistral": 0.3, "selfhosted": 0.5},
        {
            "chatplayground": "initech-chat",
            "automation": "initech-tps-reports",
            "summarizer": "initech-summaries",
        },
        {"chatplayground": 0.45, "automation": 0.35, "summarizer": 0.20},
    ),
)
BY_ID: Final = {m.id: m for m in MANDATES}
SYSADMIN_USER: Final = "platform.ops"
THIN_WALLET: Final = "lea.martin"

PROVIDERS: Final = (
    ("openai", "OpenAI"),
    ("anthropic", "Anthropic"),
    ("google", "Google Gemini"),
    ("mistral", "Mistral AI"),
    ("selfhosted", "Self-hosted (platform GPU cluster)"),
)
STAFF_ROLE: Final = "staff"
STAFF_DESCRIPTION: Final = "Globex staff: every provider but Google (data-protection policy)"
# (mandate, role, context, item, permissions)
RULES: Final = (
    *(
        ("globex", STAFF_ROLE, "resource", f"resource.aicore.{p}", ("view",))
        for p in ("openai", "anthropic", "mistral", "selfhosted")
    ),
    ("globex", STAFF_ROLE, "data", "*", ("view",)),
    ("globex", STAFF_ROLE, "ui", "*", ("view",)),
    ("acme", "viewer", "resource", "resource.aicore.mistral", ("view",)),
)
VIEWER_PROVIDERS: Final = {"acme": ("mistral",)}


@dataclass(frozen=True, slots=True)
class ModelPlan:
    provider: str
    model: str
    weight: float
    tier: str  # cheap, mid, premium
    output_factor: float = 1.0  # reasoning models write more


MODELS: Final = (
    ModelPlan("openai", "gpt-4o-mini", 22, "cheap"),
    ModelPlan("openai", "gpt-4.1-mini", 14, "cheap"),
    ModelPlan("openai", "gpt-4.1-nano", 6, "cheap"),
    ModelPlan("openai", "gpt-4o", 7, "mid"),
    ModelPlan("openai", "gpt-4.1", 6, "mid"),
    ModelPlan("openai", "o4-mini", 4, "mid", 3.0),
    ModelPlan("anthropic", "claude-haiku-4-5", 10, "cheap"),
    ModelPlan("anthropic", "claude-sonnet-4-5", 9, "mid"),
    ModelPlan("anthropic", "claude-opus-4-1", 1.5, "premium"),
    ModelPlan("google", "gemini-2.5-flash-lite", 6, "cheap"),
    ModelPlan("google", "gemini-2.5-flash", 8, "cheap"),
    ModelPlan("google", "gemini-2.5-pro", 3, "mid", 2.0),
    ModelPlan("mistral", "mistral-small-latest", 7, "cheap"),
    ModelPlan("mistral", "mistral-medium-latest", 3, "mid"),
    ModelPlan("mistral", "mistral-large", 1.5, "mid"),
    ModelPlan("selfhosted", "llama-3.3-70b-internal", 5, "cheap"),
)
TIER_BY_FEATURE: Final = {
    "chatplayground": {"cheap": 1.0, "mid": 0.9, "premium": 1.0},
    "automation": {"cheap": 1.6, "mid": 0.6, "premium": 0.3},
    "summarizer": {"cheap": 1.4, "mid": 0.7, "premium": 0.5},
}
# feature -> (median input, spread, median output, spread, largest input)
TOKENS: Final = {
    "chatplayground": (4200, 0.9, 650, 0.7, 120_000),  # system prompt, history, documents
    "automation": (6500, 0.7, 800, 0.6, 60_000),
    "summarizer": (18_000, 0.8, 700, 0.5, 180_000),  # under the 200k long-context tiers
}
CACHING: Final = frozenset({"openai", "anthropic", "google"})

# -------------------------------------------------------------- money plans

# (mandate, user or None for the pool, amount per tranche, description)
PAYMENTS: Final = (
    ("acme", None, Decimal("15.00"), "Prepayment (bank transfer)"),
    ("globex", "claire.dubois", Decimal("5.00"), "Wallet prepayment"),
    ("globex", "felix.wagner", Decimal("4.00"), "Wallet prepayment"),
    ("globex", THIN_WALLET, Decimal("0.40"), "Wallet prepayment"),
    ("globex", "marco.rossi", Decimal("3.00"), "Wallet prepayment"),
)
# (mandate, user, day of the month (0-29), hour UTC, reason, amount, description)
TOPUPS: Final = (
    ("globex", "felix.wagner", 11, 9.5, "payment", Decimal("3.00"), "Card top-up"),
    ("acme", None, 14, 13.25, "admin", Decimal("10.00"), "Top-up approved by anna.meier"),
    ("globex", "marco.rossi", 19, 16.0, "admin", Decimal("2.00"), "Project budget from claire"),
)
# (base, quote, [(day of the month the rate starts, rate)]); day -1: the day before
RATES: Final = (
    ("USD", "CHF", ((-1, "0.8012"), (9, "0.7968"), (20, "0.8051"))),
    ("USD", "EUR", ((-1, "0.9187"), (13, "0.9241"), (24, "0.9158"))),
)
# (percent, mandate, provider)
MARKUPS: Final = (
    (Decimal("35"), "initech", None),
    (Decimal("40"), None, "anthropic"),
)
# (mandate, provider, model, day it starts, prices, output limit)
CUSTOM_PRICES: Final = (
    (
        None,
        "selfhosted",
        "llama-3.3-70b-internal",
        -1,
        {"input_mtok": Decimal("0.35"), "output_mtok": Decimal("0.40")},
        8192,
    ),
    (
        "acme",
        "anthropic",
        "claude-sonnet-4-5",
        10,
        {
            "input_mtok": Decimal("2.70"),
            "output_mtok": Decimal("13.50"),
            "cache_read_mtok": Decimal("0.27"),
            "cache_write_mtok": Decimal("3.375"),
        },
        None,
    ),
)
# (mandate, user, feature instance, period, amount)
LIMITS: Final = (
    ("acme", "marco.rossi", None, "month", Decimal("5.00")),
    ("globex", None, "globex-invoice-extraction", "day", Decimal("1.00")),
)
