"""API keys on SQLite and PostgreSQL: create, authenticate, last use, expiry,
revocation, and every way a key is refused, all refused alike.

The cast: mandates ``acme`` and ``globex``; ``alice`` is a member of both,
``bob`` of acme only, ``eve`` of none, and ``root`` is a system admin.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, text
from sqlalchemy.engine import make_url

from aibill import Billing, ManualClock
from aibill.domain import errors as e
from aibill.domain.principal import Principal, PrincipalKind, Scope
from aibill.service.keys import (
    ApiKey,
    CreatedKey,
    InvalidApiKey,
    Keys,
    UnknownApiKey,
    format_key,
    parse_key,
)
from aibill.store.schema import (
    api_keys,
    member_roles,
    memberships,
    platform_admins,
    platform_api_keys,
)

HEX64 = "0123456789abcdef" * 4


@pytest.fixture
def keys(billing: Billing, clock: ManualClock) -> Iterator[Keys]:
    for m in ("acme", "globex"):
        billing.create_mandate(m)
    for u in ("alice", "bob", "eve", "root"):
        billing.add_user(u)
    billing.add_member("acme", "alice")
    billing.add_member("globex", "alice")
    billing.add_member("acme", "bob")
    with billing.engine.begin() as conn:
        conn.execute(insert(platform_admins).values(user_id="root", created_at=clock()))
    yield Keys(billing.engine, clock=clock)


def refused(keys: Keys, key: Any) -> InvalidApiKey:
    with pytest.raises(InvalidApiKey) as info:
        keys.authenticate(key)
    return info.value


def split(created: CreatedKey) -> tuple[str, str]:
    """The key string without its secret, and the secret."""
    head, _, secret = created.secret.rpartition("_")
    return head + "_", secret


def stored_row(engine: Engine, key: ApiKey) -> dict[str, Any]:
    table = platform_api_keys if key.mandate is None else api_keys
    with engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.key_id == key.key_id)).one()
    return dict(row._mapping)


def remove_member(billing: Billing, mandate: str, user: str) -> None:
    """Take ``user`` out of ``mandate`` although keys still point at the
    membership (aibill has no "leave" operation yet, and the schema's foreign
    key from api_keys to memberships forbids it), to prove that authentication
    checks membership itself."""
    if billing.engine.dialect.name == "sqlite":
        path = make_url(str(billing.engine.url)).database
        assert path
        raw = sqlite3.connect(path)  # foreign keys are off on a plain connection
        with raw:
            raw.execute(
                "DELETE FROM memberships WHERE mandate_id = ? AND user_id = ?", (mandate, user)
            )
        raw.close()
        return
    with billing.engine.begin() as conn:
        conn.execute(
            text("ALTER TABLE api_keys DROP CONSTRAINT fk_api_keys_mandate_id_user_id_memberships")
        )
        conn.execute(
            delete(member_roles).where(
                member_roles.c.mandate_id == mandate, member_roles.c.user_id == user
            )
        )
        conn.execute(
            delete(memberships).where(
                memberships.c.mandate_id == mandate, memberships.c.user_id == user
            )
        )


# ---------------------------------------------------------------- lifecycle


def test_lifecycle_create_use_throttle_expire(keys: Keys, clock: ManualClock) -> None:
    t0 = clock()
    created = keys.create_key(
        user="alice",
        mandate="acme",
        scopes=["billing:use", "billing:read"],
        expires_at=t0 + timedelta(days=30),
        name="gateway",
    )
    info = created.info
    assert created.secret.startswith(f"aibill_acme_{info.key_id}_")
    assert info.prefix == f"aibill_acme_{info.key_id}_"
    assert len(info.key_id) == 12
    assert (info.mandate, info.user, info.name, info.kind) == (
        "acme",
        "alice",
        "gateway",
        PrincipalKind.USER,
    )
    assert info.scopes == {Scope.USE, Scope.READ}
    assert info.created_at == t0
    assert info.last_used_at is None and info.revoked_at is None
    assert keys.get_key(info.key_id, mandate="acme") == info

    principal = keys.authenticate(created.secret)
    assert principal == Principal(
        PrincipalKind.USER, "alice", "acme", frozenset({Scope.USE, Scope.READ}), info.key_id
    )
    assert keys.get_key(info.key_id, mandate="acme").last_used_at == t0

    # Within the minute: no write.
    clock.advance(30)
    keys.authenticate(created.secret)
    clock.advance(29)
    keys.authenticate(created.secret)
    assert keys.get_key(info.key_id, mandate="acme").last_used_at == t0

    # A minute after the recorded use: written again.
    clock.advance(1)
    keys.authenticate(created.secret)
    assert keys.get_key(info.key_id, mandate="acme").last_used_at == t0 + timedelta(seconds=60)

    # A clock that steps back does not move the last use backwards.
    clock.set(t0 - timedelta(hours=1))
    keys.authenticate(created.secret)
    assert keys.get_key(info.key_id, mandate="acme").last_used_at == t0 + timedelta(seconds=60)

    # Expiry: valid until the instant before expires_at.
    clock.set(t0 + timedelta(days=30) - timedelta(microseconds=1))
    keys.authenticate(created.secret)
    assert keys.get_key(info.key_id, mandate="acme").is_active(clock())
    clock.set(t0 + timedelta(days=30))
    refused(keys, created.secret)
    assert not keys.get_key(info.key_id, mandate="acme").is_active(clock())


def test_revoke_is_immediate_and_idempotent(keys: Keys, clock: ManualClock) -> None:
    created = keys.create_key(user="bob", mandate="acme")
    other = keys.create_key(user="bob", mandate="acme")
    assert keys.authenticate(created.secret).user == "bob"

    t_revoke = clock.advance(5)
    revoked = keys.revoke_key(created.key_id, mandate="acme")
    assert revoked.revoked_at == t_revoke
    refused(keys, created.secret)

    clock.advance(60)
    again = keys.revoke_key(created.key_id, mandate="acme")
    assert again == revoked
    assert again.revoked_at == t_revoke
    refused(keys, created.secret)

    # Only that key.
    assert keys.authenticate(other.secret).key_id == other.key_id


def test_revoke_and_get_only_within_the_named_mandate(keys: Keys) -> None:
    created = keys.create_key(user="alice", mandate="acme")
    for op in (keys.revoke_key, keys.get_key):
        with pytest.raises(UnknownApiKey) as info:
            op(created.key_id, mandate="globex")
        assert info.value.code == "unknown_api_key"
        with pytest.raises(UnknownApiKey):
            op(created.key_id, mandate=None)
        with pytest.raises(UnknownApiKey):
            op("000000000000", mandate="acme")
    assert keys.authenticate(created.secret).mandate == "acme"
    assert keys.get_key(created.key_id, mandate="acme").revoked_at is None


def test_default_scope_is_billing_use(keys: Keys) -> None:
    created = keys.create_key(user="bob", mandate="acme")
    assert created.info.scopes == {Scope.USE}
    assert keys.authenticate(created.secret).scopes == {Scope.USE}


# ---------------------------------------------------------------- refusals


def test_wrong_secret(keys: Keys) -> None:
    created = keys.create_key(user="alice", mandate="acme")
    head, secret = split(created)
    flipped = ("1" if secret[0] == "0" else "0") + secret[1:]
    refused(keys, head + flipped)
    refused(keys, head + HEX64)
    # Another key's secret under this key's id.
    other = keys.create_key(user="alice", mandate="acme")
    refused(keys, head + split(other)[1])
    # A failed attempt records no use.
    assert keys.get_key(created.key_id, mandate="acme").last_used_at is None


def test_wrong_mandate_in_the_key_string(keys: Keys) -> None:
    # alice is a member of both mandates; her acme key is not a globex key.
    created = keys.create_key(user="alice", mandate="acme")
    refused(keys, created.secret.replace("aibill_acme_", "aibill_globex_", 1))
    refused(keys, created.secret.replace("aibill_acme_", "aibill_nosuch_", 1))
    refused(keys, created.secret.replace("aibill_acme_", "aibill-admin_", 1))
    # Her globex key's id with her acme key's secret, and the reverse.
    in_globex = keys.create_key(user="alice", mandate="globex")
    refused(keys, format_key("acme", in_globex.key_id, split(created)[1]))
    refused(keys, format_key("globex", created.key_id, split(created)[1]))
    assert keys.authenticate(created.secret).mandate == "acme"
    assert keys.authenticate(in_globex.secret).mandate == "globex"


MALFORMED: list[Any] = [
    "",
    " ",
    "aibill",
    "aibill_",
    "aibill_acme",
    "aibill_acme_0123456789ab",
    "aibill_acme_0123456789ab_",
    f"aibill_acme__{HEX64}",
    f"aibill_acme_0123456789a_{HEX64}",  # key id one short
    f"aibill_acme_0123456789abc_{HEX64}",  # key id one long
    f"aibill_acme_0123456789AB_{HEX64}",  # upper case
    f"aibill_acme_0123456789ab_{HEX64[:-1]}",  # secret one short
    f"aibill_acme_0123456789ab_{HEX64}0",  # secret one long
    f"aibill_acme_0123456789ab_{HEX64.upper()}",
    f"aibill_acme_0123456789ab_{HEX64[:-1]}g",
    f"aibill_acme_0123456789ab_{HEX64}_",
    f"aibil_acme_0123456789ab_{HEX64}",
    f"Aibill_acme_0123456789ab_{HEX64}",
    f"aibill-acme_0123456789ab_{HEX64}",
    f"aibill__0123456789ab_{HEX64}",  # empty mandate
    f"aibill_-acme_0123456789ab_{HEX64}",  # mandate must start with a letter or digit
    f"aibill_ac me_0123456789ab_{HEX64}",
    f"aibill_acmé_0123456789ab_{HEX64}",
    f"aibill_{'a' * 129}_0123456789ab_{HEX64}",  # mandate too long
    f"aibill-admin_0123456789ab_{HEX64[:-1]}",
    f"aibill-admin_acme_0123456789ab_{HEX64}",
    f"aibill-admin__0123456789ab_{HEX64}",
    f"Bearer aibill_acme_0123456789ab_{HEX64}",
    f"aibill_acme_0123456789ab_{HEX64}\x00",
    "x" * 100_000,
    None,
    42,
    b"aibill_acme_0123456789ab_" + HEX64.encode(),
    ["aibill_acme_0123456789ab_" + HEX64],
]


@pytest.mark.parametrize("key", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_keys_are_refused(keys: Keys, key: Any) -> None:
    assert parse_key(key) is None
    refused(keys, key)


def test_unknown_key_id(keys: Keys) -> None:
    keys.create_key(user="alice", mandate="acme")
    refused(keys, format_key("acme", "0123456789ab", HEX64))
    refused(keys, format_key("nosuch", "0123456789ab", HEX64))
    refused(keys, format_key(None, "0123456789ab", HEX64))


def test_a_key_whose_user_left_the_mandate(billing: Billing, keys: Keys) -> None:
    in_acme = keys.create_key(user="alice", mandate="acme")
    in_globex = keys.create_key(user="alice", mandate="globex")
    remove_member(billing, "acme", "alice")
    refused(keys, in_acme.secret)
    assert keys.authenticate(in_globex.secret).mandate == "globex"


def test_a_key_whose_user_is_no_longer_a_system_admin(billing: Billing, keys: Keys) -> None:
    created = keys.create_key(user="root", mandate=None)
    assert keys.authenticate(created.secret).kind is PrincipalKind.SYSADMIN
    with billing.engine.begin() as conn:
        conn.execute(delete(platform_admins).where(platform_admins.c.user_id == "root"))
    refused(keys, created.secret)


def test_every_refusal_is_the_same_error(
    billing: Billing, keys: Keys, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    good = keys.create_key(user="alice", mandate="acme")
    expiring = keys.create_key(
        user="alice", mandate="acme", expires_at=clock() + timedelta(hours=1)
    )
    revoked = keys.create_key(user="alice", mandate="acme")
    keys.revoke_key(revoked.key_id, mandate="acme")
    leaver = keys.create_key(user="bob", mandate="acme")
    admin = keys.create_key(user="root", mandate=None)
    head, secret = split(good)
    clock.advance(hours=2)
    remove_member(billing, "acme", "bob")

    cases = {
        "malformed": "aibill_acme_nope",
        "wrong secret": head + HEX64,
        "wrong mandate": good.secret.replace("aibill_acme_", "aibill_globex_", 1),
        "unknown mandate": good.secret.replace("aibill_acme_", "aibill_nosuch_", 1),
        "unknown key id": format_key("acme", "0123456789ab", secret),
        "unknown admin key id": format_key(None, "0123456789ab", secret),
        "admin secret wrong": split(admin)[0] + HEX64,
        "expired": expiring.secret,
        "revoked": revoked.secret,
        "left the mandate": leaver.secret,
    }
    caplog.set_level(logging.INFO, logger="aibill.keys")
    seen = set()
    for why, key in cases.items():
        caplog.clear()
        err = refused(keys, key)
        seen.add((type(err), err.code, err.message, repr(err.to_dict())))
        # The caller learns nothing; the log says what happened, without the secret.
        assert "acme" not in err.message and good.key_id not in err.message
        assert any("refused" in r.getMessage() for r in caplog.records), why
        for r in caplog.records:
            assert secret not in r.getMessage() and HEX64 not in r.getMessage()
    assert seen == {
        (
            InvalidApiKey,
            "invalid_api_key",
            "The API key is not valid.",
            repr(
                {"code": "invalid_api_key", "message": "The API key is not valid.", "details": {}}
            ),
        )
    }
    assert issubclass(InvalidApiKey, e.AibillError)
    assert keys.authenticate(good.secret).user == "alice"


def test_the_log_names_the_real_reason(
    keys: Keys, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    created = keys.create_key(user="alice", mandate="acme", expires_at=clock() + timedelta(1))
    caplog.set_level(logging.INFO, logger="aibill.keys")
    head, _ = split(created)
    for key, reason in (
        ("junk", "malformed"),
        (head + HEX64, "wrong secret"),
        (format_key("acme", "0123456789ab", HEX64), "unknown key id"),
    ):
        caplog.clear()
        refused(keys, key)
        assert [r.levelno for r in caplog.records] == [logging.INFO]
        assert reason in caplog.records[0].getMessage()
    clock.advance(days=2)
    caplog.clear()
    refused(keys, created.secret)
    assert "expired" in caplog.records[0].getMessage()
    assert created.info.prefix in caplog.records[0].getMessage()


# ---------------------------------------------------------------- storage


def test_the_secret_is_in_no_stored_column(keys: Keys, billing: Billing) -> None:
    member = keys.create_key(user="alice", mandate="acme", name="gw")
    admin = keys.create_key(user="root", mandate=None, name="ops")
    for created in (member, admin):
        keys.authenticate(created.secret)
        _, secret = split(created)
        row = stored_row(billing.engine, created.info)
        for column, value in row.items():
            assert secret not in str(value), column
            assert created.secret not in str(value), column
            assert secret[:16] not in str(value), column
        assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
        assert row["secret_hash"] != secret


def test_list_and_get_never_expose_a_secret_or_hash(keys: Keys, billing: Billing) -> None:
    created = [keys.create_key(user=u, mandate="acme") for u in ("alice", "bob", "alice")]
    keys.create_key(user="alice", mandate="globex")
    listed = keys.list_keys("acme")
    # Created at the same instant: ordered by key id.
    assert [k.key_id for k in listed] == sorted(c.key_id for c in created)
    assert {k.key_id for k in listed} == {c.key_id for c in created}
    assert all(k.mandate == "acme" for k in listed)
    assert {f.name for f in dataclasses.fields(ApiKey)} == {
        "key_id",
        "mandate",
        "user",
        "name",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    }
    for c in created:
        _, secret = split(c)
        row_hash = stored_row(billing.engine, c.info)["secret_hash"]
        for shown in (keys.get_key(c.key_id, mandate="acme"), *listed):
            assert secret not in repr(shown) and row_hash not in repr(shown)
        assert secret not in repr(c)
        assert row_hash not in repr(c)
    assert len(keys.list_keys("globex")) == 1
    assert keys.list_keys(None) == []
    with pytest.raises(e.UnknownMandate):
        keys.list_keys("nosuch")


def test_list_includes_revoked_and_expired_keys_oldest_first(
    keys: Keys, clock: ManualClock
) -> None:
    a = keys.create_key(user="alice", mandate="acme", expires_at=clock() + timedelta(minutes=1))
    clock.advance(1)
    b = keys.create_key(user="bob", mandate="acme")
    clock.advance(1)
    c = keys.create_key(user="alice", mandate="acme")
    keys.revoke_key(b.key_id, mandate="acme")
    clock.advance(hours=1)
    listed = keys.list_keys("acme")
    assert [k.key_id for k in listed] == [a.key_id, b.key_id, c.key_id]
    assert [k.is_active(clock()) for k in listed] == [False, False, True]


# ---------------------------------------------------------------- sysadmin


def test_sysadmin_keys(keys: Keys, clock: ManualClock) -> None:
    created = keys.create_key(
        user="root", mandate=None, scopes=[Scope.ADMIN, Scope.READ], name="ops"
    )
    assert created.secret.startswith(f"aibill-admin_{created.key_id}_")
    assert created.info.mandate is None and created.info.kind is PrincipalKind.SYSADMIN
    assert created.info.prefix == f"aibill-admin_{created.key_id}_"
    principal = keys.authenticate(created.secret)
    assert principal == Principal(
        PrincipalKind.SYSADMIN, "root", None, frozenset({Scope.ADMIN, Scope.READ}), created.key_id
    )
    assert keys.get_key(created.key_id, mandate=None).last_used_at == clock()
    assert [k.key_id for k in keys.list_keys(None)] == [created.key_id]
    assert keys.list_keys("acme") == []
    # A platform key is not a key of any mandate.
    refused(keys, format_key("acme", created.key_id, split(created)[1]))
    with pytest.raises(UnknownApiKey):
        keys.get_key(created.key_id, mandate="acme")
    keys.revoke_key(created.key_id, mandate=None)
    refused(keys, created.secret)


def test_only_system_admins_get_platform_keys(keys: Keys) -> None:
    with pytest.raises(e.PermissionDenied) as info:
        keys.create_key(user="alice", mandate=None)
    assert info.value.code == "permission_denied"
    with pytest.raises(e.UnknownUser):
        keys.create_key(user="nobody", mandate=None)
    assert keys.list_keys(None) == []


# ---------------------------------------------------------------- creation rules


def test_member_keys_need_a_member(keys: Keys) -> None:
    with pytest.raises(e.NotAMember):
        keys.create_key(user="eve", mandate="acme")
    with pytest.raises(e.NotAMember):
        keys.create_key(user="bob", mandate="globex")
    with pytest.raises(e.NotAMember):
        keys.create_key(user="root", mandate="acme")  # a sysadmin is not a member
    with pytest.raises(e.UnknownUser):
        keys.create_key(user="nobody", mandate="acme")
    with pytest.raises(e.UnknownMandate):
        keys.create_key(user="alice", mandate="nosuch")
    with pytest.raises(e.InvalidRequest):
        keys.create_key(user="alice", mandate="bad name")
    with pytest.raises(e.InvalidRequest):
        keys.create_key(user="", mandate="acme")
    assert keys.list_keys("acme") == keys.list_keys("globex") == []


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        (["billing:use"], {Scope.USE}),
        (("billing:read",), {Scope.READ}),
        ([Scope.ADMIN], {Scope.ADMIN}),
        (["billing:use", "billing:use", Scope.USE], {Scope.USE}),
        ({"billing:use", "billing:read", "billing:admin"}, set(Scope)),
        ("an iterator", {Scope.ADMIN}),
    ],
)
def test_scopes_accepted(keys: Keys, scopes: Any, expected: set[Scope]) -> None:
    if scopes == "an iterator":  # made here: each backend's run needs its own
        scopes = iter(["billing:admin"])
    created = keys.create_key(user="alice", mandate="acme", scopes=scopes)
    assert created.info.scopes == expected
    assert keys.get_key(created.key_id, mandate="acme").scopes == expected
    assert keys.authenticate(created.secret).scopes == expected


@pytest.mark.parametrize(
    "scopes",
    [[], (), ["billing:write"], ["billing:use", "admin"], ["BILLING:USE"], "billing:use", None, 1],
)
def test_scopes_refused(keys: Keys, scopes: Any) -> None:
    with pytest.raises(e.InvalidRequest) as info:
        keys.create_key(user="alice", mandate="acme", scopes=scopes)
    assert info.value.details["field"] == "scopes"
    assert keys.list_keys("acme") == []


def test_expiry_and_name_rules(keys: Keys, clock: ManualClock) -> None:
    for bad in (clock(), clock() - timedelta(seconds=1), clock().replace(tzinfo=None)):
        with pytest.raises(e.InvalidRequest) as info:
            keys.create_key(user="alice", mandate="acme", expires_at=bad)
        assert info.value.details["field"] == "expires_at"
    with pytest.raises(e.InvalidRequest):
        keys.create_key(user="alice", mandate="acme", name="x" * 129)
    assert keys.list_keys("acme") == []


def test_mandate_names_with_underscores_parse_from_the_right(billing: Billing, keys: Keys) -> None:
    for mandate in ("my_org", "a_0123456789ab_b", f"x_0123456789ab_{HEX64}", "a-b.c@d_"):
        billing.create_mandate(mandate)
        billing.add_member(mandate, "bob")
        created = keys.create_key(user="bob", mandate=mandate)
        parsed = parse_key(created.secret)
        assert parsed is not None
        assert (parsed.mandate, parsed.key_id) == (mandate, created.key_id)
        assert keys.authenticate(created.secret).mandate == mandate


def test_surrounding_whitespace_is_ignored(keys: Keys) -> None:
    created = keys.create_key(user="alice", mandate="acme")
    assert keys.authenticate(f"  {created.secret}\n").user == "alice"


def test_each_key_is_new(keys: Keys) -> None:
    made = [keys.create_key(user="alice", mandate="acme") for _ in range(20)]
    assert len({m.key_id for m in made}) == 20
    assert len({split(m)[1] for m in made}) == 20
