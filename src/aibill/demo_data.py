"""A realistic month of demo data: three mandates, their people, prices and usage.

``fill(billing)`` writes, through the library's public operations only, what a
platform looks like after a month of use, so that a newcomer (and the web
dashboard's browser tests) see real balances, reports and audit records at once:

* **Mandates**, one per billing model: ``acme`` (``prepay_mandate``, CHF, a
  Swiss engineering firm sharing one prepaid pool), ``globex`` (``prepay_user``,
  EUR, every person has a prepaid wallet) and ``initech`` (``unlimited``, USD,
  invoiced at the end of the month).
* **People**: fifteen users. Each mandate has one ``admin``, three members
  (at globex: ``staff``) and one ``viewer``; ``marco.rossi`` works for both
  acme and globex; ``platform.ops`` is a system admin and a member of nothing.
* **Access**: the providers ``openai``, ``anthropic``, ``google``, ``mistral``
  and ``selfhosted`` (the platform's own GPU cluster) are registered. globex
  keeps Google out: its people get the custom role ``staff``, whose rules
  grant every provider but ``google`` (rules only grant, so a narrower role
  replaces ``member``). acme lets its viewers use Mistral (a rule for
  ``viewer``), and its finance viewer ``nina.huber`` summarises with it.
* **Prices**: USD->CHF and USD->EUR rates from the day before the month, each
  changed twice during it; the 50 % default markup, 35 % for initech (a
  mandate markup) and 40 % on anthropic (a provider markup); a platform price
  for the internal model ``selfhosted/llama-3.3-70b-internal`` and a
  negotiated acme price for ``anthropic/claude-sonnet-4-5`` from the tenth day
  on.
* **Money**: a payment into every prepaid account the day before the month
  starts (one per started 1,000 records, so that any ``records`` fits) and
  top-ups later (``payment`` and ``admin`` credits); initech, unlimited, runs
  negative and is invoiced. Monthly and daily spending limits for one user and
  one feature instance.
* **Usage**: ``records`` priced usage records (tokens, provider, model,
  feature code and instance, user) over the 30 days up to ``now``: weekdays
  much busier than weekends, people in their working hours (acme and globex
  in Central Europe, initech on the US east coast), nightly automation runs,
  cheap models often and expensive ones rarely. Twelve holds: eight captured,
  two released (the call failed) and two still in flight at ``now``: calls
  running for under three minutes, with the default 15 minutes to live, so a
  dashboard shows holds in flight.

The records are posted with ``already_happened=True``, as a gateway's
after-the-call record is: usage that happened is never refused, only marked.
Every prepaid account gets one payment per started 1,000 records, sized at
about twice what 1,000 records cost it (checked for seeds 1-20 and up to
6,000 records), so no entry is marked short. The spending limits (5 CHF a
month for marco.rossi at acme, 1 EUR a day for globex's invoice extraction)
leave room at the default 3,000 records; with many more, usage past them is
recorded and marked ``over_limit``. One wallet is deliberately thin:
``lea.martin`` at globex pays in 0.40 EUR per 1,000 records and uses cheap
models only, so her wallet ends the month at well under a euro, next to
colleagues with several euros (a hold for a big call would be refused there).

Time: the data is dated by a second ledger on the same engine whose clock is
a :class:`~aibill.ManualClock` moved from event to event, in time order;
exchange rates start before the records that use them.

Speed: one transaction per record, so on SQLite the commit's fsync dominates:
3,000 records take 7-9 s (``synchronous=FULL``, the default); a second run,
all replays, about 1.5 s.

Idempotent: every write carries a key derived from the seed and the record's
(or credit's, or hold's) index, and the arguments depend on the seed and the
index only, never on ``now``; settings whose calls would write again (provider
registry, roles, rules, markups, limits, rates, custom prices) are skipped
when the demo's value is already there. So ``fill`` run again writes nothing,
and its summary says everything was already there; run later with another
``now`` it replays the first run. The same seed gives the same data, apart
from timestamps, which are relative to ``now``.

It fills only a ledger it made: mandates named as its own that it did not
create (the README's ``acme``, say) make it refuse with ``DemoWouldMerge``
and write nothing.

Note: this adds a system admin (``platform.ops``), so ``aibill serve`` started
on the filled database for the first time creates no bootstrap key; create
a key for ``platform.ops`` with ``billing.keys.create_key`` instead.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Final

from aibill.domain.clock import ManualClock
from aibill.domain.errors import Conflict
from aibill.domain.model import BillingModel, Entry, Mandate
from aibill.domain.principal import SYSTEM
from aibill.domain.usage import Usage
from aibill.service.billing import Billing

__all__ = ["DemoSummary", "DemoWouldMerge", "Money", "Tally", "fill"]

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


class DemoWouldMerge(Conflict):
    """The ledger has mandates of the demo's names that the demo did not make:
    filling it would mix a month of invented data into real ones."""

    code = "demo_would_merge"

    def __init__(self, mandates: list[str]) -> None:
        names = ", ".join(mandates)
        super().__init__(
            f"The demo fills only a ledger it made: mandate(s) {names} already exist here and"
            " were not created by it, so nothing was written. Run the demo on a fresh file,"
            " for example: ./scripts/run --db demo.db demo",
            mandates=mandates,
        )


# ----------------------------------------------------------------- the cast

_PREPAY_MANDATE, _PREPAY_USER, _UNLIMITED = (
    BillingModel.PREPAY_MANDATE,
    BillingModel.PREPAY_USER,
    BillingModel.UNLIMITED,
)


@dataclass(frozen=True, slots=True)
class _MandatePlan:
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


_MANDATES: Final = (
    _MandatePlan(
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
    _MandatePlan(
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
    _MandatePlan(
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
_BY_ID: Final = {m.id: m for m in _MANDATES}
SYSADMIN_USER: Final = "platform.ops"
THIN_WALLET: Final = "lea.martin"

_PROVIDERS: Final = (
    ("openai", "OpenAI"),
    ("anthropic", "Anthropic"),
    ("google", "Google Gemini"),
    ("mistral", "Mistral AI"),
    ("selfhosted", "Self-hosted (platform GPU cluster)"),
)
_STAFF_ROLE: Final = "staff"
_STAFF_DESCRIPTION: Final = "Globex staff: every provider but Google (data-protection policy)"
# (mandate, role, context, item, permissions)
_RULES: Final = (
    *(
        ("globex", _STAFF_ROLE, "resource", f"resource.aicore.{p}", ("view",))
        for p in ("openai", "anthropic", "mistral", "selfhosted")
    ),
    ("globex", _STAFF_ROLE, "data", "*", ("view",)),
    ("globex", _STAFF_ROLE, "ui", "*", ("view",)),
    ("acme", "viewer", "resource", "resource.aicore.mistral", ("view",)),
)
_VIEWER_PROVIDERS: Final = {"acme": ("mistral",)}


@dataclass(frozen=True, slots=True)
class _Model:
    provider: str
    model: str
    weight: float
    tier: str  # cheap, mid, premium
    output_factor: float = 1.0  # reasoning models write more


_MODELS: Final = (
    _Model("openai", "gpt-4o-mini", 22, "cheap"),
    _Model("openai", "gpt-4.1-mini", 14, "cheap"),
    _Model("openai", "gpt-4.1-nano", 6, "cheap"),
    _Model("openai", "gpt-4o", 7, "mid"),
    _Model("openai", "gpt-4.1", 6, "mid"),
    _Model("openai", "o4-mini", 4, "mid", 3.0),
    _Model("anthropic", "claude-haiku-4-5", 10, "cheap"),
    _Model("anthropic", "claude-sonnet-4-5", 9, "mid"),
    _Model("anthropic", "claude-opus-4-1", 1.5, "premium"),
    _Model("google", "gemini-2.5-flash-lite", 6, "cheap"),
    _Model("google", "gemini-2.5-flash", 8, "cheap"),
    _Model("google", "gemini-2.5-pro", 3, "mid", 2.0),
    _Model("mistral", "mistral-small-latest", 7, "cheap"),
    _Model("mistral", "mistral-medium-latest", 3, "mid"),
    _Model("mistral", "mistral-large", 1.5, "mid"),
    _Model("selfhosted", "llama-3.3-70b-internal", 5, "cheap"),
)
_TIER_BY_FEATURE: Final = {
    "chatplayground": {"cheap": 1.0, "mid": 0.9, "premium": 1.0},
    "automation": {"cheap": 1.6, "mid": 0.6, "premium": 0.3},
    "summarizer": {"cheap": 1.4, "mid": 0.7, "premium": 0.5},
}
# feature -> (median input, spread, median output, spread, largest input)
_TOKENS: Final = {
    "chatplayground": (4200, 0.9, 650, 0.7, 120_000),  # system prompt, history, documents
    "automation": (6500, 0.7, 800, 0.6, 60_000),
    "summarizer": (18_000, 0.8, 700, 0.5, 180_000),  # under the 200k long-context tiers
}
_CACHING: Final = frozenset({"openai", "anthropic", "google"})

# -------------------------------------------------------------- money plans

# (mandate, user or None for the pool, amount per tranche, description)
_PAYMENTS: Final = (
    ("acme", None, Decimal("15.00"), "Prepayment (bank transfer)"),
    ("globex", "claire.dubois", Decimal("5.00"), "Wallet prepayment"),
    ("globex", "felix.wagner", Decimal("4.00"), "Wallet prepayment"),
    ("globex", THIN_WALLET, Decimal("0.40"), "Wallet prepayment"),
    ("globex", "marco.rossi", Decimal("3.00"), "Wallet prepayment"),
)
# (mandate, user, day of the month (0-29), hour UTC, reason, amount, description)
_TOPUPS: Final = (
    ("globex", "felix.wagner", 11, 9.5, "payment", Decimal("3.00"), "Card top-up"),
    ("acme", None, 14, 13.25, "admin", Decimal("10.00"), "Top-up approved by anna.meier"),
    ("globex", "marco.rossi", 19, 16.0, "admin", Decimal("2.00"), "Project budget from claire"),
)
# (base, quote, [(day of the month the rate starts, rate)]); day -1: the day before
_RATES: Final = (
    ("USD", "CHF", ((-1, "0.8012"), (9, "0.7968"), (20, "0.8051"))),
    ("USD", "EUR", ((-1, "0.9187"), (13, "0.9241"), (24, "0.9158"))),
)
# (percent, mandate, provider)
_MARKUPS: Final = (
    (Decimal("35"), "initech", None),
    (Decimal("40"), None, "anthropic"),
)
# (mandate, provider, model, day it starts, prices, output limit)
_CUSTOM_PRICES: Final = (
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
_LIMITS: Final = (
    ("acme", "marco.rossi", None, "month", Decimal("5.00")),
    ("globex", None, "globex-invoice-extraction", "day", Decimal("1.00")),
)


# ------------------------------------------------------------------ summary


@dataclass(frozen=True, slots=True)
class Tally:
    """How many of something the demo made now, and how many were already there."""

    created: int = 0
    present: int = 0

    @property
    def total(self) -> int:
        return self.created + self.present

    def describe(self, noun: str, made: str = "created") -> str:
        """``"3 mandates created"``, ``"3 mandates, all already there"``, ..."""
        if self.total == 0:
            return f"no {noun}"
        if self.total == 1:
            noun = noun.removesuffix("s")
        if self.present == 0:
            return f"{self.created:,} {noun} {made}"
        if self.created == 0:
            return f"{self.present:,} {noun}, all already there"
        return f"{self.created:,} {noun} {made}, {self.present:,} already there"


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in a currency; shown exactly (every micro-unit), with
    thousands separators."""

    amount: Decimal
    currency: str

    def __str__(self) -> str:
        return f"{self.amount:,f} {self.currency}"


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What :func:`fill` made and what was already there.

    Every :class:`Tally` counts the demo's own objects: ``created`` now, or
    ``present`` before (a replayed write, or a setting already in place).
    ``charged`` is the usage posted per mandate (records and captured holds),
    ``credited`` the credits, both in the mandate's currency, whether posted
    now or replayed.
    """

    seed: int
    start: datetime
    """The first instant of the demo month (midnight UTC, 29 days before ``now``'s day)."""
    end: datetime
    """``now``: nothing is dated after it."""
    mandates: tuple[Mandate, ...]
    mandate_count: Tally
    users: Tally
    sysadmins: Tally
    memberships: Tally
    providers: Tally
    roles: Tally
    rules: Tally
    exchange_rates: Tally
    markups: Tally
    custom_prices: Tally
    limits: Tally
    credits: Tally
    usage_records: Tally
    holds: Tally
    holds_captured: int
    holds_released: int
    holds_pending: int
    charged: Mapping[str, Money] = field(default_factory=dict)
    credited: Mapping[str, Money] = field(default_factory=dict)

    @property
    def wrote_nothing(self) -> bool:
        """True when everything was already there (a second run)."""
        return all(
            t.created == 0
            for t in (
                self.mandate_count,
                self.users,
                self.sysadmins,
                self.memberships,
                self.providers,
                self.roles,
                self.rules,
                self.exchange_rates,
                self.markups,
                self.custom_prices,
                self.limits,
                self.credits,
                self.usage_records,
                self.holds,
            )
        )

    def lines(self) -> list[str]:
        """The summary in words, one line per kind of thing, e.g. ``"3 mandates
        created (acme: prepay_mandate CHF, ...)"``, ``"2,950 usage records
        written, 50 already there"``."""
        shown = ", ".join(f"{m.id}: {m.billing_model.value} {m.currency}" for m in self.mandates)
        out = [
            f"demo month {self.start:%Y-%m-%d} to {self.end:%Y-%m-%d %H:%M} UTC (seed {self.seed})",
            f"{self.mandate_count.describe('mandates')} ({shown})",
            "; ".join(
                (
                    self.users.describe("users"),
                    self.sysadmins.describe("system admins"),
                    self.memberships.describe("memberships"),
                )
            ),
            "; ".join(
                (
                    self.providers.describe("providers", "registered"),
                    self.roles.describe("custom roles"),
                    self.rules.describe("permission rules", "added"),
                )
            ),
            "; ".join(
                (
                    self.exchange_rates.describe("exchange rates", "set"),
                    self.markups.describe("markups", "set"),
                    self.custom_prices.describe("custom prices", "set"),
                    self.limits.describe("spending limits", "set"),
                )
            ),
            self.credits.describe("credits", "posted"),
            self.usage_records.describe("usage records", "written"),
            f"{self.holds.describe('holds', 'placed')} ({self.holds_captured} captured, "
            f"{self.holds_released} released, {self.holds_pending} left in flight)",
        ]
        for mandate in self.mandates:
            parts = []
            if mandate.id in self.charged:
                parts.append(f"{self.charged[mandate.id]} charged")
            if mandate.id in self.credited:
                parts.append(f"{self.credited[mandate.id]} credited")
            if parts:
                out.append(f"{mandate.id}: {', '.join(parts)}")
        return out


class _Counter:
    """A mutable tally while the demo runs."""

    __slots__ = ("created", "present")

    def __init__(self) -> None:
        self.created = 0
        self.present = 0

    def add(self, created: bool) -> None:
        if created:
            self.created += 1
        else:
            self.present += 1

    def freeze(self) -> Tally:
        return Tally(self.created, self.present)


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True, slots=True)
class _Call:
    """One model call: everything but its time depends only on the seed and index."""

    mandate: str
    user: str
    provider: str
    model: str
    feature_code: str
    feature_instance: str
    workflow_id: str | None
    usage: Usage


