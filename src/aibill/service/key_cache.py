"""A per-process memory of API keys verified a moment ago, so that a busy
client's requests need not each open a read transaction to authenticate.

Only a *successful* verification is remembered, for at most ``ttl_s`` seconds
of this process's monotonic time, and only under the SHA-256 of the secret
that was verified: a request presenting the same key id with another secret
finds no entry and is checked against the database (and refused there, with
its reason logged and counted by the throttle). A refusal is never
remembered, so an attacker's guesses cost what they cost before.

What an entry may not outlive:

* **the key's expiry**: checked at each use against the ledger's clock, so
  an expired key is refused at the instant it expires, cached or not;
* **a revocation in this process**: :meth:`KeyCache.forget_key` drops the
  key's entry when the revocation has committed, and a verification that
  read the key before that commit is not stored (each forgetting advances an
  epoch, which :meth:`KeyCache.put` compares);
* **a revocation in another process** (another worker, another server on the
  same database): nothing tells this process, so the key keeps working here
  until its entry is ``ttl_s`` old. That is the bound ``docs/api-keys.md``
  states;
* **its holder losing the right to it**: a system admin removed in this
  process drops that user's platform keys at once (:meth:`forget_holder`);
  elsewhere the bound above applies, and every operation checks the
  membership or the system-admin role again in its own transaction anyway.

The cache holds at most ``max_entries`` keys, the least recently used
forgotten first; it is safe to share between threads (one lock, held for a
dictionary operation).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aibill.domain.principal import Principal

__all__ = ["DEFAULT_TTL_S", "MAX_ENTRIES", "MAX_TTL_S", "KeyCache", "Recalled"]

DEFAULT_TTL_S = 1.0
"""How long ``aibill serve`` trusts a verification by default: a key revoked
in another process stops working here within a second."""
MAX_TTL_S = 60.0
"""The longest a verification may be trusted: the bound a revocation waits for."""
MAX_ENTRIES = 10_000

_Slot = tuple[str | None, str]
"""(mandate or None for a platform key, key id): one key, one entry."""


@dataclass(slots=True)
class _Entry:
    secret_hash: str
    principal: Principal
    expires_at: datetime | None
    verified_s: float  # monotonic
    last_used_at: datetime | None  # the ledger's clock; drives the "last used" write


@dataclass(frozen=True, slots=True)
class Recalled:
    """A key remembered as verified: who it stands for, and whether its use is
    due to be recorded (``touch``; at most once per granularity per key)."""

    principal: Principal
    touch: bool


class KeyCache:
    """Recently verified keys of one ledger; ``ttl_s`` 0 turns it off."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = MAX_ENTRIES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be between 0 and {MAX_TTL_S:g} seconds, not {ttl_s!r}")
        self.ttl_s = float(ttl_s)
        self._max = max_entries
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Slot, _Entry] = OrderedDict()
        self._epoch = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def epoch(self) -> int:
        """Read before looking a key up in the database; :meth:`put` stores the
        result only if nothing was forgotten since."""
        with self._lock:
            return self._epoch

    def recall(
        self,
        mandate: str | None,
        key_id: str,
        secret_hash: str,
        now: datetime,
        touch_every: timedelta,
        *,
        claim: bool = True,
    ) -> Recalled | None:
        """The principal of a key verified less than ``ttl_s`` ago with this
        secret and not expired at ``now``, or None (then verify it in the
        database). A stale or expired entry is dropped. When the key's use is
        ``touch_every`` old, the answer says ``touch``, and with ``claim`` this
        caller is the one to record it (others see it recorded)."""
        if self.ttl_s <= 0:
            return None
        slot = (mandate, key_id)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is None:
                return None
            if not hmac.compare_digest(entry.secret_hash, secret_hash):
                return None  # another secret: the database decides, and logs why
            stale = self._monotonic() - entry.verified_s >= self.ttl_s
            if stale or (entry.expires_at is not None and entry.expires_at <= now):
                del self._entries[slot]
                return None
            self._entries.move_to_end(slot)
            last = entry.last_used_at
            touch = last is None or now - last >= touch_every
            if touch and claim:  # this caller records the use; the others need not
                entry.last_used_at = now
            return Recalled(entry.principal, touch)

    def put(
        self,
        secret_hash: str,
        principal: Principal,
        *,
        expires_at: datetime | None,
        last_used_at: datetime | None,
        epoch: int,
    ) -> None:
        """Remember a key the database just verified, unless a key or holder
        was forgotten since ``epoch`` (the verification may predate it)."""
        if self.ttl_s <= 0 or principal.key_id is None:
            return
        slot = (principal.mandate, principal.key_id)
        entry = _Entry(secret_hash, principal, expires_at, self._monotonic(), last_used_at)
        with self._lock:
            if epoch != self._epoch:
                return
            self._entries[slot] = entry
            self._entries.move_to_end(slot)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def forget_key(self, mandate: str | None, key_id: str) -> None:
        """Drop the key's entry (it was revoked in this process)."""
        with self._lock:
            self._epoch += 1
            self._entries.pop((mandate, key_id), None)

    def forget_holder(self, mandate: str | None, user: str) -> None:
        """Drop every entry of ``user``'s keys in ``mandate`` (None: the
        platform's): the user no longer holds the right to them."""
        with self._lock:
            self._epoch += 1
            gone = [
                slot
                for slot, entry in self._entries.items()
                if slot[0] == mandate and entry.principal.user == user
            ]
            for slot in gone:
                del self._entries[slot]

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._entries.clear()
