"""What the money path asks and writes: the requests of hold, check and
record_usage (a fixed amount, tokens to price, or a provider's cost), checked
before anything is read, and the holds and entries they post, as the caller
sees them and as they are stored."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from aibill.catalog import CATALOG_CURRENCY
from aibill.domain import errors as e
from aibill.domain import rules
from aibill.domain.model import Entry, EntryKind, Hold, HoldStatus, Tags
from aibill.domain.money import from_micros, to_micros
from aibill.domain.prices import Charge, check_provider_cost
from aibill.domain.pricing_rules import estimate_usage
from aibill.domain.requests import usage_json
from aibill.domain.usage import Usage
from aibill.service.context import OpState
from aibill.service.pricing import Memo, Pricing, check_provider_currency

_NO_TAGS = Tags()


@dataclass(frozen=True, slots=True)
class Posting:
    """One ledger entry about to be written: what ``_post`` inserts."""

    account: str
    kind: EntryKind
    micros: int
    reason: str
    now: datetime
    balance_after: int
    user: str | None = None
    hold_id: str | None = None
    shortfall: int = 0
    captured_after_expiry: bool = False
    description: str | None = None
    corrects: str | None = None
    metadata: dict[str, Any] | None = None
    entry_id: str | None = None
    tags: Tags = _NO_TAGS
    charge: Charge | None = None
    over_limit: str | None = None
    provider_not_allowed: bool = False

    def entry(self, op: OpState) -> Entry:
        """The entry as the caller sees it."""
        tags, charge = self.tags, self.charge
        usage = charge.usage if charge else None
        return Entry(
            id=self.entry_id or new_entry_id(),
            mandate=op.mandate,
            account=self.account,
            kind=self.kind,
            amount=from_micros(self.micros),
            currency=op.currency,
            reason=self.reason,
            posted_at=self.now,
            balance_after=from_micros(self.balance_after),
            user=self.user,
            hold_id=self.hold_id,
            over_balance=self.shortfall > 0,
            shortfall=from_micros(self.shortfall),
            captured_after_expiry=self.captured_after_expiry,
            corrects=self.corrects,
            description=self.description,
            metadata=self.metadata or {},
            provider=tags.provider,
            model=tags.model,
            model_matched=charge.model_matched if charge else None,
            feature_code=tags.feature_code,
            feature_instance=tags.feature_instance,
            workflow_id=tags.workflow_id,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            cache_read_tokens=usage.cache_read_tokens if usage else None,
            cache_write_tokens=usage.cache_write_tokens if usage else None,
            provider_cost=charge.provider_cost if charge else None,
            provider_currency=charge.provider_currency if charge else None,
            price_source=charge.price_source if charge else None,
            fx_rate=charge.fx_rate if charge else None,
            markup_percent=charge.markup_percent if charge else None,
            breakdown=charge_json(charge) if charge else None,
            over_limit=self.over_limit,
            provider_not_allowed=self.provider_not_allowed,
        )

    def row(self, op: OpState, entry: Entry) -> dict[str, Any]:
        """The ``entries`` row of ``entry``, as stored."""
        charge = self.charge
        return {
            "mandate_id": op.mandate,
            "entry_id": entry.id,
            "account_id": self.account,
            "kind": self.kind.value,
            "amount_micros": self.micros,
            "reason": self.reason,
            "posted_at": self.now,
            "balance_after_micros": self.balance_after,
            "user_id": self.user,
            "hold_id": self.hold_id,
            "over_balance": self.shortfall > 0,
            "shortfall_micros": self.shortfall,
            "captured_after_expiry": self.captured_after_expiry,
            "corrects_entry_id": self.corrects,
            "description": self.description,
            "metadata": entry.metadata,
            **self.tags.as_request(),
            "model_matched": entry.model_matched,
            "input_tokens": entry.input_tokens,
            "output_tokens": entry.output_tokens,
            "cache_read_tokens": entry.cache_read_tokens,
            "cache_write_tokens": entry.cache_write_tokens,
            "provider_cost_pico": charge.provider_cost_pico if charge else None,
            "provider_currency": entry.provider_currency,
            "price_source": entry.price_source,
            "fx_rate": None if charge is None else str(charge.fx_rate),
            "markup_percent": None if charge is None else str(charge.markup_percent),
            "breakdown": entry.breakdown,
            "over_limit": self.over_limit,
            "provider_not_allowed": self.provider_not_allowed or None,
        }


@dataclass(frozen=True, slots=True)
class UsageDraw:
    """What one ``record_usage`` call draws (whose account, for what, and when)
    and what its entry says."""

    account: str
    user: str | None
    tags: Tags
    asked: Posted
    happened: bool
    now: datetime
    description: str | None
    metadata: dict[str, Any]


class Posted:
    """What ``record_usage`` posts: a fixed amount, usage to price, or a
    provider cost to price (``request`` is how the idempotency record keeps it)."""

    __slots__ = ("cost", "cost_currency", "micros", "request", "usage")

    def __init__(
        self,
        micros: int,
        usage: Usage | None,
        cost: Decimal | None,
        cost_currency: str,
        request: dict[str, Any],
    ) -> None:
        self.micros, self.usage, self.request = micros, usage, request
        self.cost, self.cost_currency = cost, cost_currency

    @classmethod
    def of(
        cls,
        amount: Decimal | None,
        usage: Usage | None,
        provider_cost: Decimal | None,
        provider_currency: str | None,
        tags: Tags,
    ) -> Posted:
        given = [v for v in (amount, usage, provider_cost) if v is not None]
        if len(given) != 1:
            raise e.InvalidRequest(
                "Give one of amount=, usage= (with provider and model) or provider_cost=.",
                field="amount",
            )
        if provider_currency is not None and provider_cost is None:
            raise e.InvalidRequest(
                "provider_currency goes with provider_cost=.", field="provider_currency"
            )
        if provider_cost is not None:
            cost = check_provider_cost(provider_cost)
            currency = check_provider_currency(provider_currency or CATALOG_CURRENCY)
            text = format(cost.normalize(), "f")
            request = {"amount": None, "usage": None, "provider_cost": text}
            return cls(0, None, cost, currency, {**request, "provider_currency": currency})
        if usage is not None:
            if not isinstance(usage, Usage):
                raise e.InvalidRequest("usage must be an aibill.Usage.", field="usage")
            if tags.provider is None or tags.model is None:
                raise e.InvalidRequest("Pricing usage needs provider and model.", field="model")
            return cls(0, usage, None, "", {"amount": None, "usage": usage_json(usage)})
        micros = to_micros(amount)
        return cls(micros, None, None, "", {"amount": str(from_micros(micros)), "usage": None})

    def charge(
        self,
        pricing: Pricing,
        conn: Connection,
        op: OpState,
        tags: Tags,
        now: datetime,
        memo: Memo | None = None,
    ) -> Charge | None:
        """The priced forms' charge, in the mandate's currency at ``now``
        (``memo``: see :meth:`Pricing.quote`)."""
        if self.cost is not None:
            return pricing.quote_cost(
                conn,
                mandate=op.mandate,
                currency=op.currency,
                provider_cost=self.cost,
                provider_currency=self.cost_currency,
                provider=tags.provider,
                model=tags.model,
                at=now,
                memo=memo,
            )
        if self.usage is None:
            return None
        assert tags.provider is not None and tags.model is not None
        return pricing.quote(
            conn,
            mandate=op.mandate,
            currency=op.currency,
            provider=tags.provider,
            model=tags.model,
            usage=self.usage,
            at=now,
            memo=memo,
        )


class Asked:
    """What a hold asks for: a fixed amount, or tokens to price as an estimate."""

    __slots__ = ("input_tokens", "max_output_tokens", "micros", "request")

    def __init__(
        self,
        micros: int,
        input_tokens: int | None,
        max_output_tokens: int | None,
        request: dict[str, Any],
    ) -> None:
        self.micros = micros
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        self.request = request

    @classmethod
    def of(
        cls,
        amount: Decimal | None,
        tags: Tags,
        input_tokens: int | None,
        max_output_tokens: int | None,
    ) -> Asked:
        priced = input_tokens is not None or max_output_tokens is not None
        if amount is not None:
            if priced:
                raise e.InvalidRequest(
                    "Give either amount= or the tokens to price, not both.", field="amount"
                )
            micros = to_micros(amount)
            return cls(micros, None, None, {"amount": str(from_micros(micros))})
        if not priced:
            raise e.InvalidRequest(
                "Give amount=, or provider, model, input_tokens and max_output_tokens.",
                field="amount",
            )
        if tags.provider is None or tags.model is None:
            raise e.InvalidRequest("Pricing a call needs provider and model.", field="model")
        counts = {"input_tokens": input_tokens, "max_output_tokens": max_output_tokens}
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**12:
                raise e.InvalidRequest(f"{name} must be a whole number >= 0.", field=name)
        return cls(0, input_tokens, max_output_tokens, {"amount": None, **counts})

    @classmethod
    def for_check(
        cls,
        estimate: Decimal | None,
        tags: Tags,
        input_tokens: int | None,
        max_output_tokens: int | None,
    ) -> Asked:
        """What a check asks about: an ``estimate`` (zero allowed), or the
        priced form, which needs all of provider, model and both counts."""
        priced = {"model": tags.model, "input_tokens": input_tokens}
        priced["max_output_tokens"] = max_output_tokens
        if estimate is not None:
            given = [name for name, value in priced.items() if value is not None]
            if given:
                raise e.InvalidRequest(
                    f"Give either estimate= or the call to price ({', '.join(given)}), not both.",
                    field="estimate",
                )
            return cls(to_micros(estimate, field="estimate", allow_zero=True), None, None, {})
        missing = [name for name, value in priced.items() if value is None]
        if tags.provider is None:
            missing.insert(0, "provider")
        if missing:
            raise e.InvalidRequest(
                "Give estimate=, or the call to price: provider, model, input_tokens and "
                f"max_output_tokens (missing: {', '.join(missing)}).",
                field=missing[0] if len(missing) < 4 else "estimate",
            )
        return cls.of(None, tags, input_tokens, max_output_tokens)

    def estimate(
        self, pricing: Pricing, conn: Connection, op: OpState, tags: Tags, now: datetime
    ) -> Charge | None:
        """The priced form's estimate (None for a fixed amount): the input at
        full price and the output asked, capped at the model's output limit."""
        if self.input_tokens is None or self.max_output_tokens is None:
            return None
        assert tags.provider is not None and tags.model is not None
        limit = pricing.output_limit(conn, op.mandate, tags.provider, tags.model)
        usage = estimate_usage(self.input_tokens, self.max_output_tokens, limit)
        return pricing.quote(
            conn,
            mandate=op.mandate,
            currency=op.currency,
            provider=tags.provider,
            model=tags.model,
            usage=usage,
            at=now,
        )


