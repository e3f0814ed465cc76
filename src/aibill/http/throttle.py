"""Throttling failed authentication: a failure budget per client address and
per API key id, kept in this process's memory.

Every place that checks a credential (an API request's bearer key, the
dashboard's sign-in with a key, the dashboard's session cookie) asks
:meth:`AuthThrottle.check` first. When the client's address, or the key id the
presented key names, has spent its failure budget
(:class:`~aibill.domain.throttle.FailureBudget`), the answer is
:class:`~aibill.domain.errors.TooManyFailedAttempts` (429 with
``Retry-After``) before the database is touched. Only failures are charged:
a valid key never spends anything, however busy it is.

A credential this process has seen succeed recently (a gateway's key, a
signed-in browser's session) is let through even while its address or key id
is throttled, so an attacker hammering a key id, or sharing an address with
a real client, cannot lock that client out: it keeps working. The process
remembers only a keyed digest of such credentials, never the credential.

The state is bounded: at most ``max_subjects`` addresses and as many key ids
(the least recently failing ones are forgotten first), and ``max_remembered``
credentials. Each worker process keeps its own, so with ``n`` workers a
subject can fail up to ``n`` times the budget; sharing it would take a
database write per failed attempt, which is the very work an attacker would
then be making the service do.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from fastapi import Request

from aibill.domain import errors as e
from aibill.domain import throttle as rule
from aibill.domain.throttle import FailureBudget
from aibill.service.keys import parse_key

log = logging.getLogger("aibill.throttle")

MAX_SUBJECTS = 10_000
MAX_REMEMBERED = 10_000
REMEMBER_S = 15 * 60
"""How long a credential that succeeded stays exempt from throttling (renewed on each use)."""
IPV6_PREFIX = 64
"""IPv6 clients are counted by their /64 network: one host usually holds all of it."""

Subject = tuple[str, ...]


def address_subject(host: str | None) -> Subject:
    """The budget a client address spends: the address itself (IPv4), its /64
    (IPv6), or the host name the server saw (as given)."""
    if not host:
        return ("addr", "unknown")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ("addr", host[:100])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ("addr", str(ip.ipv4_mapped))
        return ("addr", str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False)))
    return ("addr", str(ip))


def key_subject(presented: str) -> Subject | None:
    """The budget of the key id a presented API key names (read from the key
    string, no lookup), or None when it is not shaped like a key."""
    parsed = parse_key(presented)
    if parsed is None:
        return None
    return ("key", parsed.mandate or "", parsed.key_id)


class _Subjects:
    """Subjects' states, bounded: when full, the least recently charged is
    forgotten (usually long spent: forgetting a spent state changes nothing)."""

    def __init__(self, budget: FailureBudget, limit: int) -> None:
        self._budget = budget
        self._limit = limit
        self._tat: OrderedDict[Hashable, int] = OrderedDict()
        self._announced: set[Hashable] = set()  # throttled, and said so in the log
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._tat)

    def wait_ns(self, subject: Hashable, now_ns: int) -> int:
        return rule.wait_ns(self._budget, self._tat.get(subject), now_ns)

    def charge(self, subject: Hashable, now_ns: int) -> bool:
        """Charge one failure; whether this starts the subject's throttling
        (true once per episode: until it has earned all its failures back)."""
        before = self._tat.pop(subject, None)
        if before is None or rule.is_spent(before, now_ns):
            self._announced.discard(subject)
        after = rule.charge(self._budget, before, now_ns)
        self._tat[subject] = after
        self._evict(now_ns)
        if rule.wait_ns(self._budget, after, now_ns) == 0 or subject in self._announced:
            return False
        self._announced.add(subject)
        return True

    def _evict(self, now_ns: int) -> None:
        while len(self._tat) > self._limit:
            oldest, tat = self._tat.popitem(last=False)
            self._announced.discard(oldest)
            if not rule.is_spent(tat, now_ns) and not self.overflowed:
                self.overflowed = True
                log.warning(
                    "auth throttle: more than %d subjects failing at once; the least"
                    " recently failing are forgotten first",
                    self._limit,
                )


@dataclass
class Attempt:
    """One authentication attempt the throttle let in: report how it went."""

    _throttle: AuthThrottle | None
    _subjects: list[Subject] = field(default_factory=list)
    _digest: bytes = b""

    def failed(self) -> None:
        """The credential was refused: charge every subject of the attempt."""
        if self._throttle is not None:
            self._throttle._failed(self._subjects, self._digest)

    def succeeded(self) -> None:
        """The credential was accepted: remember it (it spends nothing)."""
        if self._throttle is not None:
            self._throttle._succeeded(self._digest)


class AuthThrottle:
    """The failure budgets of this process's clients; safe to share between threads.

    ``clock`` returns monotonic nanoseconds (tests pass their own).
    """

    def __init__(
        self,
        budget: FailureBudget | None = None,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        max_subjects: int = MAX_SUBJECTS,
        max_remembered: int = MAX_REMEMBERED,
    ) -> None:
        self.budget = budget or FailureBudget()
        self._clock = clock
        self._lock = threading.Lock()
        self._addresses = _Subjects(self.budget, max_subjects)
        self._keys = _Subjects(self.budget, max_subjects)
        self._good: OrderedDict[bytes, int] = OrderedDict()
        self._max_remembered = max_remembered
        self._pepper = secrets.token_bytes(32)

    def check(self, address: str | None, credential: str, *, key_id: bool = True) -> Attempt:
        """Let an attempt to authenticate with ``credential`` from ``address``
        in, or raise :class:`TooManyFailedAttempts` when the address (or, with
        ``key_id``, the API key id the credential names) has to wait. Cheap:
        no database, one hash."""
        if not self.budget.enabled:
            return Attempt(None)
        subjects = [address_subject(address)]
        named = key_subject(credential) if key_id else None
        if named is not None:
            subjects.append(named)
        digest = self._digest(credential)
        now = self._clock()
        with self._lock:
            remembered = self._good.get(digest)
            if remembered is not None and now < remembered:
                return Attempt(self, subjects, digest)
            wait = max(self._table(s).wait_ns(s, now) for s in subjects)
        if wait > 0:
            raise e.TooManyFailedAttempts(-(-wait // rule.NS_PER_S))
        return Attempt(self, subjects, digest)

    def _table(self, subject: Subject) -> _Subjects:
        return self._addresses if subject[0] == "addr" else self._keys

    def _digest(self, credential: str) -> bytes:
        return hashlib.blake2b(
            credential.encode("utf-8", "surrogatepass"), key=self._pepper, digest_size=16
        ).digest()

    def _failed(self, subjects: list[Subject], digest: bytes) -> None:
        now = self._clock()
        with self._lock:
            self._good.pop(digest, None)
            changes = [(s, self._table(s).charge(s, now)) for s in subjects]
        for subject, started in changes:
            if started:
                log.warning(
                    "authentication throttled for %s %r: repeated failures",
                    "address" if subject[0] == "addr" else "key id",
                    "/".join(subject[1:]),
                )

    def _succeeded(self, digest: bytes) -> None:
        until = self._clock() + REMEMBER_S * rule.NS_PER_S
        with self._lock:
            self._good.pop(digest, None)
            self._good[digest] = until
            while len(self._good) > self._max_remembered:
                self._good.popitem(last=False)

    def sizes(self) -> tuple[int, int, int]:
        """How many addresses, key ids and remembered credentials are kept."""
        with self._lock:
            return len(self._addresses), len(self._keys), len(self._good)


def auth_throttle(request: Request) -> AuthThrottle:
    """The app's throttle (one with the default budget when none was configured)."""
    state = request.app.state
    found: AuthThrottle | None = getattr(state, "auth_throttle", None)
    if found is None:
        found = AuthThrottle()
        state.auth_throttle = found
    return found


def client_address(request: Request) -> str | None:
    """The address the request came from, as the server saw it: behind a
    reverse proxy, the proxy's, unless uvicorn trusts that proxy's
    ``X-Forwarded-For`` (``FORWARDED_ALLOW_IPS``)."""
    return request.client.host if request.client else None
