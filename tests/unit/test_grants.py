"""The rules of credit grants (concepts.md rule 6), as pure functions: the
draw-down order, states at an instant, expiry exactly once, and the debt a
new grant pays first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aibill.domain import errors as e
from aibill.domain.grants import (
    GrantAmounts,
    GrantCategory,
    GrantState,
    check_terms,
    debt,
    draw,
    draw_order,
    due_expiries,
    grant_state,
    settle,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _grant(gid: str, amount: int, **terms: object) -> GrantAmounts:
    values: dict[str, object] = {
        "priority": 50,
        "effective_at": NOW - DAY,
        "expires_at": None,
        "created_at": NOW - DAY,
    }
    values.update(terms)
    return GrantAmounts(grant_id=gid, amount_micros=amount, **values)  # type: ignore[arg-type]


def test_the_worked_example_draws_the_promotional_grant_first() -> None:
    """A promotional grant of 10 expiring tomorrow and a paid grant of 100: a
    usage of 15 takes 10 from the first and 5 from the second."""
    promo = _grant("promo", 10_000_000, expires_at=NOW + DAY)
    paid = _grant("paid", 100_000_000, created_at=NOW - DAY - DAY)
    drawn = draw([paid, promo], 15_000_000, NOW)
    assert drawn.draws == (("promo", 10_000_000), ("paid", 5_000_000))
    assert drawn.unfunded_micros == 0
    spent = _grant("promo", 10_000_000, expires_at=NOW + DAY, drawn_micros=10_000_000)
    assert due_expiries([spent], NOW + DAY) == []
    assert grant_state(spent, NOW + DAY) is GrantState.SPENT


def test_priority_overrides_the_expiry_order() -> None:
    soon = _grant("soon", 5, expires_at=NOW + DAY, priority=60)
    later = _grant("later", 5, priority=10)
    assert [g for g, _ in draw([soon, later], 7, NOW).draws] == ["later", "soon"]


def test_a_grant_is_expired_at_its_instant_and_expires_once() -> None:
    g = _grant("g", 20, expires_at=NOW, drawn_micros=10)
    assert grant_state(g, NOW - timedelta(microseconds=1)) is GrantState.ACTIVE
    assert grant_state(g, NOW) is GrantState.EXPIRED
    assert draw([g], 5, NOW).unfunded_micros == 5
    assert due_expiries([g], NOW) == [("g", 10)]
    posted = _grant("g", 20, expires_at=NOW, drawn_micros=10, expired_micros=10)
    assert due_expiries([posted], NOW + DAY) == []
    assert grant_state(posted, NOW + DAY) is GrantState.EXPIRED


def test_scheduled_and_voided_grants_are_not_drawn() -> None:
    scheduled = _grant("s", 10, effective_at=NOW + DAY)
    voided = _grant("v", 10, voided=True, voided_micros=10)
    assert grant_state(scheduled, NOW) is GrantState.SCHEDULED
    assert grant_state(voided, NOW) is GrantState.VOIDED
    assert draw([scheduled, voided], 3, NOW).unfunded_micros == 3
    assert grant_state(scheduled, NOW + DAY) is GrantState.ACTIVE


def test_a_new_grant_pays_the_debt_first() -> None:
    assert debt(balance_micros=-7, active_remaining_micros=0) == 7
    assert settle(7, 10) == 7 and settle(7, 5) == 5 and settle(0, 5) == 0


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        (("gift", 50, NOW, None), "category"),
        (("paid", 101, NOW, None), "priority"),
        (("paid", -1, NOW, None), "priority"),
        (("paid", True, NOW, None), "priority"),
        (("paid", "5", NOW, None), "priority"),
        (("promotional", 5, NOW, NOW), "expires_at"),
    ],
)
def test_bad_terms_name_their_field(terms: tuple[object, ...], field: str) -> None:
    with pytest.raises(e.InvalidRequest) as refused:
        check_terms(*terms)  # type: ignore[arg-type]
    assert refused.value.details["field"] == field


def test_good_terms() -> None:
    terms = check_terms("promotional", 0, NOW, NOW + DAY)
    assert terms.category is GrantCategory.PROMOTIONAL and terms.priority == 0


_grants = st.lists(
    st.builds(
        lambda i, amount, used, priority, eff, exp: _grant(
            f"g{i}",
            amount,
            drawn_micros=min(used, amount),
            priority=priority,
            effective_at=NOW + timedelta(hours=eff),
            expires_at=None if exp is None else NOW + timedelta(hours=eff + exp),
        ),
        st.integers(0, 10**6),
        st.integers(1, 10**6),
        st.integers(0, 10**6),
        st.integers(0, 100),
        st.integers(-48, 48),
        st.one_of(st.none(), st.integers(1, 96)),
    ),
    max_size=8,
    unique_by=lambda g: g.grant_id,
)


@given(_grants, st.integers(0, 5 * 10**6), st.integers(-96, 96))
def test_a_draw_takes_exactly_what_the_active_grants_allow(
    grants: list[GrantAmounts], amount: int, hours: int
) -> None:
    now = NOW + timedelta(hours=hours)
    drawn = draw(grants, amount, now)
    by_id = {g.grant_id: g for g in grants}
    active = [g for g in grants if grant_state(g, now) is GrantState.ACTIVE]
    assert sum(m for _, m in drawn.draws) + drawn.unfunded_micros == amount
    assert drawn.unfunded_micros == max(0, amount - sum(g.remaining_micros for g in active))
    for gid, micros in drawn.draws:
        assert 0 < micros <= by_id[gid].remaining_micros
        assert grant_state(by_id[gid], now) is GrantState.ACTIVE
    # Only the last grant drawn may be left with something: the order is kept.
    keys = [draw_order(by_id[gid]) for gid, _ in drawn.draws]
    assert keys == sorted(keys)
    for gid, micros in drawn.draws[:-1]:
        assert micros == by_id[gid].remaining_micros
    untouched = [g for g in active if g.grant_id not in {gid for gid, _ in drawn.draws}]
    if drawn.draws and untouched:
        assert min(draw_order(g) for g in untouched) > keys[-1]
