"""``aibill.Client``: the aibill service over HTTP, with the library's surface.

A gateway written against :class:`aibill.Billing` switches to a remote
service by changing one line::

    billing = aibill.connect("sqlite:///aibill.db")              # embedded
    billing = aibill.Client("https://billing.internal", api_key)  # remote

The methods have the library's names and arguments, take and return
``Decimal`` money, and return the library's value types (``Hold``, ``Entry``,
``Balance``, ``Page``, ``CheckResult``, ``Charge``, ``Mandate``, ``Drift``),
parsed exactly from the service's JSON: money arrives as decimal strings and
becomes ``Decimal`` without passing through a float, and every datetime is
timezone-aware.

Every write carries an ``Idempotency-Key`` (a fresh one unless the caller
gives their own), and a request that failed on the way (connection error,
timeout, or a 502/503/504 answer) is retried with the same key, so a retry
is applied at most once: it can never charge twice. Refusals and other
errors arrive as aibill's own exceptions (``InsufficientBalance``,
``PermissionDenied``, ...), chosen by the stable error code of the service's
problem document.
"""

from __future__ import annotations

import json
import logging
import random
import time
import types
import uuid
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Final, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote

import httpx

from aibill.domain import errors as e
from aibill.domain.model import (
    Balance,
    BillingModel,
    CheckResult,
    Drift,
    Entry,
    EntryKind,
    Hold,
    Mandate,
    Page,
)
from aibill.domain.money import from_micros, to_micros
from aibill.pricing.catalog import Usage
from aibill.service.pricing import Charge

__all__ = ["Client", "HeldCall", "ServiceUnavailable"]

log = logging.getLogger("aibill.client")

RETRY_STATUSES: Final = frozenset({502, 503, 504})
"""Answers that say "not now" (a proxy or the database was unavailable): retried."""

_RETRY_ERRORS: Final = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_MAX_BACKOFF_S: Final = 5.0
_DEFAULT_HOLD_TTL_S: Final = 900

T = TypeVar("T")


class ServiceUnavailable(e.AibillError):
    """The aibill service could not be reached, or kept answering 502/503/504,
    after the client's bounded retries. Whether a write was applied is unknown;
    calling it again with the same ``idempotency_key`` is safe."""

    code = "service_unavailable"


# --------------------------------------------------------------------- client