@dataclass(slots=True)
class _Event:
    at: datetime
    order: int
    action: Callable[[], None]


def _rng(seed: int, *parts: object) -> random.Random:
    # A string seed is hashed with SHA-512: the same in every process and version.
    return random.Random(":".join(["aibill-demo", str(seed), *map(str, parts)]))


def _pick(rng: random.Random, options: list[tuple[str, float]]) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def _lognormal(rng: random.Random, median: float, spread: float, low: int, high: int) -> int:
    return max(low, min(high, round(rng.lognormvariate(math.log(median), spread))))


def _call(seed: int, index: int) -> _Call:
    """The ``index``-th model call of the demo (its content, not its time)."""
    rng = _rng(seed, "call", index)
    plan = _BY_ID[_pick(rng, [(m.id, m.share) for m in _MANDATES])]
    user = _pick(rng, [(u, share) for u, _, share in plan.users if share > 0])
    role = next(r for u, r, _ in plan.users if u == user)
    feature = _pick(rng, list(plan.features.items()))
    allowed = _VIEWER_PROVIDERS.get(plan.id, ()) if role == "viewer" else tuple(plan.providers)
    if role == "viewer":
        feature = "summarizer"
    tiers = _TIER_BY_FEATURE[feature]
    choices = [
        (f"{m.provider}/{m.model}", m.weight * plan.providers[m.provider] * tiers[m.tier])
        for m in _MODELS
        if m.provider in allowed and (m.tier == "cheap" or user != THIN_WALLET)
    ]
    chosen = _pick(rng, choices)
    model = next(m for m in _MODELS if f"{m.provider}/{m.model}" == chosen)
    median_in, spread_in, median_out, spread_out, largest = _TOKENS[feature]
    input_tokens = _lognormal(rng, median_in, spread_in, 40, largest)
    output_tokens = _lognormal(
        rng,
        median_out * model.output_factor,
        spread_out,
        5,
        16_000 if model.tier != "cheap" else 8000,
    )
    cache_read = cache_write = 0
    if model.provider in _CACHING and input_tokens >= 1024:
        roll = rng.random()
        if roll < 0.45:
            cache_read = int(input_tokens * rng.uniform(0.4, 0.9))
        elif roll < 0.60 and model.provider == "anthropic":
            cache_write = int(input_tokens * rng.uniform(0.5, 0.9))
    workflow = f"wf-{plan.id}-{rng.randrange(1000, 10000)}" if feature == "automation" else None
    return _Call(
        plan.id,
        user,
        model.provider,
        model.model,
        feature,
        plan.instances[feature],
        workflow,
        Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        ),
    )