def new_hold(
    op: OpState,
    account: str,
    user: str | None,
    micros: int,
    charge: Charge | None,
    tags: Tags,
    meta: dict[str, str | int],
    now: datetime,
    ttl_s: int,
) -> Hold:
    """The pending hold ``hold`` creates, as its caller sees it."""
    return Hold(
        id=f"{op.mandate}:hold_{secrets.token_hex(12)}",
        mandate=op.mandate,
        account=account,
        user=user,
        amount=from_micros(micros),
        currency=op.currency,
        status=HoldStatus.PENDING,
        created_at=now,
        expires_at=rules.hold_expires_at(now, ttl_s),
        metadata=meta,
        provider=tags.provider,
        model=tags.model,
        model_matched=charge.model_matched if charge else None,
        feature_code=tags.feature_code,
        feature_instance=tags.feature_instance,
        workflow_id=tags.workflow_id,
        estimate=charge_json(charge) if charge else None,
    )


def hold_row(hold: Hold, micros: int) -> dict[str, Any]:
    """The ``holds`` row of a new pending ``hold``, as stored."""
    return {
        "mandate_id": hold.mandate,
        "hold_id": hold.id,
        "account_id": hold.account,
        "user_id": hold.user,
        "amount_micros": micros,
        "status": HoldStatus.PENDING.value,
        "created_at": hold.created_at,
        "expires_at": hold.expires_at,
        "metadata": hold.metadata,
        "provider": hold.provider,
        "model": hold.model,
        "feature_code": hold.feature_code,
        "feature_instance": hold.feature_instance,
        "workflow_id": hold.workflow_id,
        "model_matched": hold.model_matched,
        "estimate": hold.estimate,
    }


def charge_json(charge: Charge) -> dict[str, Any]:
    """The whole breakdown of a priced amount, JSON-ready, money as strings:
    usage, unit prices and components, provider cost, rate, markup, amount."""
    return dict(charge.breakdown)


def new_entry_id() -> str:
    """Unique, and roughly in posting order (a tiebreak for equal posting times)."""
    return f"e{time.time_ns() // 1000:014x}{secrets.token_hex(5)}"
