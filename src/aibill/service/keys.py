"""API keys: how a gateway, a script or an admin tool proves who it acts for.

A key is bound to one principal: a user *in one mandate* (a member's key) or a
system admin (a platform key). It is a random secret with a readable prefix::

    aibill_<mandate>_<key_id>_<secret>        a member's key
    aibill-admin_<key_id>_<secret>            a system admin's key

``key_id`` is 12 lowercase hex digits (public: it names the key in lists and
audit records), ``secret`` is 64 lowercase hex digits (256 random bits). A
mandate name may itself contain ``_``, so a key is read from the right: the
last two ``_``-separated fields are the key id and the secret, and what comes
before them names the mandate. The key therefore says where its row lives
(one mandate, or the platform table) and no lookup ever crosses mandates.

The secret is shown once, when the key is created; aibill stores only its
SHA-256. A fast hash is right here, unlike for passwords: a password is
guessable, so it needs a slow, salted hash to make each guess expensive, but
a 256-bit random secret cannot be guessed at any speed, so a slow hash would
only cost every request time and protect nothing. The stored hash is compared
in constant time.

Every refusal of a key (malformed, unknown, wrong secret, revoked, expired,
its user no longer a member or no longer a system admin) raises the same
:class:`InvalidApiKey` with the same message, so a caller learns nothing about
which part was wrong or whether the mandate or key exists; the real reason is
logged at info level (never the secret).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, and_, or_, select, update

from aibill.domain import errors as e
from aibill.domain.errors import InvalidApiKey, UnknownApiKey
from aibill.domain.keys import ADMIN_PREFIX, MEMBER_PREFIX, ApiKey, CreatedKey
from aibill.domain.model import check_name
from aibill.domain.principal import Principal, PrincipalKind, Scope
from aibill.domain.text import check_line, check_text
from aibill.domain.times import check_optional_time
from aibill.service.hooks import SettingsService
from aibill.store.schema import api_keys, mandates, memberships, platform_admins, users
from aibill.store.schema import platform_api_keys as platform_keys

__all__ = [
    "ADMIN_PREFIX",
    "DEFAULT_SCOPES",
    "KEY_ID_HEX",
    "LAST_USED_GRANULARITY",
    "MAX_NAME_LENGTH",
    "MEMBER_PREFIX",
    "SECRET_BYTES",
    "ApiKey",
    "CreatedKey",
    "Keys",
    "ParsedKey",
    "check_scopes",
    "format_key",
    "hash_secret",
    "key_refusal",
    "parse_key",
]

T = TypeVar("T")
log = logging.getLogger("aibill.keys")

KEY_ID_HEX = 12
SECRET_BYTES = 32
MAX_NAME_LENGTH = 128
DEFAULT_SCOPES: tuple[str, ...] = (Scope.USE.value,)
LAST_USED_GRANULARITY = timedelta(minutes=1)
"""``last_used_at`` is written at most once per this interval per key."""

_KEY_ID = rf"[0-9a-f]{{{KEY_ID_HEX}}}"
_SECRET = rf"[0-9a-f]{{{SECRET_BYTES * 2}}}"
_MEMBER_KEY = re.compile(
    r"aibill_(?P<mandate>[A-Za-z0-9][A-Za-z0-9_.@-]{0,127})"
    rf"_(?P<key_id>{_KEY_ID})_(?P<secret>{_SECRET})"
)
_ADMIN_KEY = re.compile(rf"aibill-admin_(?P<key_id>{_KEY_ID})_(?P<secret>{_SECRET})")
_MAX_KEY_LENGTH = len(MEMBER_PREFIX) + 128 + 1 + KEY_ID_HEX + 1 + SECRET_BYTES * 2
# Compared against when no key row exists, so that an unknown key id costs the
# same hash comparison as a known one.
_DUMMY_HASH = hashlib.sha256(b"aibill: no such key").hexdigest()


def key_refusal(
    *,
    revoked_at: datetime | None,
    expires_at: datetime | None,
    holder: bool,
    admin: bool,
    now: datetime,
) -> str | None:
    """Why a key whose secret matched no longer works at ``now``, or None when it
    works: revoked, expired, or its user no longer holds the right to it (no
    longer a member of the key's mandate; for an ``admin`` key, no longer a
    system admin). The one rule for an API call (:meth:`Keys.authenticate`)
    and for a web session opened with the key (``service.sessions``)."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    if not holder:
        if admin:
            return "user is no longer a system admin"
        return "user is no longer a member of the mandate"
    return None


