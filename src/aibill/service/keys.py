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
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row

from aibill.domain import errors as e
from aibill.domain.clock import Clock, system_clock
from aibill.domain.errors import InvalidApiKey, UnknownApiKey
from aibill.domain.keys import (
    ADMIN_PREFIX,
    KEY_ID_HEX,
    MEMBER_PREFIX,
    SECRET_BYTES,
    ApiKey,
    CreatedKey,
    ParsedKey,
    check_scopes,
    format_key,
    hash_secret,
    key_refusal,
    parse_key,
)
from aibill.domain.model import check_name
from aibill.domain.principal import Principal, PrincipalKind, Scope
from aibill.domain.text import check_line, check_text
from aibill.domain.times import check_optional_time
from aibill.service.hooks import Auditor, Guard, SettingsService
from aibill.service.key_cache import MAX_TTL_S, KeyCache
from aibill.store import access as access_store
from aibill.store import decisions
from aibill.store import keys as keys_store

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
    "check_cache_s",
    "check_scopes",
    "format_key",
    "hash_secret",
    "key_refusal",
    "parse_key",
]

log = logging.getLogger("aibill.keys")

MAX_NAME_LENGTH = 128
DEFAULT_SCOPES: tuple[str, ...] = (Scope.USE.value,)
LAST_USED_GRANULARITY = timedelta(minutes=1)
"""``last_used_at`` is written at most once per this interval per key."""

# Compared against when no key row exists, so that an unknown key id costs the
# same hash comparison as a known one.
_DUMMY_HASH = hashlib.sha256(b"aibill: no such key").hexdigest()


def _key_from_row(row: Row[Any], mandate: str | None) -> ApiKey:
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


