"""A batch of usage records decides each record as ``record_usage`` would,
one at a time, in order (concepts.md rule 13): hypothesis draws records of
every form (a fixed amount, tokens to price, a provider's cost), for several
users, providers and models, over and under the balance, with keys used twice;
the same records are posted one by one in one mandate and as one batch in a
twin mandate, and every outcome must be the same."""

from __future__ import annotations

import itertools
from decimal import Decimal as D
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aibill import Billing, Usage, UsageRecord
from aibill.domain import errors as e

USERS = ("alice", "bob", None)
PROVIDERS = (("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("mistral", "mistral-large-latest"))
_twins = itertools.count()

records = st.lists(
    st.tuples(
        st.integers(0, 5),  # the key: a few, so some repeat
        st.sampled_from(["amount", "usage", "cost"]),
        st.sampled_from(PROVIDERS),
        st.sampled_from(USERS),
        st.booleans(),  # already happened
        st.integers(1, 400_000),  # micro-units, or tokens
    ),
    min_size=1,
    max_size=12,
)


def _twin(billing: Billing, name: str, model: str) -> None:
    billing.create_mandate(name, currency="EUR", billing_model=model)
    for user in USERS[:2]:
        assert user is not None
        billing.add_member(name, user)
        if model == "prepay_user":
            billing.credit(name, D("0.50"), user=user, idempotency_key=f"fund-{user}")
    if model == "prepay_mandate":
        billing.credit(name, D("0.50"), idempotency_key="fund")
    billing.pricing.set_markup(D("12.5"), mandate=name, provider="openai")


def _record(mandate: str, drawn: tuple[Any, ...]) -> UsageRecord:
    key, form, (provider, model), user, happened, size = drawn
    fields: dict[str, Any] = {"user": user, "already_happened": happened}
    if form == "amount":
        fields["amount"] = D(size) / 1_000_000
    elif form == "usage":
        fields |= {"provider": provider, "model": model}
        fields["usage"] = Usage(input_tokens=size, output_tokens=size // 7)
    else:
        fields |= {"provider": provider, "model": model, "provider_cost": D(size) / 10**7}
    return UsageRecord(mandate, f"k{key}", **fields)


def _seen(outcome: Any) -> tuple[Any, ...]:
    """What a caller sees of an outcome, without the ids and mandate names that differ."""
    if isinstance(outcome, e.AibillError):
        details = {k: v for k, v in outcome.details.items() if k != "mandate"}
        return ("error", outcome.code, str(sorted(details.items())))
    return (
        "entry",
        outcome.amount,
        outcome.currency,
        outcome.balance_after,
        outcome.shortfall,
        outcome.over_balance,
        outcome.provider_not_allowed,
        outcome.replayed,
        outcome.user,
        outcome.account,
        _unnamed(outcome.breakdown),
    )


def _unnamed(breakdown: dict[str, Any] | None) -> dict[str, Any] | None:
    """A breakdown without the name of the mandate whose markup it applied."""
    if breakdown is None:
        return None
    return {**breakdown, "markup": {**breakdown["markup"], "mandate": None}}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=records, model=st.sampled_from(["prepay_mandate", "prepay_user", "unlimited"]))
def test_a_batch_decides_each_record_as_one_call_would(
    billing: Billing, drawn: list[tuple[Any, ...]], model: str
) -> None:
    if not billing.access.providers():
        billing.access.register_provider("openai")
        billing.pricing.set_exchange_rate("USD", "EUR", D("0.9125"))
        for user in USERS[:2]:
            assert user is not None
            billing.add_user(user)
    n = next(_twins)
    one, batch = f"one-{n}", f"batch-{n}"
    _twin(billing, one, model)
    _twin(billing, batch, model)
    alone: list[Any] = []
    for d in drawn:
        r = _record(one, d)
        fields = {f: getattr(r, f) for f in r.__slots__ if f not in ("mandate", "idempotency_key")}
        try:
            alone.append(billing.record_usage(one, idempotency_key=r.idempotency_key, **fields))
        except e.AibillError as exc:
            alone.append(exc)
    together = billing.record_usage_batch([_record(batch, d) for d in drawn])
    got = [o.entry if o.ok else o.error for o in together]
    assert [_seen(o) for o in got] == [_seen(o) for o in alone]
    for user in (None, "alice", "bob"):
        if (model == "prepay_user") == (user is not None):
            assert (
                billing.balance(batch, user=user).balance == billing.balance(one, user=user).balance
            )