class _Calendar:
    """The demo month's days and a realistic rhythm over them."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        today = now.astimezone(UTC).date()
        self.days = [today - timedelta(days=DAYS - 1 - k) for k in range(DAYS)]
        self.start = self.midnight(self.days[0])
        # Weekdays busy, weekends quiet, a little growth over the month.
        busy = [
            (1.0 if d.weekday() < 5 else 0.16 if d.weekday() == 5 else 0.10)
            * (0.9 + 0.2 * k / (DAYS - 1))
            for k, d in enumerate(self.days)
        ]
        steady = [0.9 + 0.2 * k / (DAYS - 1) for k in range(DAYS)]
        self._busy = _cumulative(busy)
        self._steady = _cumulative(steady)

    @staticmethod
    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=UTC)

    def day(self, k: int, hour_utc: float = 0.0) -> datetime:
        """Day ``k`` of the month (-1: the day before it) at ``hour_utc``."""
        when = self.midnight(self.days[0] + timedelta(days=k))
        return when + timedelta(seconds=round(hour_utc * 3600))

    def when(
        self, rng: random.Random, feature: str, utc_offset_h: int, margin_s: int = 0
    ) -> datetime:
        """A moment in the month for a call of ``feature`` by people at ``utc_offset_h``."""
        latest = self.now - timedelta(seconds=60 + margin_s)
        for _ in range(200):
            nightly = feature == "automation" and rng.random() < 0.3
            days = self._steady if nightly else self._busy
            day = rng.choices(self.days, cum_weights=days)[0]
            if nightly:
                hour = rng.uniform(1.0, 5.0)  # the nightly batch
            else:
                roll = rng.random()
                if roll < 0.45:
                    hour = rng.gauss(10.3, 1.2)  # the morning
                elif roll < 0.90:
                    hour = rng.gauss(14.8, 1.5)  # the afternoon
                else:
                    hour = rng.uniform(6.5, 23.0)  # early birds and late owls
            at = self.midnight(day) + timedelta(seconds=round((hour - utc_offset_h) * 3600))
            if self.start <= at <= latest:
                return at
        return latest


def _cumulative(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


# ------------------------------------------------------------------- filling


def fill(
    billing: Billing,
    *,
    records: int = 3000,
    now: datetime | None = None,
    seed: int = 7,
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    """Fill ``billing``'s database with a realistic month (see the module's doc).

    ``records`` usage records are written, dated over the 30 days up to
    ``now`` (default: ``billing``'s clock); ``progress(done, total)`` is
    called as they are written (or replayed). Idempotent: a second run
    writes nothing. Returns what was made and what was already there.
    """
    if isinstance(records, bool) or not isinstance(records, int) or records < 0:
        raise ValueError(f"records must be a non-negative int, not {records!r}")
    if now is None:
        now = billing.clock()  # the ledger's own clock
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return _Filler(billing, records, now.astimezone(UTC), seed, progress).run()


class _Filler:
    def __init__(
        self,
        billing: Billing,
        records: int,
        now: datetime,
        seed: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.billing = billing
        self.records = records
        self.seed = seed
        self.progress = progress
        self.cal = _Calendar(now)
        self.clock = ManualClock(self.cal.day(-1, 8.0))
        ledger = Billing(billing.engine, clock=self.clock, catalog=billing.pricing.catalog)
        principal = billing.principal
        self.ledger = ledger if principal is SYSTEM else ledger.as_principal(principal)
        self.prefix = f"demo-s{seed}"
        self.counts = {
            name: _Counter()
            for name in (
                "mandates",
                "users",
                "sysadmins",
                "memberships",
                "providers",
                "roles",
                "rules",
                "exchange_rates",
                "markups",
                "custom_prices",
                "limits",
                "credits",
                "usage_records",
                "holds",
            )
        }
        self.charged: dict[str, Decimal] = {}
        self.credited: dict[str, Decimal] = {}
        self.hold_fates = {"captured": 0, "released": 0, "pending": 0}
        self.hold_ids: dict[int, str] = {}
        self.created_mandates: list[Mandate] = []
        self.done = 0

    # ---------------------------------------------------------------- setup

    def run(self) -> DemoSummary:
        self.setup()
        events = [*self.rate_events(), *self.credit_events(), *self.hold_events()]
        events += self.record_events()
        events.sort(key=lambda ev: (ev.at, ev.order))
        if self.progress is not None:
            self.progress(0, self.records)
        for event in events:
            self.clock.set(event.at)
            event.action()
        c = {name: counter.freeze() for name, counter in self.counts.items()}
        currency = {m.id: m.currency for m in _MANDATES}
        return DemoSummary(
            seed=self.seed,
            start=self.cal.start,
            end=self.cal.now,
            mandates=tuple(self.created_mandates),
            mandate_count=c["mandates"],
            users=c["users"],
            sysadmins=c["sysadmins"],
            memberships=c["memberships"],
            providers=c["providers"],
            roles=c["roles"],
            rules=c["rules"],
            exchange_rates=c["exchange_rates"],
            markups=c["markups"],
            custom_prices=c["custom_prices"],
            limits=c["limits"],
            credits=c["credits"],
            usage_records=c["usage_records"],
            holds=c["holds"],
            holds_captured=self.hold_fates["captured"],
            holds_released=self.hold_fates["released"],
            holds_pending=self.hold_fates["pending"],
            charged={m: Money(a, currency[m]) for m, a in sorted(self.charged.items())},
            credited={m: Money(a, currency[m]) for m, a in sorted(self.credited.items())},
        )

    def setup(self) -> None:
        """Mandates, people, providers, roles and rules, prices, markups, limits:
        the day before the month, each skipped when already in place."""
        self._setup_people()
        self._setup_access()
        self._setup_prices()

    def _setup_people(self) -> None:
        """The demo's system admin first, then its mandates and users."""
        b, n = self.ledger, self.counts
        self.clock.set(self.cal.day(-1, 8.0))
        known = {m.id for m in b.mandates()}
        # The demo's system admin is its first write: a ledger that has it was
        # filled by the demo, and a mandate of the demo's names found without it
        # was made by somebody else, whose data the demo must not touch.
        users = set(b.users())
        is_admin = SYSADMIN_USER in users and b.access.is_sysadmin(SYSADMIN_USER)
        foreign = [plan.id for plan in _MANDATES if plan.id in known]
        if foreign and not is_admin:
            raise DemoWouldMerge(foreign)
        everyone = [SYSADMIN_USER, *sorted({u for m in _MANDATES for u, _, _ in m.users})]
        if SYSADMIN_USER not in users:
            b.add_user(SYSADMIN_USER)
        if not is_admin:
            b.access.add_sysadmin(SYSADMIN_USER)
        n["sysadmins"].add(not is_admin)
        for plan in _MANDATES:
            created = b.create_mandate(
                plan.id, billing_model=plan.billing_model, currency=plan.currency
            )
            self.created_mandates.append(created)
            n["mandates"].add(plan.id not in known)

        self.clock.set(self.cal.day(-1, 8.25))
        for user in everyone:
            b.add_user(user)
            n["users"].add(user not in users)

    def _setup_access(self) -> None:
        """Providers, the custom role and rules, and the memberships."""
        b, n = self.ledger, self.counts
        self.clock.set(self.cal.day(-1, 8.5))
        registered = {p.provider: p for p in b.access.providers()}
        for name, shown in _PROVIDERS:
            # Registering again would audit again, and overwrite a display name
            # an admin chose: only a missing (or disabled) provider is registered.
            info = registered.get(name)
            fresh = info is None or not info.enabled
            if fresh:
                b.access.register_provider(name, display_name=shown, enabled=True)
            n["providers"].add(fresh)

        self.clock.set(self.cal.day(-1, 8.75))
        roles = {r.role for r in b.access.custom_roles("globex")}
        if _STAFF_ROLE not in roles:
            b.access.define_role("globex", _STAFF_ROLE, _STAFF_DESCRIPTION)
        n["roles"].add(_STAFF_ROLE not in roles)
        for mandate in ("globex", "acme"):
            have = {
                (r.role, r.context.value, r.item, frozenset(p.value for p in r.permissions))
                for r in b.access.rules(mandate)
            }
            for m, role, context, item, perms in _RULES:
                if m != mandate:
                    continue
                fresh = (role, context, item, frozenset(perms)) not in have
                if fresh:
                    b.access.add_rule(mandate, role, context, item, perms)
                n["rules"].add(fresh)

        self.clock.set(self.cal.day(-1, 9.0))
        for plan in _MANDATES:
            members = {m.user for m in b.members(plan.id)}
            for user, role, _ in plan.users:
                if user not in members:
                    b.add_member(plan.id, user, role=role)
                n["memberships"].add(user not in members)

    def _setup_prices(self) -> None:
        """Markups, custom prices and spending limits."""
        b, n = self.ledger, self.counts
        self.clock.set(self.cal.day(-1, 9.5))
        for percent, of_mandate, of_provider in _MARKUPS:
            scopes = {(m.provider, m.model) for m in b.pricing.markups(of_mandate)}
            fresh = (of_provider, None) not in scopes
            if fresh:
                b.pricing.set_markup(percent, mandate=of_mandate, provider=of_provider)
            n["markups"].add(fresh)

        for of_mandate, provider, model, day, prices, output_limit in _CUSTOM_PRICES:
            stored = b.pricing.custom_prices(of_mandate)
            fresh = not any(p.provider == provider and p.model == model for p in stored)
            if fresh:
                b.pricing.set_custom_price(
                    provider,
                    model,
                    **prices,
                    currency="USD",
                    valid_from=self.cal.day(day),
                    mandate=of_mandate,
                    output_limit=output_limit,
                )
            n["custom_prices"].add(fresh)

        self.clock.set(self.cal.day(-1, 9.75))
        for limited, limited_user, instance, period, amount in _LIMITS:
            subject = limited_user if limited_user is not None else instance
            scope = "user" if limited_user is not None else "feature_instance"
            fresh = not any(
                lim.scope == scope and lim.subject == subject and lim.period == period
                for lim in b.spending_limits(limited)
            )
            if fresh:
                b.set_spending_limit(
                    limited, amount, user=limited_user, feature_instance=instance, period=period
                )
            n["limits"].add(fresh)

    # ---------------------------------------------------------------- events

    def rate_events(self) -> list[_Event]:
        """Each rate is set at 18:00 UTC the evening before it starts (the first
        ones, already in force, during the setup), unless the demo's rates of
        that pair are there already (from this run's ``now`` or another's)."""
        events: list[_Event] = []
        for base, quote, schedule in _RATES:
            stored = self.ledger.pricing.exchange_rates(base, quote)
            starts = {r.valid_from for r in stored}
            ours = any(r.source == RATE_SOURCE for r in stored)
            for day, rate in schedule:
                valid_from = self.cal.day(day)
                if valid_from in starts or ours:
                    self.counts["exchange_rates"].add(False)
                    continue
                at = max(valid_from - timedelta(hours=6), self.cal.day(-1, 9.9))
                events.append(
                    _Event(at, 0, partial(self._set_rate, base, quote, Decimal(rate), valid_from))
                )
        return events

    def _set_rate(self, base: str, quote: str, rate: Decimal, valid_from: datetime) -> None:
        self.ledger.pricing.set_exchange_rate(
            base, quote, rate, valid_from=valid_from, source=RATE_SOURCE
        )
        self.counts["exchange_rates"].add(True)

    def credit_events(self) -> list[_Event]:
        events: list[_Event] = []
        tranches = max(1, math.ceil(self.records / RECORDS_PER_TRANCHE))
        for mandate, user, amount, description in _PAYMENTS:
            account = user or "pool"
            for t in range(tranches):
                key = f"{self.prefix}:credit:{account}:payment:{t}"
                events.append(
                    self._credit(
                        self.cal.day(-1, 16.0 + t / 60),
                        mandate,
                        user,
                        amount,
                        "payment",
                        description,
                        key,
                    )
                )
        for mandate, user, day, hour, reason, amount, description in _TOPUPS:
            key = f"{self.prefix}:credit:{user or 'pool'}:topup:{day}"
            events.append(
                self._credit(
                    self.cal.day(day, hour), mandate, user, amount, reason, description, key
                )
            )
        return events

    def _credit(
        self,
        at: datetime,
        mandate: str,
        user: str | None,
        amount: Decimal,
        reason: str,
        description: str,
        key: str,
    ) -> _Event:
        def credit() -> None:
            entry = self.ledger.credit(
                mandate,
                amount,
                user=user,
                reason=reason,
                description=description,
                idempotency_key=key,
            )
            self.counts["credits"].add(not entry.replayed)
            self.credited[mandate] = self.credited.get(mandate, Decimal(0)) + entry.amount

        return _Event(at, 1, credit)

    def record_events(self) -> list[_Event]:
        events: list[_Event] = []
        for i in range(self.records):
            call = _call(self.seed, i)
            at = self.cal.when(
                _rng(self.seed, "time", i), call.feature_code, _BY_ID[call.mandate].utc_offset_h
            )
            events.append(_Event(at, 3, partial(self._record, i, call)))
        return events

    def _record(self, index: int, call: _Call) -> None:
        entry = self.ledger.record_usage(
            call.mandate,
            user=call.user,
            provider=call.provider,
            model=call.model,
            usage=call.usage,
            feature_code=call.feature_code,
            feature_instance=call.feature_instance,
            workflow_id=call.workflow_id,
            already_happened=True,
            idempotency_key=f"{self.prefix}:usage:{index}",
        )
        self.counts["usage_records"].add(not entry.replayed)
        self._charge(entry)
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.records)

    def _charge(self, entry: Entry) -> None:
        self.charged[entry.mandate] = self.charged.get(entry.mandate, Decimal(0)) + entry.amount

    def hold_events(self) -> list[_Event]:
        """Twelve holds: eight captured, two released, two in flight at ``now``."""
        events: list[_Event] = []
        for spec in _holds(self.seed, self.cal):
            events.append(_Event(spec.at, 2, partial(self._place, spec)))
            if spec.fate == "captured":
                events.append(_Event(spec.resolve_at, 2, partial(self._capture, spec)))
            elif spec.fate == "released":
                events.append(_Event(spec.resolve_at, 2, partial(self._release, spec)))
        return events

    def _place(self, spec: _HoldSpec) -> None:
        hold = self.ledger.hold(
            spec.mandate,
            user=spec.user,
            provider=spec.provider,
            model=spec.model,
            input_tokens=spec.input_tokens,
            max_output_tokens=spec.max_output_tokens,
            feature_code=spec.feature_code,
            feature_instance=spec.feature_instance,
            ttl_s=spec.ttl_s,
            idempotency_key=f"{self.prefix}:hold:{spec.index}",
        )
        self.hold_ids[spec.index] = hold.id
        self.counts["holds"].add(not hold.replayed)
        self.hold_fates[spec.fate] += 1

    def _capture(self, spec: _HoldSpec) -> None:
        entry = self.ledger.capture(
            self.hold_ids[spec.index],
            usage=spec.used,
            idempotency_key=f"{self.prefix}:hold:{spec.index}:capture",
        )
        self._charge(entry)

    def _release(self, spec: _HoldSpec) -> None:
        self.ledger.release(
            self.hold_ids[spec.index], idempotency_key=f"{self.prefix}:hold:{spec.index}:release"
        )