class Keys(SettingsService):
    """Create, authenticate, list and revoke API keys.

    Safe to share between threads. Who may manage which keys (the admin role in
    the mandate, or sysadmin) is decided by the caller; this class checks that
    the key's own user is a member of the mandate (or a system admin).

    With ``cache_s`` above 0, a key verified in the database is trusted for
    that many seconds without reading it again (:mod:`aibill.service.key_cache`:
    never past its expiry, and forgotten at once when revoked through this
    process); a key revoked by another process stops working here within
    ``cache_s``. 0, the default, reads the key at every authentication.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = system_clock,
        guard: Guard | None = None,
        auditor: Auditor | None = None,
        cache_s: float = 0.0,
    ) -> None:
        super().__init__(engine, clock=clock, guard=guard, auditor=auditor)
        self.cache = KeyCache(check_cache_s(cache_s))
        """Shared by every view of this service (:meth:`bound` copies the reference)."""

    @staticmethod
    def _check_mandate(mandate: str | None) -> None:
        if mandate is not None:
            check_name(mandate, "mandate")

    @staticmethod
    def _check_key_id(key_id: object) -> str:
        if not isinstance(key_id, str) or not key_id or len(key_id) > 32:
            raise e.InvalidRequest(f"Not an API key id: {key_id!r}.", field="key_id")
        return check_line(key_id, "key_id", max_length=32)

    def _get(self, conn: Connection, key_id: str, mandate: str | None) -> ApiKey:
        row = keys_store.key(conn, mandate, key_id)
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
            keys_store.insert_key(conn, mandate, _stored(info, hash_secret(secret)))
            log.info("api key %s created for %s", info.prefix, user)
            self._auditor(conn, mandate, "api_key.create", info.prefix, None, info)
            return CreatedKey(format_key(mandate, key_id, secret), info)

        return self._write(work)

    def _check_holder(self, conn: Connection, user: str, mandate: str | None) -> None:
        if mandate is None:
            if not access_store.user_exists(conn, user):
                raise e.UnknownUser(user)
            if not decisions.is_sysadmin(conn, user):
                raise e.PermissionDenied(
                    f"User {user!r} is not a system admin, so cannot hold a platform key.",
                    user=user,
                )
            return
        if not access_store.mandate_exists(conn, mandate):
            raise e.UnknownMandate(mandate)
        if not decisions.is_member(conn, mandate, user):
            # A mandate's admin learns only that the user is not a member
            # (docs/access.md, "What a mandate may learn about users").
            if self._sees_all_users(conn) and not access_store.user_exists(conn, user):
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
            keys_store.revoke_key(conn, mandate, key_id, at=self._now())
            log.info("api key %s revoked", key.prefix)
            revoked = self._get(conn, key_id, mandate)
            self._auditor(conn, mandate, "api_key.revoke", key.prefix, key, revoked)
            return revoked

        try:
            return self._write(work)
        finally:  # committed (or not): this process trusts the key no longer
            self.cache.forget_key(mandate, key_id)

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
            if mandate is not None and not access_store.mandate_exists(conn, mandate):
                raise e.UnknownMandate(mandate)
            return [_key_from_row(r, mandate) for r in keys_store.list_keys(conn, mandate)]

        return self._read(work)

    # ------------------------------------------------------------ authenticate

    def authenticate(self, key: str) -> Principal:
        """The principal a key string stands for: a user in the key's mandate,
        or a system admin, with the key's scopes.

        Raises :class:`InvalidApiKey` (always the same message) when the key is
        malformed, unknown, has the wrong secret, is revoked or expired, or
        its user is no longer a member of the mandate (or no longer a system
        admin). Records the time of use, at most once a minute per key. With
        the cache on, a key verified less than ``cache_s`` ago is not read
        again (see the class).
        """
        parsed = parse_key(key)
        if parsed is None:
            log.info("api key refused: malformed")
            raise InvalidApiKey()
        presented = hash_secret(parsed.secret)
        if self.cache.enabled:
            now = self._now()
            hit = self.cache.recall(
                parsed.mandate, parsed.key_id, presented, now, LAST_USED_GRANULARITY
            )
            if hit is not None:
                if hit.touch:
                    self._touch(parsed, now)
                return hit.principal
        return self._verify(parsed, presented)

    def recall(self, key: str) -> Principal | None:
        """The principal of ``key`` if this process verified it less than
        ``cache_s`` ago, it has not expired, and no use is due to be recorded:
        an answer without any I/O, for a caller that would otherwise hand
        :meth:`authenticate` to a thread. None means "ask :meth:`authenticate`",
        which decides (and refuses); this never refuses."""
        if not self.cache.enabled:
            return None
        parsed = parse_key(key)
        if parsed is None:
            return None
        hit = self.cache.recall(
            parsed.mandate,
            parsed.key_id,
            hash_secret(parsed.secret),
            self._now(),
            LAST_USED_GRANULARITY,
            claim=False,
        )
        return None if hit is None or hit.touch else hit.principal

    def _verify(self, parsed: ParsedKey, presented: str) -> Principal:
        """Check the key against its row (one short read transaction), and
        remember it when the cache is on."""
        label = (
            f"{ADMIN_PREFIX}{parsed.key_id}_"
            if parsed.mandate is None
            else f"{MEMBER_PREFIX}{parsed.mandate}_{parsed.key_id}_"
        )
        epoch = self.cache.epoch()  # before the read: a revocation after it wins
        row = self._read(lambda conn: keys_store.credentials(conn, parsed.mandate, parsed.key_id))
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
            last = now
        if parsed.mandate is None:
            principal = Principal(PrincipalKind.SYSADMIN, row.user_id, None, scopes, parsed.key_id)
        else:
            principal = Principal(
                PrincipalKind.USER, row.user_id, parsed.mandate, scopes, parsed.key_id
            )
        self.cache.put(
            presented, principal, expires_at=row.expires_at, last_used_at=last, epoch=epoch
        )
        return principal

    def forget_holder(self, user: str, *, mandate: str | None) -> None:
        """``user`` no longer holds the right to their keys of ``mandate``
        (None: their platform keys, as a system admin removed): this process
        stops trusting any it verified."""
        check_name(user, "user")
        self._check_mandate(mandate)
        self.cache.forget_holder(mandate, user)

    def _touch(self, parsed: ParsedKey, now: datetime) -> None:
        """Record the use; conditional, so racing requests write it once. A
        failure here is logged and does not refuse the key."""

        def work(conn: Connection) -> None:
            keys_store.record_use(
                conn,
                parsed.mandate,
                parsed.key_id,
                at=now,
                stale_at=now - LAST_USED_GRANULARITY,
            )

        try:
            self._write(work)
        except e.StoreUnavailable as exc:
            log.warning("could not record the use of api key %s: %s", parsed.key_id, exc)


def check_cache_s(value: object) -> float:
    """A key cache's time to live in seconds: a number from 0 (off) to
    :data:`~aibill.service.key_cache.MAX_TTL_S`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise e.InvalidRequest(
            f"key_cache_s must be a number of seconds, not {value!r}.", field="key_cache_s"
        )
    if not 0 <= value <= MAX_TTL_S:
        raise e.InvalidRequest(
            f"key_cache_s must be between 0 (off) and {MAX_TTL_S:g} seconds, not {value!r}.",
            field="key_cache_s",
        )
    return float(value)


def _stored(info: ApiKey, secret_hash: str) -> dict[str, Any]:
    """A new key's row, by column (``mandate_id`` aside)."""
    return {
        "key_id": info.key_id,
        "user_id": info.user,
        "name": info.name,
        "secret_hash": secret_hash,
        "scopes": sorted(s.value for s in info.scopes),
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "revoked_at": None,
        "last_used_at": None,
    }
