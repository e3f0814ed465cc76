"""What the demo reports: what it made and what was already there, and the
refusal to fill a ledger it did not make."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from aibill.domain.errors import Conflict
from aibill.domain.model import Mandate


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


class TallyCounter:
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