@dataclass(frozen=True, slots=True)
class _HoldSpec:
    index: int
    fate: str  # captured, released, pending
    mandate: str
    user: str
    provider: str
    model: str
    feature_code: str
    feature_instance: str
    input_tokens: int
    max_output_tokens: int
    used: Usage
    ttl_s: int
    at: datetime
    resolve_at: datetime


_HOLD_FATES: Final = ("captured",) * 8 + ("released",) * 2 + ("pending",) * 2
_PENDING_HOLDERS: Final = {10: ("acme", "lukas.weber"), 11: ("initech", "peter.gibbons")}


def _holds(seed: int, cal: _Calendar) -> list[_HoldSpec]:
    """The demo's holds: their content depends on the seed only, their times on ``now``."""
    specs = []
    limited_instances = {instance for _, _, instance, _, _ in _LIMITS if instance}
    for j, fate in enumerate(_HOLD_FATES):
        rng = _rng(seed, "hold", j)
        if j in _PENDING_HOLDERS:
            mandate, user = _PENDING_HOLDERS[j]
        else:
            mandate = ("acme", "globex", "initech")[j % 3]
            candidates = [
                (u, share)
                for u, role, share in _BY_ID[mandate].users
                if role != "viewer" and share > 0 and not _limited(mandate, u) and u != THIN_WALLET
            ]
            user = _pick(rng, candidates)
        plan = _BY_ID[mandate]
        models = [m for m in _MODELS if m.provider in plan.providers and m.tier == "mid"]
        model = models[rng.randrange(len(models))]
        input_tokens = _lognormal(rng, 2500, 0.6, 200, 30_000)
        max_output = rng.choice((1024, 2048, 4096))
        used = Usage(
            input_tokens=input_tokens, output_tokens=_lognormal(rng, 400, 0.6, 20, max_output)
        )
        feature = rng.choice(("chatplayground", "automation"))
        if plan.instances[feature] in limited_instances:
            feature = "chatplayground"
        delay = rng.randint(3, 90)
        if fate == "pending":
            # Calls running now: placed seconds to a few minutes ago, with the
            # default time to live, as a gateway's holds are.
            at = cal.now - timedelta(seconds=PENDING_AGES_S[j - 10])
            ttl = PENDING_TTL_S
        else:
            at = cal.when(_rng(seed, "hold-time", j), feature, plan.utc_offset_h, 120)
            ttl = 900
        specs.append(
            _HoldSpec(
                j,
                fate,
                mandate,
                user,
                model.provider,
                model.model,
                feature,
                plan.instances[feature],
                input_tokens,
                max_output,
                used,
                ttl,
                at,
                at + timedelta(seconds=delay),
            )
        )
    return specs


def _limited(mandate: str, user: str) -> bool:
    return any(m == mandate and u == user for m, u, _, _, _ in _LIMITS)