def hash_secret(secret: str) -> str:
    """SHA-256 (hex) of a key's secret part: what the store keeps."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def format_key(mandate: str | None, key_id: str, secret: str) -> str:
    """The key string for a member's key (``mandate`` given) or an admin's key."""
    if mandate is None:
        return f"{ADMIN_PREFIX}{key_id}_{secret}"
    return f"{MEMBER_PREFIX}{mandate}_{key_id}_{secret}"


@dataclass(frozen=True, slots=True)
class ParsedKey:
    mandate: str | None
    key_id: str
    secret: str = field(repr=False)


def parse_key(key: object) -> ParsedKey | None:
    """Split a key string into mandate (None: an admin key), key id and secret;
    None when it is not shaped like an aibill key. Needs no lookup."""
    if not isinstance(key, str):
        return None
    key = key.strip()
    if len(key) > _MAX_KEY_LENGTH:
        return None
    if key.startswith(ADMIN_PREFIX):
        m = _ADMIN_KEY.fullmatch(key)
        return None if m is None else ParsedKey(None, m["key_id"], m["secret"])
    m = _MEMBER_KEY.fullmatch(key)
    return None if m is None else ParsedKey(m["mandate"], m["key_id"], m["secret"])


def check_scopes(scopes: Iterable[str]) -> frozenset[Scope]:
    """At least one scope, each one of :class:`Scope`'s values."""
    if isinstance(scopes, str) or not isinstance(scopes, Iterable):
        raise e.InvalidRequest(
            f"scopes must be a list of scopes such as ['billing:use'], not {scopes!r}.",
            field="scopes",
        )
    found: set[Scope] = set()
    for s in scopes:
        try:
            found.add(Scope(s))
        except ValueError:
            raise e.InvalidRequest(
                f"Unknown scope {s!r}; the scopes are {', '.join(x.value for x in Scope)}.",
                field="scopes",
            ) from None
    if not found:
        raise e.InvalidRequest("An API key needs at least one scope.", field="scopes")
    return frozenset(found)


