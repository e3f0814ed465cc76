"""Filling a ledger with the demo month: the setup the day before it, then every
credit, rate, hold and usage record in time order, each at its own moment."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

from aibill.demo_data.calls import Calendar, Call, HoldSpec, hold_specs, nth_call, seeded_rng
from aibill.demo_data.cast import (
    BY_ID,
    CUSTOM_PRICES,
    LIMITS,
    MANDATES,
    MARKUPS,
    PAYMENTS,
    PROVIDERS,
    RATE_SOURCE,
    RATES,
    RECORDS_PER_TRANCHE,
    RULES,
    STAFF_DESCRIPTION,
    STAFF_ROLE,
    SYSADMIN_USER,
    TOPUPS,
)
from aibill.demo_data.summary import DemoSummary, DemoWouldMerge, Money, TallyCounter
from aibill.domain.clock import ManualClock
from aibill.domain.model import Entry, Mandate
from aibill.domain.principal import SYSTEM
from aibill.service.billing import Billing


@dataclass(slots=True)
class _Event:
    at: datetime
    order: int
    action: Callable[[], None]


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
        self.cal = Calendar(now)
        self.clock = ManualClock(self.cal.day(-1, 8.0))
        ledger = Billing(billing.engine, clock=self.clock, catalog=billing.pricing.catalog)
        principal = billing.principal
        self.ledger = ledger if principal is SYSTEM else ledger.as_principal(principal)
        self.prefix = f"demo-s{seed}"
        self.counts = {
            name: TallyCounter()
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
        currency = {m.id: m.currency for m in MANDATES}
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
        foreign = [plan.id for plan in MANDATES if plan.id in known]
        if foreign and not is_admin:
            raise DemoWouldMerge(foreign)
        everyone = [SYSADMIN_USER, *sorted({u for m in MANDATES for u, _, _ in m.users})]
        if SYSADMIN_USER not in users:
            b.add_user(SYSADMIN_USER)
        if not is_admin:
            b.access.add_sysadmin(SYSADMIN_USER)
        n["sysadmins"].add(not is_admin)
        for plan in MANDATES:
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
        for name, shown in PROVIDERS:
            # Registering again would audit again, and overwrite a display name
            # an admin chose: only a missing (or disabled) provider is registered.
            info = registered.get(name)
            fresh = info is None or not info.enabled
            if fresh:
                b.access.register_provider(name, display_name=shown, enabled=True)
            n["providers"].add(fresh)

        self.clock.set(self.cal.day(-1, 8.75))
        roles = {r.role for r in b.access.custom_roles("globex")}
        if STAFF_ROLE not in roles:
            b.access.define_role("globex", STAFF_ROLE, STAFF_DESCRIPTION)
        n["roles"].add(STAFF_ROLE not in roles)
        for mandate in ("globex", "acme"):
            have = {
                (r.role, r.context.value, r.item, frozenset(p.value for p in r.permissions))
                for r in b.access.rules(mandate)
            }
            for m, role, context, item, perms in RULES:
                if m != mandate:
                    continue
                fresh = (role, context, item, frozenset(perms)) not in have
                if fresh:
                    b.access.add_rule(mandate, role, context, item, perms)
                n["rules"].add(fresh)

        self.clock.set(self.cal.day(-1, 9.0))
        for plan in MANDATES:
            members = {m.user for m in b.members(plan.id)}
            for user, role, _ in plan.users:
                if user not in members:
                    b.add_member(plan.id, user, role=role)
                n["memberships"].add(user not in members)

    def _setup_prices(self) -> None:
        """Markups, custom prices and spending limits."""
        b, n = self.ledger, self.counts
        self.clock.set(self.cal.day(-1, 9.5))
        for percent, of_mandate, of_provider in MARKUPS:
            scopes = {(m.provider, m.model) for m in b.pricing.markups(of_mandate)}
            fresh = (of_provider, None) not in scopes
            if fresh:
                b.pricing.set_markup(percent, mandate=of_mandate, provider=of_provider)
            n["markups"].add(fresh)

        for of_mandate, provider, model, day, prices, output_limit in CUSTOM_PRICES:
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
        for limited, limited_user, instance, period, amount in LIMITS:
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
        for base, quote, schedule in RATES:
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
        for mandate, user, amount, description in PAYMENTS:
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
        for mandate, user, day, hour, reason, amount, description in TOPUPS:
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
            call = nth_call(self.seed, i)
            at = self.cal.when(
                seeded_rng(self.seed, "time", i),
                call.feature_code,
                BY_ID[call.mandate].utc_offset_h,
            )
            events.append(_Event(at, 3, partial(self._record, i, call)))
        return events

    def _record(self, index: int, call: Call) -> None:
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
        for spec in hold_specs(self.seed, self.cal):
            events.append(_Event(spec.at, 2, partial(self._place, spec)))
            if spec.fate == "captured":
                events.append(_Event(spec.resolve_at, 2, partial(self._capture, spec)))
            elif spec.fate == "released":
                events.append(_Event(spec.resolve_at, 2, partial(self._release, spec)))
        return events

    def _place(self, spec: HoldSpec) -> None:
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

    def _capture(self, spec: HoldSpec) -> None:
        entry = self.ledger.capture(
            self.hold_ids[spec.index],
            usage=spec.used,
            idempotency_key=f"{self.prefix}:hold:{spec.index}:capture",
        )
        self._charge(entry)

    def _release(self, spec: HoldSpec) -> None:
        self.ledger.release(
            self.hold_ids[spec.index], idempotency_key=f"{self.prefix}:hold:{spec.index}:release"
        )
