"""The ledger's rules (DESIGN.md: Money, Balances, Operations 2-9), each told
as a small story with exact figures, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

import aibill
from aibill import Billing, ManualClock
from aibill.store.schema import REFERENCE_TABLES


def funded(billing: Billing, mandate: str = "acme", amount: str = "100", **kw: str) -> str:
    billing.create_mandate(mandate, billing_model=kw.get("model", "prepay_mandate"))
    billing.add_user("alice")
    billing.add_member(mandate, "alice")
    if D(amount) > 0:
        billing.credit(mandate, D(amount), idempotency_key=f"fund-{mandate}")
    return mandate


def count_entries(billing: Billing, mandate: str) -> int:
    return len(billing.history(mandate, limit=1000).entries)


# ---------------------------------------------------------------------- money


def test_worked_example_hold_capture_usage(billing: Billing) -> None:
    """100 CHF in; hold 0.50, capture 0.31; record 0.02: 99.67 left, nothing pending."""
    m = funded(billing)
    hold = billing.hold(m, amount=D("0.50"), user="alice", idempotency_key="h1")
    mid = billing.balance(m)
    assert (mid.balance, mid.available, mid.pending) == (D("100"), D("99.5"), D("0.5"))
    entry = billing.capture(hold.id, amount=D("0.31"), idempotency_key="c1")
    assert entry.amount == D("0.31") and entry.balance_after == D("99.69")
    assert entry.hold_id == hold.id and entry.user == "alice" and not entry.over_balance
    billing.record_usage(m, amount=D("0.02"), user="alice", idempotency_key="u1")
    end = billing.balance(m)
    assert (end.balance, end.available, end.pending) == (D("99.67"), D("99.67"), D("0"))
    assert end.currency == "CHF" and end.account == "pool"
    assert billing.verify() == []


def test_micro_units_add_up_exactly(billing: Billing) -> None:
    """A thousand credits of 0.000001 and ten of 0.1 make exactly 1.001; no float drift."""
    m = funded(billing, amount="0")
    for i in range(10):
        billing.credit(m, D("0.1"), idempotency_key=f"tenth-{i}")
    for i in range(5):
        billing.credit(m, D("0.000001"), idempotency_key=f"micro-{i}")
    assert billing.balance(m).balance == D("1.000005")
    assert str(billing.balance(m).balance) == "1.000005"


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (0.5, "invalid_amount"),
        (D("0.0000001"), "invalid_amount"),
        (D("-1"), "invalid_amount"),
        (D("0"), "invalid_amount"),
        (D("NaN"), "invalid_amount"),
        ("abc", "invalid_amount"),
        (True, "invalid_amount"),
    ],
)
def test_bad_amounts_are_refused_and_write_nothing(
    billing: Billing, amount: object, code: str
) -> None:
    m = funded(billing)
    before = billing.balance(m)
    with pytest.raises(aibill.InvalidAmount) as info:
        billing.credit(m, amount, idempotency_key="bad")  # type: ignore[arg-type]
    assert info.value.code == code
    with pytest.raises(aibill.InvalidAmount):
        billing.hold(m, amount=amount, idempotency_key="bad")  # type: ignore[arg-type]
    assert billing.balance(m) == before
    # A malformed request stores nothing: the key is still free for a good one.
    assert billing.credit(m, D("1"), idempotency_key="bad").replayed is False


def test_float_error_says_why(billing: Billing) -> None:
    m = funded(billing)
    with pytest.raises(aibill.InvalidAmount, match="float"):
        billing.credit(m, 0.1, idempotency_key="f")  # type: ignore[arg-type]


# ------------------------------------------------------------------- mandates


def test_create_mandate_is_idempotent_and_names_conflicts(billing: Billing) -> None:
    first = billing.create_mandate("acme", billing_model="prepay_user", currency="EUR")
    again = billing.create_mandate("acme", billing_model="prepay_user", currency="EUR")
    assert first == again
    with pytest.raises(aibill.AlreadyExists) as info:
        billing.create_mandate("acme", billing_model="unlimited", currency="EUR")
    assert info.value.details["field"] == "billing_model"
    with pytest.raises(aibill.InvalidRequest):
        billing.create_mandate("bad", billing_model="postpaid")
    with pytest.raises(aibill.InvalidRequest):
        billing.create_mandate("bad", currency="chf")
    with pytest.raises(aibill.InvalidRequest):
        billing.create_mandate("has space")


def test_unknown_names_have_their_own_errors(billing: Billing) -> None:
    m = funded(billing)
    with pytest.raises(aibill.UnknownMandate) as info:
        billing.balance("nope")
    assert info.value.code == "unknown_mandate"
    with pytest.raises(aibill.UnknownUser):
        billing.hold(m, amount=D("1"), user="ghost", idempotency_key="g")
    billing.add_user("bob")
    with pytest.raises(aibill.NotAMember) as member:
        billing.hold(m, amount=D("1"), user="bob", idempotency_key="g")
    assert member.value.code == "not_a_member"
    with pytest.raises(aibill.HoldNotFound):
        billing.capture(f"{m}:hold_missing", amount=D("1"))
    with pytest.raises(aibill.InvalidRequest):
        billing.capture("not-a-hold-id", amount=D("1"))
    assert billing.balance(m).pending == 0


# ------------------------------------------------------------- billing models


def test_prepay_user_has_a_wallet_per_user(billing: Billing) -> None:
    billing.create_mandate("team", billing_model="prepay_user")
    for u in ("alice", "bob"):
        billing.add_user(u)
        billing.add_member("team", u)
    billing.credit("team", D("10"), user="alice", idempotency_key="a")
    billing.credit("team", D("3"), user="bob", idempotency_key="b")
    billing.hold("team", amount=D("4"), user="alice", idempotency_key="ha")
    with pytest.raises(aibill.InsufficientBalance):
        billing.hold("team", amount=D("4"), user="bob", idempotency_key="hb")
    alice, bob = billing.balance("team", user="alice"), billing.balance("team", user="bob")
    assert (alice.account, alice.available) == ("user:alice", D("6"))
    assert (bob.account, bob.available, bob.user) == ("user:bob", D("3"), "bob")
    with pytest.raises(aibill.InvalidRequest, match="wallet"):
        billing.credit("team", D("1"), idempotency_key="no-user")


def test_unlimited_records_everything_and_may_go_negative(billing: Billing) -> None:
    m = funded(billing, "open", amount="0", model="unlimited")
    hold = billing.hold(m, amount=D("50"), idempotency_key="h")
    entry = billing.capture(hold.id, amount=D("70"))
    assert entry.balance_after == D("-70") and not entry.over_balance
    usage = billing.record_usage(m, amount=D("5"), idempotency_key="u")
    assert not usage.over_balance
    replay = billing.record_usage(m, amount=D("5"), idempotency_key="u")
    assert replay.replayed and replay.balance_after == D("-75") == usage.balance_after
    assert billing.balance(m).balance == D("-75")
    assert billing.verify() == []


# ---------------------------------------------------------------------- holds


def test_hold_refused_when_short_changes_nothing_and_replays(billing: Billing) -> None:
    m = funded(billing, amount="1")
    before = billing.balance(m)
    with pytest.raises(aibill.InsufficientBalance) as info:
        billing.hold(m, amount=D("1.000001"), idempotency_key="big")
    err = info.value
    assert err.code == "insufficient_balance"
    assert (err.available, err.required) == (D("1"), D("1.000001"))
    assert billing.balance(m) == before
    # The refusal is the key's first outcome: a retry gets it again even after a top-up.
    billing.credit(m, D("10"), idempotency_key="topup")
    with pytest.raises(aibill.InsufficientBalance) as again:
        billing.hold(m, amount=D("1.000001"), idempotency_key="big")
    assert again.value.required == D("1.000001")
    assert billing.balance(m).pending == 0
    assert billing.hold(m, amount=D("1.000001"), idempotency_key="big-2").amount == D("1.000001")


def test_hold_up_to_exactly_the_available_balance(billing: Billing) -> None:
    m = funded(billing, amount="1")
    billing.hold(m, amount=D("0.6"), idempotency_key="a")
    billing.hold(m, amount=D("0.4"), idempotency_key="b")
    assert billing.balance(m).available == 0
    with pytest.raises(aibill.InsufficientBalance):
        billing.hold(m, amount=D("0.000001"), idempotency_key="c")


def test_overdraft_limit_extends_what_holds_may_take(billing: Billing) -> None:
    m = funded(billing, amount="1")
    billing.set_overdraft_limit(m, D("2"))
    assert billing.balance(m).available == D("3")
    billing.hold(m, amount=D("3"), idempotency_key="a")
    with pytest.raises(aibill.InsufficientBalance):
        billing.hold(m, amount=D("0.01"), idempotency_key="b")


def test_capture_below_the_hold_frees_the_rest(billing: Billing) -> None:
    m = funded(billing, amount="10")
    hold = billing.hold(m, amount=D("2"), idempotency_key="h")
    billing.capture(hold.id, amount=D("0.5"))
    bal = billing.balance(m)
    assert (bal.balance, bal.pending, bal.available) == (D("9.5"), D("0"), D("9.5"))
    assert billing.get_hold(hold.id).status == aibill.HoldStatus.CAPTURED
    assert billing.get_hold(hold.id).captured_amount == D("0.5")


def test_capture_overage_is_drawn_from_available_then_goes_negative(billing: Billing) -> None:
    """1 CHF funded, 0.80 held, 1.50 used: 0.50 shortfall, marked, and holds stop."""
    m = funded(billing, amount="1")
    hold = billing.hold(m, amount=D("0.8"), idempotency_key="h")
    entry = billing.capture(hold.id, amount=D("1.5"))
    assert entry.amount == D("1.5")
    assert entry.over_balance and entry.shortfall == D("0.5")
    assert entry.balance_after == D("-0.5")
    assert billing.balance(m).available == D("-0.5")
    with pytest.raises(aibill.InsufficientBalance):
        billing.hold(m, amount=D("0.01"), idempotency_key="next")
    billing.credit(m, D("1"), idempotency_key="topup")
    assert billing.hold(m, amount=D("0.5"), idempotency_key="next-2").amount == D("0.5")
    assert billing.verify() == []


def test_overage_covered_by_available_is_not_marked(billing: Billing) -> None:
    m = funded(billing, amount="5")
    hold = billing.hold(m, amount=D("1"), idempotency_key="h")
    entry = billing.capture(hold.id, amount=D("3"))
    assert not entry.over_balance and entry.shortfall == 0
    assert billing.balance(m).balance == D("2")


def test_a_hold_resolves_exactly_once(billing: Billing) -> None:
    m = funded(billing)
    hold = billing.hold(m, amount=D("1"), idempotency_key="h")
    first = billing.capture(hold.id, amount=D("0.7"), idempotency_key="c1")
    # Same arguments, even under another key: the first outcome, no second debit.
    again = billing.capture(hold.id, amount=D("0.7"), idempotency_key="c2")
    assert again.id == first.id and again.replayed
    with pytest.raises(aibill.HoldAlreadyCaptured) as info:
        billing.capture(hold.id, amount=D("0.9"))
    assert info.value.code == "hold_already_captured"
    with pytest.raises(aibill.HoldAlreadyCaptured):
        billing.release(hold.id)
    assert len(billing.history(m, hold_id=hold.id).entries) == 1
    assert billing.balance(m).balance == D("99.3")

    other = billing.hold(m, amount=D("1"), idempotency_key="h2")
    released = billing.release(other.id, idempotency_key="r1")
    assert released.status == aibill.HoldStatus.RELEASED and not released.replayed
    assert billing.release(other.id).replayed
    with pytest.raises(aibill.HoldAlreadyReleased):
        billing.capture(other.id, amount=D("0.1"))
    assert billing.balance(m).pending == 0
    assert billing.verify() == []


# --------------------------------------------------------------------- expiry


def test_expired_hold_frees_its_reservation(billing: Billing, clock: ManualClock) -> None:
    m = funded(billing, amount="1")
    hold = billing.hold(m, amount=D("1"), ttl_s=60, idempotency_key="h")
    clock.advance(59)
    assert billing.balance(m).pending == D("1")
    clock.advance(1)
    assert billing.balance(m).pending == 0
    assert billing.get_hold(hold.id).status == aibill.HoldStatus.EXPIRED
    assert billing.release(hold.id).status == aibill.HoldStatus.EXPIRED
    assert billing.verify() == []


def test_expiry_is_applied_when_a_hold_needs_the_money(
    billing: Billing, clock: ManualClock
) -> None:
    m = funded(billing, amount="1")
    billing.hold(m, amount=D("1"), ttl_s=30, idempotency_key="h")
    clock.advance(31)
    assert billing.hold(m, amount=D("1"), idempotency_key="h2").amount == D("1")


def test_capture_after_expiry_still_posts_and_says_so(billing: Billing, clock: ManualClock) -> None:
    m = funded(billing, amount="1")
    hold = billing.hold(m, amount=D("0.8"), ttl_s=60, idempotency_key="h")
    clock.advance(120)
    billing.hold(m, amount=D("0.9"), idempotency_key="other")  # took the freed money
    entry = billing.capture(hold.id, amount=D("0.3"))
    assert entry.captured_after_expiry
    assert entry.over_balance and entry.shortfall == D("0.2")
    bal = billing.balance(m)
    assert (bal.balance, bal.pending, bal.available) == (D("0.7"), D("0.9"), D("-0.2"))
    assert billing.get_hold(hold.id).status == aibill.HoldStatus.CAPTURED
    assert billing.verify() == []


def test_sweeper_expires_holds_in_every_mandate(billing: Billing, clock: ManualClock) -> None:
    a = funded(billing, "a")
    b = funded(billing, "b")
    billing.hold(a, amount=D("1"), ttl_s=10, idempotency_key="h")
    billing.hold(b, amount=D("1"), ttl_s=10, idempotency_key="h")
    billing.hold(b, amount=D("1"), ttl_s=1000, idempotency_key="long")
    clock.advance(11)
    assert billing.sweep_expired() == 2
    assert billing.sweep_expired() == 0
    assert billing.verify() == []


# --------------------------------------------------------------- idempotency


def test_replay_returns_the_first_result_and_writes_nothing(billing: Billing) -> None:
    m = funded(billing)
    first = billing.credit(m, D("5"), reason="admin", idempotency_key="k")
    n = count_entries(billing, m)
    again = billing.credit(m, D("5"), reason="admin", idempotency_key="k")
    assert again.replayed and not first.replayed
    assert again.id == first.id and again.amount == first.amount
    assert again.posted_at == first.posted_at
    assert count_entries(billing, m) == n
    hold = billing.hold(m, amount=D("1"), user="alice", idempotency_key="hk")
    replay = billing.hold(m, amount=D("1"), user="alice", idempotency_key="hk")
    assert replay.id == hold.id and replay.replayed
    assert billing.balance(m).pending == D("1")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": D("6")}, "amount"),
        ({"reason": "refund"}, "reason"),
        ({"user": "alice"}, "user"),
    ],
)
def test_same_key_other_arguments_names_the_field(
    billing: Billing, change: dict[str, object], field: str
) -> None:
    m = funded(billing)
    args: dict[str, object] = {"amount": D("5"), "reason": "admin", "user": None}
    billing.credit(m, args.pop("amount"), idempotency_key="k", **args)  # type: ignore[arg-type]
    args = {"amount": D("5"), "reason": "admin", "user": None, **change}
    before = billing.balance(m)
    with pytest.raises(aibill.IdempotencyConflict) as info:
        billing.credit(m, args.pop("amount"), idempotency_key="k", **args)  # type: ignore[arg-type]
    assert info.value.field == field and info.value.code == "idempotency_conflict"
    assert field in str(info.value)
    assert billing.balance(m) == before


def test_a_key_used_for_another_operation_conflicts(billing: Billing) -> None:
    m = funded(billing)
    billing.credit(m, D("1"), idempotency_key="k")
    with pytest.raises(aibill.IdempotencyConflict) as info:
        billing.hold(m, amount=D("1"), idempotency_key="k")
    assert info.value.field == "operation"


def test_keys_are_scoped_to_the_mandate(billing: Billing) -> None:
    a = funded(billing, "a", amount="0")
    b = funded(billing, "b", amount="0")
    ea = billing.credit(a, D("1"), idempotency_key="same")
    eb = billing.credit(b, D("2"), idempotency_key="same")
    assert not eb.replayed and ea.id != eb.id
    assert billing.balance(b).balance == D("2")


# -------------------------------------------------------------- record_usage


def test_record_usage_is_refused_when_short_unless_it_happened(billing: Billing) -> None:
    m = funded(billing, amount="1")
    with pytest.raises(aibill.InsufficientBalance):
        billing.record_usage(m, amount=D("2"), user="alice", idempotency_key="u")
    assert billing.balance(m).balance == D("1")
    entry = billing.record_usage(
        m, amount=D("2"), user="alice", already_happened=True, idempotency_key="u2"
    )
    assert entry.over_balance and entry.shortfall == D("1")
    assert billing.balance(m).balance == D("-1")
    assert billing.verify() == []


# ------------------------------------------------------------------ credits


def test_credit_reasons_and_corrections(billing: Billing) -> None:
    m = funded(billing, amount="0")
    wrong = billing.credit(m, D("50"), reason="payment", idempotency_key="p")
    fix = billing.credit(m, D("5"), reason="refund", corrects=wrong.id, idempotency_key="r")
    assert fix.corrects == wrong.id and fix.reason == "refund"
    with pytest.raises(aibill.InvalidRequest):
        billing.credit(m, D("1"), reason="gift", idempotency_key="x")
    with pytest.raises(aibill.NotFound):
        billing.credit(m, D("1"), reason="refund", corrects="e-missing", idempotency_key="y")
    assert billing.balance(m).balance == D("55")


# ------------------------------------------------------------------ history


def test_history_is_newest_first_with_cursor_and_filters(
    billing: Billing, clock: ManualClock
) -> None:
    m = funded(billing, amount="0")
    start = clock()
    for i in range(7):
        clock.advance(60)
        billing.credit(m, D(i + 1), idempotency_key=f"c{i}")
    hold = billing.hold(m, amount=D("1"), user="alice", idempotency_key="h")
    billing.capture(hold.id, amount=D("1"))
    page = billing.history(m, limit=3)
    amounts = [e.amount for e in page.entries]
    assert amounts == [D("1"), D("7"), D("6")]
    seen = list(page.entries)
    while page.cursor:
        page = billing.history(m, limit=3, cursor=page.cursor)
        seen += page.entries
    assert len(seen) == 8 and len({e.id for e in seen}) == 8
    assert [e.posted_at for e in seen] == sorted((e.posted_at for e in seen), reverse=True)
    assert [e.kind for e in billing.history(m, kind="debit").entries] == [aibill.EntryKind.DEBIT]
    assert len(billing.history(m, user="alice").entries) == 1
    window = billing.history(
        m, since=start + timedelta(seconds=120), until=start + timedelta(seconds=240)
    )
    assert [e.amount for e in window.entries] == [D("3"), D("2")]
    with pytest.raises(aibill.InvalidRequest):
        billing.history(m, cursor="garbage!")
    with pytest.raises(aibill.InvalidRequest):
        billing.history(m, limit=0)
    with pytest.raises(aibill.InvalidRequest):
        billing.history(m, limit=1001)


def test_history_never_shows_another_mandate(billing: Billing) -> None:
    a = funded(billing, "a")
    b = funded(billing, "b", amount="7")
    assert {e.mandate for e in billing.history(b).entries} == {b}
    assert all(e.amount == D("7") for e in billing.history(b).entries)
    assert a != b


# ----------------------------------------------------------- verify, storage


def test_verify_reports_drift(billing: Billing) -> None:
    m = funded(billing, amount="10")
    billing.hold(m, amount=D("1"), idempotency_key="h")
    assert billing.verify() == []
    with billing.engine.begin() as conn:
        conn.execute(
            text("UPDATE accounts SET credits_posted = credits_posted + 1 WHERE mandate_id = :m"),
            {"m": m},
        )
    drift = billing.verify()
    assert [(d.mandate, d.counter, d.stored_micros - d.computed_micros) for d in drift] == [
        (m, "credits_posted", 1)
    ]
    assert billing.verify("other") == []


@pytest.mark.parametrize("sql", ["UPDATE entries SET amount_micros = 1", "DELETE FROM entries"])
def test_entries_cannot_be_changed_or_deleted(billing: Billing, sql: str) -> None:
    m = funded(billing, amount="10")
    with pytest.raises(DBAPIError, match="append-only"), billing.engine.begin() as conn:
        conn.execute(text(sql))
    assert billing.balance(m).balance == D("10")
    assert count_entries(billing, m) == 1


def test_database_constraints_back_the_rules(billing: Billing) -> None:
    funded(billing, amount="1")
    with pytest.raises(DBAPIError), billing.engine.begin() as conn:
        conn.execute(text("UPDATE accounts SET debits_pending = -1"))


def test_mandate_id_leads_every_key(billing: Billing) -> None:
    insp = inspect(billing.engine)
    tables = [t for t in insp.get_table_names() if t not in REFERENCE_TABLES]
    assert {"mandates", "accounts", "holds", "entries", "idempotency_keys", "memberships"} <= set(
        tables
    )
    for table in tables:
        assert insp.get_pk_constraint(table)["constrained_columns"][0] == "mandate_id", table
        for uq in insp.get_unique_constraints(table):
            assert uq["column_names"][0] == "mandate_id", (table, uq)
        for ix in insp.get_indexes(table):
            assert ix["column_names"][0] == "mandate_id", (table, ix)
        for fk in insp.get_foreign_keys(table):
            if fk["referred_table"] not in REFERENCE_TABLES:
                assert fk["constrained_columns"][0] == "mandate_id", (table, fk)


def test_sqlite_is_durable_by_default(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/d.db"
    b = aibill.connect(url)
    with b.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    b.close()
    fast = aibill.connect(url, sqlite_synchronous="NORMAL")
    with fast.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    fast.close()
    with pytest.raises(aibill.InvalidRequest):
        aibill.connect(url, sqlite_synchronous="SOMETIMES")


def test_connect_twice_keeps_the_data(db_url: str) -> None:
    first = aibill.connect(db_url)
    funded(first, amount="3")
    first.close()
    second = aibill.connect(db_url)
    assert second.balance("acme").balance == D("3")
    second.close()


@pytest.mark.postgres
def test_a_connection_cut_by_the_server_is_retried(pg_billing: Billing) -> None:
    """Only a server can cut a connection: PostgreSQL."""
    billing = pg_billing
    m = funded(billing, amount="10")
    with billing.engine.connect() as conn:  # the pooled connection the next call will reuse
        conn.exec_driver_sql("SELECT 1")
    other = create_engine(billing.engine.url)
    with other.connect() as killer:
        cut = killer.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar()
    other.dispose()
    assert cut and cut >= 1
    hold = billing.hold(m, amount=D("1"), idempotency_key="after-cut")
    assert hold.amount == D("1") and billing.balance(m).pending == D("1")


def test_metadata_and_times_read_back_as_written(billing: Billing, clock: ManualClock) -> None:
    """What a hold carries (tags, times) reads back the same from every path."""
    m = funded(billing)
    meta = {"feature": "chat", "tokens": 1200, "note": "ünïcode ✓"}
    hold = billing.hold(m, amount=D("1"), ttl_s=60, metadata=meta, idempotency_key="h")
    assert billing.get_hold(hold.id) == hold
    assert billing.get_hold(hold.id).expires_at == clock() + timedelta(seconds=60)
    entry = billing.capture(hold.id, amount=D("0.5"))
    listed = billing.history(m, hold_id=hold.id).entries[0]
    assert entry.metadata == listed.metadata == meta
    assert entry.posted_at == listed.posted_at == clock()
    assert listed == entry


def test_an_expired_hold_does_not_inflate_a_shortfall(billing: Billing, clock: ManualClock) -> None:
    """1 CHF, 0.40 held and expired unseen; usage of 1.20 that happened is short by
    exactly 0.20, not 0.60: the expired hold's money was available."""
    m = funded(billing, amount="1")
    billing.hold(m, amount=D("0.4"), ttl_s=60, idempotency_key="h")
    clock.advance(61)
    entry = billing.record_usage(m, amount=D("1.2"), already_happened=True, idempotency_key="u")
    assert entry.shortfall == D("0.2")
    billing.credit(m, D("0.5"), idempotency_key="c")  # balance 0.30
    other = billing.hold(m, amount=D("0.1"), ttl_s=60, idempotency_key="h2")
    clock.advance(61)
    captured = billing.capture(other.id, amount=D("0.4"))
    assert captured.captured_after_expiry and captured.shortfall == D("0.1")
    assert billing.verify() == []


