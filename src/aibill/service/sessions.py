"""Web sessions: the dashboard's sign-in, opened with an API key.

A person signs in to the dashboard with an API key; the dashboard then holds a
*session token* in a cookie instead of the key. The session names the key it
was opened with (its key id), never the key itself, and every request that
presents the token re-checks that key: a revoked or expired key, or a holder
who left the mandate (or is no longer a system admin), ends its sessions at
once. A session also ends

* when it is closed (signing out deletes its row, so the old cookie is dead),
* after ``idle`` without a request (30 minutes by default),
* ``absolute`` after it was opened, however busy (12 hours by default).

The token is shaped like a key and says where its row is, so a lookup never
crosses mandates (concepts.md rule 9)::

    m.<mandate, base64url>.<session_id>.<secret>     a member's session
    p.<session_id>.<secret>                          a system admin's session

``secret`` is 256 random bits; only its SHA-256 is stored and it is compared
in constant time. Every refusal raises the same :class:`InvalidSession`.

The dashboard's CSRF token is derived from the secret
(:meth:`WebSession.csrf_token`): it is stable for the session, unknown to
anyone without the cookie, and needs no storage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from aibill.domain import errors as e
from aibill.domain.keys import key_refusal
from aibill.domain.model import check_name
from aibill.domain.principal import Principal, PrincipalKind, Scope
from aibill.domain.sessions import (
    DEFAULT_ABSOLUTE,
    DEFAULT_IDLE,
    OpenedSession,
    SessionPolicy,
    WebSession,
)
from aibill.service.hooks import SettingsService
from aibill.store import sessions as sessions_store

__all__ = [
    "DEFAULT_ABSOLUTE",
    "DEFAULT_IDLE",
    "LAST_SEEN_GRANULARITY",
    "SECRET_BYTES",
    "SESSION_ID_HEX",
    "InvalidSession",
    "OpenedSession",
    "SessionPolicy",
    "Sessions",
    "WebSession",
]

log = logging.getLogger("aibill.sessions")

LAST_SEEN_GRANULARITY = timedelta(minutes=1)
"""``last_seen_at`` is written at most once per this interval per session."""
SESSION_ID_HEX = 16
SECRET_BYTES = 32
_MAX_TOKEN = 400
_DUMMY_HASH = hashlib.sha256(b"aibill: no such session").hexdigest()


class InvalidSession(e.AibillError):
    """The session token is not (or no longer) valid: unknown, closed, expired,
    or its key was revoked. The same answer for every reason."""

    code = "invalid_session"

    def __init__(self) -> None:
        super().__init__("Your session has ended; sign in again.")


@dataclass(frozen=True, slots=True)
class _Token:
    mandate: str | None
    session_id: str
    secret: str = field(repr=False)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")


def _format(mandate: str | None, session_id: str, secret: str) -> str:
    if mandate is None:
        return f"p.{session_id}.{secret}"
    return f"m.{_b64(mandate)}.{session_id}.{secret}"


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def _parse(token: object) -> _Token | None:
    if not isinstance(token, str) or len(token) > _MAX_TOKEN:
        return None
    parts = token.split(".")
    mandate: str | None = None
    if len(parts) == 4 and parts[0] == "m":
        try:
            mandate = check_name(_unb64(parts[1]), "mandate")
        except (binascii.Error, UnicodeDecodeError, ValueError, e.InvalidRequest):
            return None
    elif not (len(parts) == 3 and parts[0] == "p"):
        return None
    session_id, secret = parts[-2], parts[-1]
    if not (_is_hex(session_id, SESSION_ID_HEX) and _is_hex(secret, SECRET_BYTES * 2)):
        return None
    return _Token(mandate, session_id, secret)


class Sessions(SettingsService):
    """Open, resume and close the dashboard's sessions.

    Trusted infrastructure, like :meth:`Keys.authenticate`: it acts for whoever
    presents a valid key or token, so it takes no principal. Safe to share
    between threads.
    """

    def __init__(self, *args: Any, policy: SessionPolicy | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy or SessionPolicy()

    def open(self, principal: Principal) -> OpenedSession:
        """A new session for ``principal``, which an API key just authenticated
        (``Keys.authenticate``). Also deletes this mandate's (or the
        platform's) sessions that have ended."""
        if principal.kind is PrincipalKind.SYSTEM or principal.key_id is None:
            raise e.InvalidRequest("A session is opened with an API key.", field="principal")
        mandate = principal.mandate if principal.kind is PrincipalKind.USER else None
        session_id = secrets.token_hex(SESSION_ID_HEX // 2)
        secret = secrets.token_hex(SECRET_BYTES)

        def work(conn: Connection) -> WebSession:
            now = self._now()
            sessions_store.delete_ended(conn, mandate, now=now, idle_since=now - self.policy.idle)
            sessions_store.insert_session(
                conn,
                mandate,
                {
                    "session_id": session_id,
                    "key_id": principal.key_id,
                    "secret_hash": _hash(secret),
                    "created_at": now,
                    "expires_at": now + self.policy.absolute,
                    "last_seen_at": now,
                },
            )
            return self._session(
                session_id, principal, now, now + self.policy.absolute, now, secret
            )

        opened = self._write(work)
        log.info("web session %s opened for %s", session_id, principal.name)
        return OpenedSession(_format(mandate, session_id, secret), opened)

    def resume(self, token: str) -> WebSession:
        """The live session ``token`` names, re-checking the key it was opened
        with; :class:`InvalidSession` (always the same) otherwise. Records the
        request time (at most once a minute), which keeps the session from
        going idle."""
        parsed = _parse(token)
        if parsed is None:
            raise InvalidSession()
        row = self._read(
            lambda conn: sessions_store.session(conn, parsed.mandate, parsed.session_id)
        )
        stored = _DUMMY_HASH if row is None else row.secret_hash
        matches = hmac.compare_digest(_hash(parsed.secret).encode(), stored.encode())
        now = self._now()
        reason = None
        if row is None:
            reason = "unknown session"
        elif not matches:
            reason = "wrong secret"
        elif row.expires_at <= now:
            reason = "expired"
        elif row.last_seen_at + self.policy.idle <= now:
            reason = "idle"
        elif refused := key_refusal(
            revoked_at=row.revoked_at,
            expires_at=row.key_expires_at,
            holder=bool(row.holder),
            admin=parsed.mandate is None,
            now=now,
        ):
            reason = f"its key: {refused}"
        if reason is not None:
            log.info("web session %s refused: %s", parsed.session_id, reason)
            if row is not None and matches:
                self._delete(parsed)
            raise InvalidSession()
        assert row is not None
        last_seen = row.last_seen_at
        if now - last_seen >= LAST_SEEN_GRANULARITY:
            self._touch(parsed, now)
            last_seen = now
        scopes = frozenset(Scope(s) for s in row.scopes)
        if parsed.mandate is None:
            principal = Principal(PrincipalKind.SYSADMIN, row.user_id, None, scopes, row.key_id)
        else:
            principal = Principal(
                PrincipalKind.USER, row.user_id, parsed.mandate, scopes, row.key_id
            )
        return self._session(
            parsed.session_id, principal, row.created_at, row.expires_at, last_seen, parsed.secret
        )

    def close(self, token: str) -> None:
        """End the session ``token`` names (signing out). Unknown tokens are ignored."""
        parsed = _parse(token)
        if parsed is None:
            return
        row = self._read(
            lambda conn: sessions_store.session(conn, parsed.mandate, parsed.session_id)
        )
        if row is not None and hmac.compare_digest(
            _hash(parsed.secret).encode(), row.secret_hash.encode()
        ):
            self._delete(parsed)
            log.info("web session %s closed", parsed.session_id)

    # ------------------------------------------------------------ the session

    def _session(
        self,
        session_id: str,
        principal: Principal,
        created_at: datetime,
        expires_at: datetime,
        last_seen_at: datetime,
        secret: str,
    ) -> WebSession:
        idle_end = min(expires_at, last_seen_at + self.policy.idle)
        return WebSession(
            session_id, principal, created_at, expires_at, last_seen_at, idle_end, secret
        )

    def _delete(self, token: _Token) -> None:
        self._write(
            lambda conn: sessions_store.delete_session(conn, token.mandate, token.session_id)
        )

    def _touch(self, token: _Token, now: datetime) -> None:
        """Record the request; conditional, so racing requests write once. A
        failure is logged and does not end the session."""

        def work(conn: Connection) -> None:
            sessions_store.record_use(
                conn,
                token.mandate,
                token.session_id,
                at=now,
                stale_at=now - LAST_SEEN_GRANULARITY,
            )

        try:
            self._write(work)
        except e.StoreUnavailable as exc:
            log.warning("could not record the use of web session %s: %s", token.session_id, exc)
