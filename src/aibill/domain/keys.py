"""The values of API keys: what is known about a key, and a new key with its
secret (issued and checked by ``aibill.service.keys``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from aibill.domain.principal import PrincipalKind, Scope

__all__ = ["ADMIN_PREFIX", "MEMBER_PREFIX", "ApiKey", "CreatedKey"]

MEMBER_PREFIX = "aibill_"
ADMIN_PREFIX = "aibill-admin_"


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