def test_a_capture_within_its_hold_is_never_short(billing: Billing) -> None:
    """10 in, 10 held, 7 of usage that happened takes the account 7 short. The held
    call then costs 5: its hold covers it, so that entry is not marked short; the
    earlier entry already said so."""
    m = funded(billing, amount="10")
    hold = billing.hold(m, amount=D("10"), idempotency_key="h")
    usage = billing.record_usage(m, amount=D("7"), already_happened=True, idempotency_key="u")
    assert usage.over_balance and usage.shortfall == D("7")
    entry = billing.capture(hold.id, amount=D("5"))
    assert not entry.over_balance and entry.shortfall == 0
    assert billing.balance(m).available == D("-2")


def test_setting_an_overdraft_limit_answers_with_the_current_balance(
    billing: Billing, clock: ManualClock
) -> None:
    m = funded(billing, amount="1")
    billing.hold(m, amount=D("1"), ttl_s=60, idempotency_key="h")
    clock.advance(61)
    assert billing.set_overdraft_limit(m, D("0")) == billing.balance(m)
    assert billing.balance(m).pending == 0


def test_a_capture_at_the_instant_of_expiry_draws_on_the_balance(
    billing: Billing, clock: ManualClock
) -> None:
    """12 in, 1 held for a second, 11.000001 of usage that happened (1 micro short).
    At the very second the hold expires, its call's 1 is captured: the hold no
    longer reserves it, so the capture draws on the balance and is short too."""
    m = funded(billing, amount="12")
    hold = billing.hold(m, amount=D("1"), ttl_s=1, idempotency_key="h")
    usage = billing.record_usage(
        m, amount=D("11.000001"), already_happened=True, idempotency_key="u"
    )
    assert usage.shortfall == D("0.000001")
    clock.set(hold.expires_at)  # expired, and no sweep has seen it yet
    entry = billing.capture(hold.id, amount=D("1"))
    assert entry.captured_after_expiry
    assert entry.over_balance and entry.shortfall == D("0.000001")
    assert billing.verify() == []