def _key_from_row(row: Any, mandate: str | None) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        mandate=mandate,
        user=row.user_id,
        name=row.name,
        scopes=frozenset(Scope(s) for s in row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def _key_columns(table: Table) -> list[Any]:
    """Every column but the hash: what lists and lookups read."""
    return [c for c in table.c if c.name != "secret_hash"]


class Keys(SettingsService):
    """Create, authenticate, list and revoke API keys.

    Safe to share between threads. Who may manage which keys (the admin role in
    the mandate, or sysadmin) is decided by the caller; this class checks that
    the key's own user is a member of the mandate (or a system admin).
    """

    @staticmethod
    def _check_mandate(mandate: str | None) -> None:
        if mandate is not None:
            check_name(mandate, "mandate")

    @staticmethod
    def _check_key_id(key_id: object) -> str:
        if not isinstance(key_id, str) or not key_id or len(key_id) > 32:
            raise e.InvalidRequest(f"Not an API key id: {key_id!r}.", field="key_id")
        return check_line(key_id, "key_id", max_length=32)

    @staticmethod
    def _where(mandate: str | None, key_id: str) -> tuple[Table, Any]:
        if mandate is None:
            return platform_keys, platform_keys.c.key_id == key_id
        return api_keys, and_(api_keys.c.mandate_id == mandate, api_keys.c.key_id == key_id)

    def _get(self, conn: Connection, key_id: str, mandate: str | None) -> ApiKey:
        table, where = self._where(mandate, key_id)
        row = conn.execute(select(*_key_columns(table)).where(where)).first()
        if row is None:
            raise UnknownApiKey(key_id, mandate)
        return _key_from_row(row, mandate)

    # ------------------------------------------------------------------ manage

    def create_key(
        self,
        *,
        user: str,
        mandate: str | None,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        expires_at: datetime | None = None,
        name: str | None = None,
    ) -> CreatedKey:
        """Create a key for ``user`` in ``mandate`` (the user must be a member),
        or, with ``mandate=None``, a system admin's key (the user must be a
        system admin). The returned :class:`CreatedKey` holds the key string;
        it cannot be shown again. ``scopes`` limit what the key may do
        (default ``billing:use``); ``expires_at`` (timezone-aware, in the
        future) ends it; ``name`` is a label for people."""
        check_name(user, "user")
        self._check_mandate(mandate)
        wanted = check_scopes(scopes)
        expires_at = check_optional_time(expires_at, "expires_at")
        if name is not None:
            check_text(name, "name", max_length=MAX_NAME_LENGTH)

        def work(conn: Connection) -> CreatedKey:
            self._authorize(conn, mandate, Scope.ADMIN)
            now = self._now()
            if expires_at is not None and expires_at <= now:
                raise e.InvalidRequest(
                    f"expires_at ({expires_at.isoformat()}) is not in the future.",
                    field="expires_at",
                )
            self._check_holder(conn, user, mandate)
            # Drawn inside the transaction: if the key id is taken (a 48-bit
            # collision), the retry draws a new one.
            key_id = secrets.token_hex(KEY_ID_HEX // 2)
            secret = secrets.token_hex(SECRET_BYTES)
            values: dict[str, Any] = {
                "key_id": key_id,
                "user_id": user,
                "name": name,
                "secret_hash": hash_secret(secret),
                "scopes": sorted(s.value for s in wanted),
                "created_at": now,
                "expires_at": expires_at,
                "revoked_at": None,
                "last_used_at": None,
            }
            if mandate is None:
                conn.execute(platform_keys.insert(), values)
            else:
                conn.execute(api_keys.insert(), {"mandate_id": mandate, **values})
            info = ApiKey(
                key_id=key_id,
                mandate=mandate,
                user=user,
                name=name,
                scopes=wanted,
                created_at=now,
                expires_at=expires_at,
                revoked_at=None,
                last_used_at=None,
            )
            log.info("api key %s created for %s", info.prefix, user)
            self._auditor(conn, mandate, "api_key.create", info.prefix, None, info)
            return CreatedKey(format_key(mandate, key_id, secret), info)

        return self._write(work)

    def _check_holder(self, conn: Connection, user: str, mandate: str | None) -> None:
        if mandate is None:
            if conn.execute(select(users.c.user_id).where(users.c.user_id == user)).first() is None:
                raise e.UnknownUser(user)
            admin = conn.execute(
                select(platform_admins.c.user_id).where(platform_admins.c.user_id == user)
            ).first()
            if admin is None:
                raise e.PermissionDenied(
                    f"User {user!r} is not a system admin, so cannot hold a platform key.",
                    user=user,
                )
            return
        known = conn.execute(
            select(mandates.c.mandate_id).where(mandates.c.mandate_id == mandate)
        ).first()
        if known is None:
            raise e.UnknownMandate(mandate)
        member = conn.execute(
            select(memberships.c.user_id).where(
                memberships.c.mandate_id == mandate, memberships.c.user_id == user
            )
        ).first()
        if member is None:
            # A mandate's admin learns only that the user is not a member
            # (docs/access.md, "What a mandate may learn about users").
            if (
                self._sees_all_users(conn)
                and conn.execute(select(users.c.user_id).where(users.c.user_id == user)).first()
                is None
            ):
                raise e.UnknownUser(user)
            raise e.NotAMember(mandate, user)

    def revoke_key(self, key_id: str, *, mandate: str | None) -> ApiKey:
        """Revoke a key of ``mandate`` (None: a system admin's key). From now on
        it authenticates nothing. Revoking it again changes nothing and returns
        it with its first revocation time."""
        self._check_mandate(mandate)
        self._check_key_id(key_id)

        def work(conn: Connection) -> ApiKey:
            self._authorize(conn, mandate, Scope.ADMIN)
            key = self._get(conn, key_id, mandate)
            if key.revoked_at is not None:
                return key
            now = self._now()
            table, where = self._where(mandate, key_id)
            conn.execute(
                update(table).where(where, table.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            log.info("api key %s revoked", key.prefix)
            revoked = self._get(conn, key_id, mandate)
            self._auditor(conn, mandate, "api_key.revoke", key.prefix, key, revoked)
            return revoked

        return self._write(work)

    def get_key(self, key_id: str, *, mandate: str | None) -> ApiKey:
        """One key of ``mandate`` (None: a system admin's key), without its secret."""
        self._check_mandate(mandate)
        self._check_key_id(key_id)

        def work(conn: Connection) -> ApiKey:
            self._authorize(conn, mandate, Scope.ADMIN)
            return self._get(conn, key_id, mandate)

        return self._read(work)

    def list_keys(self, mandate: str | None) -> list[ApiKey]:
        """Every key of ``mandate`` (None: the system admins' keys), revoked and
        expired ones included, oldest first; never a secret or a hash."""
        self._check_mandate(mandate)

        def work(conn: Connection) -> list[ApiKey]:
            self._authorize(conn, mandate, Scope.ADMIN)
            if mandate is None:
                table: Table = platform_keys
                stmt = select(*_key_columns(table))
            else:
                known = conn.execute(
                    select(mandates.c.mandate_id).where(mandates.c.mandate_id == mandate)
                ).first()
                if known is None:
                    raise e.UnknownMandate(mandate)
                table = api_keys
                stmt = select(*_key_columns(table)).where(table.c.mandate_id == mandate)
            rows = conn.execute(stmt.order_by(table.c.created_at, table.c.key_id)).all()
            return [_key_from_row(r, mandate) for r in rows]

        return self._read(work)

    # ------------------------------------------------------------ authenticate

    def authenticate(self, key: str) -> Principal:
        """The principal a key string stands for: a user in the key's mandate,
        or a system admin, with the key's scopes.

        Raises :class:`InvalidApiKey` (always the same message) when the key is
        malformed, unknown, has the wrong secret, is revoked or expired, or
        its user is no longer a member of the mandate (or no longer a system
        admin). Records the time of use, at most once a minute per key.
        """
        parsed = parse_key(key)
        if parsed is None:
            log.info("api key refused: malformed")
            raise InvalidApiKey()
        presented = hash_secret(parsed.secret)
        label = (
            f"{ADMIN_PREFIX}{parsed.key_id}_"
            if parsed.mandate is None
            else f"{MEMBER_PREFIX}{parsed.mandate}_{parsed.key_id}_"
        )
        row = self._read(lambda conn: self._lookup(conn, parsed))
        stored = _DUMMY_HASH if row is None else row.secret_hash
        matches = hmac.compare_digest(presented.encode("ascii"), stored.encode("ascii"))
        now = self._now()
        reason: str | None = None
        if row is None:
            reason = "unknown key id"
        elif not matches:
            reason = "wrong secret"
        else:
            reason = key_refusal(
                revoked_at=row.revoked_at,
                expires_at=row.expires_at,
                holder=bool(row.holder),
                admin=parsed.mandate is None,
                now=now,
            )
        if reason is not None:
            log.info("api key %s refused: %s", label, reason)
            raise InvalidApiKey()
        assert row is not None
        scopes = frozenset(Scope(s) for s in row.scopes)
        last = row.last_used_at
        if last is None or now - last >= LAST_USED_GRANULARITY:
            self._touch(parsed, now)
        if parsed.mandate is None:
            return Principal(PrincipalKind.SYSADMIN, row.user_id, None, scopes, parsed.key_id)
        return Principal(PrincipalKind.USER, row.user_id, parsed.mandate, scopes, parsed.key_id)

    @staticmethod
    def _lookup(conn: Connection, parsed: ParsedKey) -> Any:
        """The key's row and whether its user still holds the right to it."""
        if parsed.mandate is None:
            k = platform_keys.c
            stmt = (
                select(
                    k.user_id,
                    k.secret_hash,
                    k.scopes,
                    k.expires_at,
                    k.revoked_at,
                    k.last_used_at,
                    platform_admins.c.user_id.is_not(None).label("holder"),
                )
                .select_from(
                    platform_keys.outerjoin(platform_admins, platform_admins.c.user_id == k.user_id)
                )
                .where(k.key_id == parsed.key_id)
            )
        else:
            k = api_keys.c
            m = memberships.c
            stmt = (
                select(
                    k.user_id,
                    k.secret_hash,
                    k.scopes,
                    k.expires_at,
                    k.revoked_at,
                    k.last_used_at,
                    m.user_id.is_not(None).label("holder"),
                )
                .select_from(
                    api_keys.outerjoin(
                        memberships, and_(m.mandate_id == k.mandate_id, m.user_id == k.user_id)
                    )
                )
                .where(k.mandate_id == parsed.mandate, k.key_id == parsed.key_id)
            )
        return conn.execute(stmt).first()

    def _touch(self, parsed: ParsedKey, now: datetime) -> None:
        """Record the use; conditional, so racing requests write it once. A
        failure here is logged and does not refuse the key."""
        table, where = self._where(parsed.mandate, parsed.key_id)
        due = or_(
            table.c.last_used_at.is_(None), table.c.last_used_at <= now - LAST_USED_GRANULARITY
        )

        def work(conn: Connection) -> None:
            conn.execute(update(table).where(where, due).values(last_used_at=now))

        try:
            self._write(work)
        except e.StoreUnavailable as exc:
            log.warning("could not record the use of api key %s: %s", parsed.key_id, exc)
