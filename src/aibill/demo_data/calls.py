"""The demo's calls and holds, and the month they happen in: their content
depends on the seed and their index only, their times on ``now``."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

from aibill.demo_data.cast import (
    BY_ID,
    CACHING,
    DAYS,
    LIMITS,
    MANDATES,
    MODELS,
    PENDING_AGES_S,
    PENDING_TTL_S,
    THIN_WALLET,
    TIER_BY_FEATURE,
    TOKENS,
    VIEWER_PROVIDERS,
)
from aibill.domain.usage import Usage

# ------------------------------------------------------------------ the plan


@dataclass(frozen=True, slots=True)
class Call:
    """One model call: everything but its time depends only on the seed and index."""

    mandate: str
    user: str
    provider: str
    model: str
    feature_code: str
    feature_instance: str
    workflow_id: str | None
    usage: Usage


def seeded_rng(seed: int, *parts: object) -> random.Random:
    # A string seed is hashed with SHA-512: the same in every process and version.
    return random.Random(":".join(["aibill-demo", str(seed), *map(str, parts)]))


def pick(rng: random.Random, options: list[tuple[str, float]]) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def lognormal(rng: random.Random, median: float, spread: float, low: int, high: int) -> int:
    return max(low, min(high, round(rng.lognormvariate(math.log(median), spread))))


def nth_call(seed: int, index: int) -> Call:
    """The ``index``-th model call of the demo (its content, not its time)."""
    rng = seeded_rng(seed, "call", index)
    plan = BY_ID[pick(rng, [(m.id, m.share) for m in MANDATES])]
    user = pick(rng, [(u, share) for u, _, share in plan.users if share > 0])
    role = next(r for u, r, _ in plan.users if u == user)
    feature = pick(rng, list(plan.features.items()))
    allowed = VIEWER_PROVIDERS.get(plan.id, ()) if role == "viewer" else tuple(plan.providers)
    if role == "viewer":
        feature = "summarizer"
    tiers = TIER_BY_FEATURE[feature]
    choices = [
        (f"{m.provider}/{m.model}", m.weight * plan.providers[m.provider] * tiers[m.tier])
        for m in MODELS
        if m.provider in allowed and (m.tier == "cheap" or user != THIN_WALLET)
    ]
    chosen = pick(rng, choices)
    model = next(m for m in MODELS if f"{m.provider}/{m.model}" == chosen)
    median_in, spread_in, median_out, spread_out, largest = TOKENS[feature]
    input_tokens = lognormal(rng, median_in, spread_in, 40, largest)
    output_tokens = lognormal(
        rng,
        median_out * model.output_factor,
        spread_out,
        5,
        16_000 if model.tier != "cheap" else 8000,
    )
    cache_read = cache_write = 0
    if model.provider in CACHING and input_tokens >= 1024:
        roll = rng.random()
        if roll < 0.45:
            cache_read = int(input_tokens * rng.uniform(0.4, 0.9))
        elif roll < 0.60 and model.provider == "anthropic":
            cache_write = int(input_tokens * rng.uniform(0.5, 0.9))
    workflow = f"wf-{plan.id}-{rng.randrange(1000, 10000)}" if feature == "automation" else None
    return Call(
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


class Calendar:
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


@dataclass(frozen=True, slots=True)
class HoldSpec:
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


def hold_specs(seed: int, cal: Calendar) -> list[HoldSpec]:
    """The demo's holds: their content depends on the seed only, their times on ``now``."""
    specs = []
    limited_instances = {instance for _, _, instance, _, _ in LIMITS if instance}
    for j, fate in enumerate(_HOLD_FATES):
        rng = seeded_rng(seed, "hold", j)
        if j in _PENDING_HOLDERS:
            mandate, user = _PENDING_HOLDERS[j]
        else:
            mandate = ("acme", "globex", "initech")[j % 3]
            candidates = [
                (u, share)
                for u, role, share in BY_ID[mandate].users
                if role != "viewer" and share > 0 and not _limited(mandate, u) and u != THIN_WALLET
            ]
            user = pick(rng, candidates)
        plan = BY_ID[mandate]
        models = [m for m in MODELS if m.provider in plan.providers and m.tier == "mid"]
        model = models[rng.randrange(len(models))]
        input_tokens = lognormal(rng, 2500, 0.6, 200, 30_000)
        max_output = rng.choice((1024, 2048, 4096))
        used = Usage(
            input_tokens=input_tokens, output_tokens=lognormal(rng, 400, 0.6, 20, max_output)
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
            at = cal.when(seeded_rng(seed, "hold-time", j), feature, plan.utc_offset_h, 120)
            ttl = 900
        specs.append(
            HoldSpec(
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
    return any(m == mandate and u == user for m, u, _, _, _ in LIMITS)
