"""API keys as values: what is known about a key, a new key with its secret,
the shape of a key string, and when a key whose secret matched still works
(issued and checked by ``aibill.service.keys``).

A key is a random secret with a readable prefix::

    aibill_<mandate>_<key_id>_<secret>        a member's key
    aibill-admin_<key_id>_<secret>            a system admin's key

``key_id`` is 12 lowercase hex digits, ``secret`` 64 lowercase hex digits. A
mandate name may itself contain ``_``, so a key is read from the right.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from aibill.domain import errors as e
from aibill.domain.principal import PrincipalKind, Scope

__all__ = [
    "ADMIN_PREFIX",
    "KEY_ID_HEX",
    "MEMBER_PREFIX",
    "SECRET_BYTES",
    "ApiKey",
    "CreatedKey",
    "ParsedKey",
    "check_scopes",
    "format_key",
    "hash_secret",
    "key_refusal",
    "parse_key",
]

MEMBER_PREFIX = "aibill_"
ADMIN_PREFIX = "aibill-admin_"
KEY_ID_HEX = 12
SECRET_BYTES = 32

_KEY_ID = rf"[0-9a-f]{{{KEY_ID_HEX}}}"
_SECRET = rf"[0-9a-f]{{{SECRET_BYTES * 2}}}"
_MEMBER_KEY = re.compile(
    r"aibill_(?P<mandate>[A-Za-z0-9][A-Za-z0-9_.@-]{0,127})"
    rf"_(?P<key_id>{_KEY_ID})_(?P<secret>{_SECRET})"
)
_ADMIN_KEY = re.compile(rf"aibill-admin_(?P<key_id>{_KEY_ID})_(?P<secret>{_SECRET})")
_MAX_KEY_LENGTH = len(MEMBER_PREFIX) + 128 + 1 + KEY_ID_HEX + 1 + SECRET_BYTES * 2


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What is known about a key, never its secret or its hash.

    ``mandate`` is None for a system admin's key.
    """

    key_id: str
    mandate: str | None
    user: str
    name: str | None
    scopes: frozenset[Scope]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def kind(self) -> PrincipalKind:
        return PrincipalKind.SYSADMIN if self.mandate is None else PrincipalKind.USER

    @property
    def prefix(self) -> str:
        """The key as it starts, without its secret: how lists and logs name it."""
        if self.mandate is None:
            return f"{ADMIN_PREFIX}{self.key_id}_"
        return f"{MEMBER_PREFIX}{self.mandate}_{self.key_id}_"

    def is_active(self, now: datetime) -> bool:
        """Not revoked and not expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key. ``secret`` is the whole key string to hand to its holder: this
    is the only time it exists outside the holder (aibill keeps only its hash).
    It is left out of ``repr`` so that logging this object does not leak it."""

    secret: str = field(repr=False)
    info: ApiKey

    @property
    def key_id(self) -> str:
        return self.info.key_id


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key string read into its parts; the secret is left out of ``repr``."""

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


def format_key(mandate: str | None, key_id: str, secret: str) -> str:
    """The key string for a member's key (``mandate`` given) or an admin's key."""
    if mandate is None:
        return f"{ADMIN_PREFIX}{key_id}_{secret}"
    return f"{MEMBER_PREFIX}{mandate}_{key_id}_{secret}"


def hash_secret(secret: str) -> str:
    """SHA-256 (hex) of a key's secret part: what the store keeps."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


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
    system admin). The one rule for an API call (``Keys.authenticate``) and
    for a web session opened with the key (``service.sessions``)."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    if not holder:
        if admin:
            return "user is no longer a system admin"
        return "user is no longer a member of the mandate"
    return None


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