class Client:
    """The aibill service at ``base_url``, acting for the holder of ``api_key``.

    ``timeout`` is per HTTP request, in seconds. A request that fails with a
    connection error, a timeout or a 502/503/504 answer is retried up to
    ``retries`` times (so at most ``retries + 1`` attempts) with exponential
    backoff and jitter starting at ``backoff_s``; every retry of a write
    carries the same idempotency key, so the service applies it at most once.
    Other errors (every 4xx) are never retried. When the retries run out the
    call raises :class:`ServiceUnavailable` (or the service's own error, such
    as ``StoreUnavailable``, if it sent one).

    ``http`` is an ``httpx.Client`` to send the requests with (its transport,
    proxies and TLS settings); the client then does not close it. Otherwise
    the client opens its own and :meth:`close` (or leaving a ``with`` block)
    closes it. A client may be shared between threads.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        http: httpx.Client | None = None,
        backoff_s: float = 0.1,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise e.InvalidRequest(
                f"base_url must be an http:// or https:// URL, not {base_url!r}.", field="base_url"
            )
        if not isinstance(api_key, str) or not api_key.strip():
            raise e.InvalidRequest("api_key must be a non-empty string.", field="api_key")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise e.InvalidRequest("retries must be an int of zero or more.", field="retries")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key.strip()
        self._timeout = timeout
        self._retries = retries
        self._backoff_s = backoff_s
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the connections (only those of an HTTP client the client opened)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------- tenants and users

    def create_mandate(
        self,
        mandate: str,
        *,
        billing_model: str | BillingModel = BillingModel.PREPAY_MANDATE,
        currency: str = "CHF",
    ) -> Mandate:
        """Create a mandate (system admins); the same call again returns it."""
        body = {"id": mandate, "billing_model": str(billing_model), "currency": currency}
        return _parse(Mandate, self._call("POST", "/v1/mandates", body=body))

    def get_mandate(self, mandate: str) -> Mandate:
        return _parse(Mandate, self._call("GET", f"/v1/mandates/{_seg(mandate)}"))

    def add_user(self, user: str) -> str:
        """Register a user identity (idempotent); returns its id."""
        answer = self._call("POST", "/v1/users", body={"id": user})
        return str(answer["id"])

    def add_member(self, mandate: str, user: str, *, role: str | None = "member") -> None:
        """Make ``user`` a member of ``mandate`` with ``role`` (``member`` unless
        said otherwise; ``None``: no role yet). Idempotent."""
        self._call(
            "POST", f"/v1/mandates/{_seg(mandate)}/members", body={"user": user, "role": role}
        )

    # ---------------------------------------------------------------- money

    def credit(
        self,
        mandate: str,
        amount: Decimal,
        *,
        user: str | None = None,
        reason: str = "payment",
        description: str | None = None,
        idempotency_key: str | None = None,
        corrects: str | None = None,
    ) -> Entry:
        """Add money to the account the billing model names (admins).

        Without ``idempotency_key`` the client makes one up; pass your own
        (e.g. the payment's id) to make the credit safe to repeat across
        processes and restarts."""
        body = _body(
            amount=_money(amount, "amount"),
            user=user,
            reason=reason,
            description=description,
            corrects=corrects,
        )
        path = f"/v1/mandates/{_seg(mandate)}/credits"
        return self._write(Entry, path, body, idempotency_key)

    def check(
        self,
        mandate: str,
        *,
        estimate: Decimal,
        user: str | None = None,
        provider: str | None = None,
        feature_instance: str | None = None,
    ) -> CheckResult:
        """May a call costing up to ``estimate`` start now? Changes nothing.

        The answer has the reason (``ok``, ``provider_not_allowed``,
        ``limit_exceeded``, ``insufficient_balance``), the balance and the account."""
        body = _body(
            estimate=_money(estimate, "estimate"),
            user=user,
            provider=provider,
            feature_instance=feature_instance,
        )
        return _parse(CheckResult, self._call("POST", f"/v1/mandates/{_seg(mandate)}/check", body))

    def estimate(
        self,
        mandate: str,
        *,
        provider: str,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
    ) -> Charge:
        """The upper bound of a call's cost in the mandate's currency, priced now,
        converted and marked up. Changes nothing."""
        body = {
            "provider": provider,
            "model": model,
            "input_tokens": input_tokens,
            "max_output_tokens": max_output_tokens,
        }
        return _parse(Charge, self._call("POST", f"/v1/mandates/{_seg(mandate)}/estimate", body))

    def hold(
        self,
        mandate: str,
        *,
        amount: Decimal | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        feature_code: str | None = None,
        feature_instance: str | None = None,
        workflow_id: str | None = None,
        ttl_s: int = _DEFAULT_HOLD_TTL_S,
        idempotency_key: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
    ) -> HeldCall:
        """Reserve money for a call about to start: ``amount=``, or the estimate
        of ``provider``, ``model``, ``input_tokens`` and ``max_output_tokens``.

        Raises ``InsufficientBalance``, ``LimitExceeded`` or
        ``ProviderNotAllowed`` when the call may not start. The hold returned
        is also a context manager: leaving its ``with`` block without
        :meth:`HeldCall.capture` releases it.
        """
        body = _body(
            amount=None if amount is None else _money(amount, "amount"),
            user=user,
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            feature_code=feature_code,
            feature_instance=feature_instance,
            workflow_id=workflow_id,
            ttl_s=ttl_s,
            metadata=None if metadata is None else dict(metadata),
        )
        path = f"/v1/mandates/{_seg(mandate)}/holds"
        return HeldCall._of(self, self._write(Hold, path, body, idempotency_key))

    def capture(
        self,
        hold_id: str,
        *,
        amount: Decimal | None = None,
        usage: Usage | None = None,
        idempotency_key: str | None = None,
        description: str | None = None,
    ) -> Entry:
        """Post the real cost of a held call and free the hold: ``amount=``, or
        ``usage=`` priced for the hold's provider and model now.

        The full cost is always posted; any part the account cannot cover is
        marked ``over_balance`` with the ``shortfall``. Capturing again with
        the same amount or usage returns the first entry; anything else, or a
        capture after a release, raises a ``Conflict``."""
        if (amount is None) == (usage is None):
            raise e.InvalidRequest("Give either amount= or usage=.", field="amount")
        body = _body(
            amount=None if amount is None else _money(amount, "amount"),
            usage=None if usage is None else _usage(usage),
            description=description,
        )
        return self._write(Entry, f"/v1/holds/{_seg(hold_id)}/capture", body, idempotency_key)

    def release(self, hold_id: str, *, idempotency_key: str | None = None) -> Hold:
        """Free a hold without a debit (the call failed or never started).

        Releasing a released or expired hold returns it; releasing a captured
        hold raises ``HoldAlreadyCaptured``."""
        return self._write(Hold, f"/v1/holds/{_seg(hold_id)}/release", None, idempotency_key)

    def record_usage(
        self,
        mandate: str,
        *,
        amount: Decimal | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        usage: Usage | None = None,
        feature_code: str | None = None,
        feature_instance: str | None = None,
        workflow_id: str | None = None,
        idempotency_key: str | None = None,
        already_happened: bool = False,
        description: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
    ) -> Entry:
        """Post a debit without a hold: ``amount=``, or ``provider``, ``model``
        and ``usage`` priced now.

        In a prepaid mandate it is refused with ``InsufficientBalance`` when the
        account cannot pay, and anywhere with ``LimitExceeded``, unless
        ``already_happened``: usage that happened is always recorded, marked."""
        if (amount is None) == (usage is None):
            raise e.InvalidRequest(
                "Give either amount= or usage= (with provider and model).", field="amount"
            )
        body = _body(
            amount=None if amount is None else _money(amount, "amount"),
            usage=None if usage is None else _usage(usage),
            user=user,
            provider=provider,
            model=model,
            feature_code=feature_code,
            feature_instance=feature_instance,
            workflow_id=workflow_id,
            already_happened=bool(already_happened),
            description=description,
            metadata=None if metadata is None else dict(metadata),
        )
        path = f"/v1/mandates/{_seg(mandate)}/usage"
        return self._write(Entry, path, body, idempotency_key)

    # -------------------------------------------------------------- reading

    def balance(self, mandate: str, *, user: str | None = None) -> Balance:
        """The account the billing model names for ``user``."""
        answer = self._call("GET", f"/v1/mandates/{_seg(mandate)}/balance", params={"user": user})
        return _parse(Balance, answer)

    def get_hold(self, hold_id: str) -> Hold:
        return _parse(Hold, self._call("GET", f"/v1/holds/{_seg(hold_id)}"))

    def history(
        self,
        mandate: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        user: str | None = None,
        account: str | None = None,
        kind: str | EntryKind | None = None,
        reason: str | None = None,
        hold_id: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        feature_code: str | None = None,
        feature_instance: str | None = None,
        workflow_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page:
        """Entries newest first, ``limit`` at a time (at most 1000); pass the
        page's ``cursor`` back for the next page. The filters are the library's."""
        params: dict[str, Any] = {
            "limit": limit,
            "cursor": cursor,
            "user": user,
            "account": account,
            "kind": None if kind is None else str(kind),
            "reason": reason,
            "hold_id": hold_id,
            "provider": provider,
            "model": model,
            "feature_code": feature_code,
            "feature_instance": feature_instance,
            "workflow_id": workflow_id,
            "since": None if since is None else since.isoformat(),
            "until": None if until is None else until.isoformat(),
        }
        answer = self._call("GET", f"/v1/mandates/{_seg(mandate)}/entries", params=params)
        return _parse(Page, answer)

    def verify(self, mandate: str) -> list[Drift]:
        """Recompute the mandate's accounts from their entries: an empty list
        when the ledger is sound."""
        answer = self._call("GET", f"/v1/mandates/{_seg(mandate)}/verify")
        if not isinstance(answer, list):
            raise _malformed("a list of drifts", answer)
        return [_parse(Drift, item) for item in answer]

    # ------------------------------------------------------------ transport

    def _write(self, cls: type[T], path: str, body: dict[str, Any] | None, key: str | None) -> T:
        """POST a ledger write under an idempotency key; the result says whether
        the service replayed an earlier answer."""
        if key is None:
            key = str(uuid.uuid4())
        elif not isinstance(key, str) or not key.strip() or len(key) > 200:
            raise e.InvalidRequest(
                "idempotency_key must be a non-empty string of at most 200 characters.",
                field="idempotency_key",
            )
        answer = self._call("POST", path, body, key=key)
        return _parse(cls, answer)

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Any:
        """Send one request, retrying what may be retried; the decoded JSON answer."""
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": f"aibill-python/{_version()}",
        }
        if key is not None:
            headers["Idempotency-Key"] = key
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base_url + path
        attempts = self._retries + 1
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            try:
                request = self._http.build_request(
                    method,
                    url,
                    json=None if body is None else dict(body),
                    params=query or None,
                    headers=headers,
                    timeout=self._timeout,
                )
                response = self._http.send(request)
            except _RETRY_ERRORS as exc:
                if last:
                    raise ServiceUnavailable(
                        f"The aibill service at {self.base_url} could not be reached after"
                        f" {attempts} attempt(s): {exc}",
                        method=method,
                        path=path,
                        idempotency_key=key,
                    ) from exc
                log.info("retrying %s %s after %s", method, path, type(exc).__name__)
                self._pause(attempt)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                log.info("retrying %s %s after HTTP %d", method, path, response.status_code)
                self._pause(attempt)
                continue
            return self._answer(response, method, path, key)
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, response: httpx.Response, method: str, path: str, key: str | None) -> Any:
        status = response.status_code
        try:
            decoded = _json(response.content) if response.content else None
        except ValueError:
            decoded = None
        if response.is_success:
            if decoded is None:
                raise _malformed("a JSON body", response.text[:200])
            if isinstance(decoded, dict) and response.headers.get("Idempotent-Replayed") == "true":
                decoded["replayed"] = True
            return decoded
        if isinstance(decoded, dict) and isinstance(decoded.get("code"), str):
            raise _error(status, decoded)
        if status in RETRY_STATUSES:
            raise ServiceUnavailable(
                f"The aibill service answered HTTP {status} to {method} {path}"
                f" {self._retries + 1} time(s).",
                status=status,
                method=method,
                path=path,
                idempotency_key=key,
            )
        raise e.AibillError(
            f"The aibill service answered HTTP {status} to {method} {path}: {response.text[:200]}",
            code=None,
            status=status,
        )

    def _pause(self, attempt: int) -> None:
        """Wait before retry ``attempt + 1``: exponential, capped, with jitter so
        that many clients failing together do not come back together."""
        delay = min(self._backoff_s * 2**attempt, _MAX_BACKOFF_S)
        if delay > 0:
            self._sleep(delay * random.uniform(0.5, 1.0))

    _sleep = staticmethod(time.sleep)


# ------------------------------------------------------------------ the hold


class HeldCall(Hold):
    """A hold placed through :meth:`Client.hold`: the ``Hold`` as placed (all
    its fields), which can capture or release itself, and a context manager
    for the common flow::

        with client.hold("acme", user="alice", provider="openai", model="gpt-4o",
                         input_tokens=1200, max_output_tokens=800) as h:
            response = call_the_model(...)
            h.capture(aibill.Usage(input_tokens=..., output_tokens=...))

    Leaving the block without a capture releases the hold, also when the block
    raises (the exception then propagates unchanged). The fields are those of
    the hold when it was placed; what happened to it since is in ``entry``
    (after :meth:`capture`) and ``released`` (after :meth:`release`).
    """

    _client: Client
    entry: Entry | None
    released: Hold | None

    @classmethod
    def _of(cls, client: Client, hold: Hold) -> HeldCall:
        held = cls(**{f.name: getattr(hold, f.name) for f in fields(Hold)})
        held._set(_client=client, entry=None, released=None)
        return held

    def _set(self, **values: Any) -> None:
        # The hold's own fields stay frozen; only the client-side state changes.
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def capture(
        self,
        usage_or_amount: Usage | Decimal,
        /,
        *,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> Entry:
        """Post the call's real cost: its ``aibill.Usage`` (priced for the hold's
        provider and model) or an amount as ``Decimal``; returns the entry."""
        if isinstance(usage_or_amount, Usage):
            entry = self._client.capture(
                self.id,
                usage=usage_or_amount,
                description=description,
                idempotency_key=idempotency_key,
            )
        else:
            entry = self._client.capture(
                self.id,
                amount=usage_or_amount,
                description=description,
                idempotency_key=idempotency_key,
            )
        self._set(entry=entry)
        return entry

    def release(self, *, idempotency_key: str | None = None) -> Hold:
        """Free the hold without a debit; returns the hold as it now is."""
        released = self._client.release(self.id, idempotency_key=idempotency_key)
        self._set(released=released)
        return released

    @property
    def resolved(self) -> bool:
        """Captured or released through this object."""
        return self.entry is not None or self.released is not None

    def __enter__(self) -> HeldCall:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if self.resolved:
            return
        if exc is None:
            self.release()
            return
        try:
            self.release()
        except Exception as failure:  # the block's own exception matters more
            log.warning("releasing hold %s failed: %s", self.id, failure)
            exc.add_note(
                f"aibill: releasing hold {self.id} failed ({failure!r}); it expires at "
                f"{self.expires_at.isoformat()}."
            )


# ------------------------------------------------------------------- parsing


def _seg(value: str) -> str:
    """A path segment, percent-encoded (hold ids keep their ':')."""
    return quote(value, safe=":@")


def _money(value: object, field: str) -> str:
    """Money as the exact decimal string the service takes; floats, negative
    amounts and more than six decimals are refused as the library does."""
    return str(from_micros(to_micros(value, field=field, allow_zero=True)))


def _usage(usage: object) -> dict[str, int]:
    if not isinstance(usage, Usage):
        raise e.InvalidRequest("usage must be an aibill.Usage.", field="usage")
    return {f.name: getattr(usage, f.name) for f in fields(Usage)}


def _body(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _json(content: bytes) -> Any:
    """JSON with every fractional number as ``Decimal``; NaN and infinities refused."""
    return json.loads(content, parse_float=Decimal, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number aibill sends")


def _version() -> str:
    from aibill import __version__

    return __version__


def _malformed(expected: str, got: object) -> e.AibillError:
    return e.AibillError(f"The aibill service answered with {got!r}, not {expected}.")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    return hints


def _parse(cls: type[T], data: Any) -> T:
    """One of aibill's value types from its JSON form, exactly: decimal strings
    become ``Decimal``, timestamps aware ``datetime``, enums their members."""
    if not isinstance(data, dict):
        raise _malformed(f"a {cls.__name__}", data)
    hints = _hints(cls)
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _value(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise _malformed(f"a {cls.__name__} ({exc})", data) from None


def _value(tp: Any, raw: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        if raw is None:
            return None
        options = [a for a in get_args(tp) if a is not type(None)]
        return _value(options[0], raw, where)
    if raw is None:
        return None
    if origin is list:
        if not isinstance(raw, list):
            raise _malformed(f"a list for {where}", raw)
        (item,) = get_args(tp) or (Any,)
        return [_value(item, x, where) for x in raw]
    if tp is Decimal:
        return _decimal(raw, where)
    if tp is datetime:
        return _datetime(raw, where)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(raw)
    if isinstance(tp, type) and is_dataclass(tp):
        return _parse(tp, raw)
    return raw  # str, int, bool and JSON objects as they are (decimals in them are Decimal)


def _decimal(raw: Any, where: str) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise _malformed(f"a decimal string for {where}", raw)
    try:
        number = Decimal(raw)
    except InvalidOperation:
        raise _malformed(f"a decimal string for {where}", raw) from None
    if not number.is_finite():
        raise _malformed(f"a finite decimal for {where}", raw)
    return number


def _datetime(raw: Any, where: str) -> datetime:
    if not isinstance(raw, str):
        raise _malformed(f"a timestamp for {where}", raw)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise _malformed(f"a timestamp for {where}", raw) from None
    # The service speaks UTC; a timestamp without an offset is read as UTC.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# -------------------------------------------------------------------- errors


def _error_classes() -> dict[str, type[e.AibillError]]:
    """aibill's error classes by their stable code (the first class wins)."""
    found: dict[str, type[e.AibillError]] = {}
    todo: list[type[e.AibillError]] = [e.AibillError]
    while todo:
        cls = todo.pop(0)
        if cls.__module__.startswith("aibill."):
            found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


def _error(status: int, problem: dict[str, Any]) -> e.AibillError:
    """The exception a problem document describes: aibill's own class for its
    code, with the message and details the service sent; ``AibillError`` with
    the code and status in its details when the code is not aibill's."""
    code = problem["code"]
    message = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    raw = problem.get("details")
    details: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    if "errors" in problem:  # a request the service's validation refused
        details.setdefault("errors", problem["errors"])
    cls = _error_classes().get(code)
    if cls is None or cls is e.AibillError:
        return e.AibillError(message, **{**details, "code": code, "status": status})
    if issubclass(cls, e.InsufficientBalance):  # money in details is Decimal, as in the library
        for name in ("available", "required"):
            if isinstance(details.get(name), str):
                details[name] = _decimal(details[name], name)
    error = cls.__new__(cls)
    e.AibillError.__init__(error, message, **details)
    # The attributes some errors carry in the library, restored from the details.
    if isinstance(error, e.InsufficientBalance):
        error.available = details.get("available", Decimal(0))
        error.required = details.get("required", Decimal(0))
    if isinstance(error, e.IdempotencyConflict):
        error.field = str(details.get("field", ""))
    return error
