"""The values of web sessions: how long a session lives, a live session and a
new one with its token (opened and checked by ``aibill.service.sessions``)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aibill.domain import errors as e
from aibill.domain.principal import Principal

__all__ = ["DEFAULT_ABSOLUTE", "DEFAULT_IDLE", "OpenedSession", "SessionPolicy", "WebSession"]

DEFAULT_IDLE = timedelta(minutes=30)
DEFAULT_ABSOLUTE = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a session lives: ``idle`` without a request, ``absolute`` in all."""

    idle: timedelta = DEFAULT_IDLE
    absolute: timedelta = DEFAULT_ABSOLUTE

    def __post_init__(self) -> None:
        if self.idle <= timedelta(0) or self.absolute <= timedelta(0):
            raise e.InvalidRequest("session lifetimes must be positive.", field="session")


@dataclass(frozen=True, slots=True)
class WebSession:
    """A live session: who it acts for and until when."""

    session_id: str
    principal: Principal
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    idle_expires_at: datetime
    secret: str = field(repr=False)

    @property
    def csrf_token(self) -> str:
        """The synchronizer token every form of this session carries."""
        return hmac.new(self.secret.encode("ascii"), b"aibill csrf", hashlib.sha256).hexdigest()

    def csrf_ok(self, presented: object) -> bool:
        return isinstance(presented, str) and hmac.compare_digest(
            presented.encode("utf-8", "replace"), self.csrf_token.encode("ascii")
        )


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A new session; ``token`` goes into the cookie and nowhere else."""

    token: str = field(repr=False)
    session: WebSession
