"""``aibill.Client``: the aibill service over HTTP, with the library's surface.

A gateway written against :class:`aibill.Billing` switches to a remote
service by changing one line::

    billing = aibill.connect("sqlite:///aibill.db")              # embedded
    billing = aibill.Client("https://billing.internal", api_key)  # remote

The methods have the library's names and arguments, take and return
``Decimal`` money, and return the library's value types (``Hold``, ``Entry``,
``Balance``, ``Page``, ``CheckResult``, ``Charge``, ``Mandate``, ``Drift``,
``Member``, ``AuditPage``, ``UsageRow``, ...), parsed exactly from the
service's JSON: money arrives as decimal strings and becomes ``Decimal``
without passing through a float, and every datetime is timezone-aware. The
administrative surface is there too, under the library's names:
``client.pricing``, ``client.access`` and ``client.keys`` mirror
``billing.pricing``, ``billing.access`` and ``billing.keys``, so the same code
administers an embedded ledger or a remote service.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import (
    Any,
    Final,
    TextIO,
    TypeVar,
    Union,
    Unpack,
    get_args,
    get_origin,
    get_type_hints,
)
from urllib.parse import quote

import httpx

from aibill.domain import errors as e
from aibill.domain.access import ProviderInfo, RoleInfo, RuleInfo
from aibill.domain.audit import AuditPage
from aibill.domain.held import HeldCall
from aibill.domain.keys import ApiKey, CreatedKey
from aibill.domain.model import (
    Balance,
    BillingModel,
    CheckResult,
    Drift,
    Entry,
    EntryKind,
    HistoryFilters,
    Hold,
    Mandate,
    Member,
    Page,
    SpendingLimit,
    UsageFilters,
)
from aibill.domain.money import from_micros, to_decimal, to_micros
from aibill.domain.permissions import BUILTIN_RULES, Rule
from aibill.domain.prices import (
    Charge,
    CustomPrice,
    ExchangeRate,
    Markup,
    ModelPrice,
    check_provider_cost,
)
from aibill.domain.reports import PERIOD_KEYS, GroupBy, UsageRow, UserBalance, write_lines
from aibill.domain.usage import Usage
from aibill.domain.version import __version__

__all__ = [
    "AccessClient",
    "Client",
    "HeldCall",
    "KeysClient",
    "PricingClient",
    "ServiceUnavailable",
]

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
    Other errors (every 4xx) are never retried: a 429 after failed
    authentications raises ``TooManyFailedAttempts`` at once, its
    ``retry_after_s`` saying when the service will listen again. When the retries run out the
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
        self.pricing = PricingClient(self)
        """Exchange rates, markups, custom prices and model prices: ``billing.pricing``."""
        self.access = AccessClient(self)
        """The provider registry, system admins, roles and rules: ``billing.access``."""
        self.keys = KeysClient(self)
        """API keys: ``billing.keys``."""

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
        return self._get(Mandate, f"/v1/mandates/{_seg(mandate)}")

    def mandates(self) -> list[Mandate]:
        """The mandates this key may see, by name: every one for a system admin,
        its own for a mandate's key."""
        return self._list(Mandate, "/v1/mandates")

    def set_billing_model(self, mandate: str, billing_model: str | BillingModel) -> Mandate:
        """Change how ``mandate`` is billed (admins); the same model again changes
        nothing. Refused with ``HoldsInFlight`` while any hold is pending."""
        body = {"billing_model": str(billing_model)}
        path = f"/v1/mandates/{_seg(mandate)}/billing-model"
        return _parse(Mandate, self._call("PUT", path, body))

    def users(self) -> list[str]:
        """Every registered user identity, by name (system admins)."""
        return _strings(self._call("GET", "/v1/users"))

    def members(self, mandate: str) -> list[Member]:
        """The members of ``mandate`` with their roles, by user name."""
        return self._list(Member, f"/v1/mandates/{_seg(mandate)}/members")

    def add_user(self, user: str) -> str:
        """Register a user identity (idempotent); returns its id."""
        answer = self._call("POST", "/v1/users", body={"id": user})
        return str(answer["id"])

    def add_member(self, mandate: str, user: str, *, role: str | None = "member") -> list[str]:
        """Make ``user`` a member of ``mandate`` with ``role`` (``member`` unless
        said otherwise; ``None``: no role yet). Someone already a member is given
        the role if they lack it. Returns the member's roles afterwards."""
        answer = self._call(
            "POST", f"/v1/mandates/{_seg(mandate)}/members", body={"user": user, "role": role}
        )
        return [str(r) for r in answer["roles"]]

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
        estimate: Decimal | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        feature_instance: str | None = None,
    ) -> CheckResult:
        """May a call costing up to ``estimate`` start now? Changes nothing.

        Instead of ``estimate=``, give ``provider``, ``model``, ``input_tokens``
        and ``max_output_tokens``: the service prices the call as :meth:`hold`
        would, and the answer's ``estimate`` is that price. The answer has the
        reason (``ok``, ``provider_not_allowed``, ``permission_denied``,
        ``limit_exceeded``, ``insufficient_balance``), the balance and the
        account; :meth:`hold` raises the same refusals."""
        body = _body(
            estimate=None if estimate is None else _money(estimate, "estimate"),
            user=user,
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
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
        at: datetime | None = None,
    ) -> Charge:
        """The upper bound of a call's cost in the mandate's currency, priced at
        ``at`` (default: the service's now), converted and marked up. Changes nothing."""
        body = _body(
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            at=at,
        )
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
        return HeldCall.of(self, self._write(Hold, path, body, idempotency_key))

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
        provider_cost: Decimal | None = None,
        provider_currency: str | None = None,
        feature_code: str | None = None,
        feature_instance: str | None = None,
        workflow_id: str | None = None,
        idempotency_key: str | None = None,
        already_happened: bool = False,
        description: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
    ) -> Entry:
        """Post a debit without a hold: ``amount=``, ``provider``, ``model``
        and ``usage`` priced now, or ``provider_cost=`` (in
        ``provider_currency``, USD unless given) converted and marked up.

        In a prepaid mandate it is refused with ``InsufficientBalance`` when the
        account cannot pay, and anywhere with ``LimitExceeded``, unless
        ``already_happened``: usage that happened is always recorded, marked."""
        if sum(v is not None for v in (amount, usage, provider_cost)) != 1:
            raise e.InvalidRequest(
                "Give one of amount=, usage= (with provider and model) or provider_cost=.",
                field="amount",
            )
        cost = None if provider_cost is None else check_provider_cost(provider_cost)
        body = _body(
            amount=None if amount is None else _money(amount, "amount"),
            usage=None if usage is None else _usage(usage),
            provider_cost=None if cost is None else format(cost.normalize(), "f"),
            provider_currency=provider_currency,
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
        path = f"/v1/mandates/{_seg(mandate)}/balance"
        return self._get(Balance, path, params={"user": user})

    def accounts(self, mandate: str) -> list[Balance]:
        """Every account of ``mandate`` (the pool and the users' wallets), by name."""
        return self._list(Balance, f"/v1/mandates/{_seg(mandate)}/accounts")

    def get_hold(self, hold_id: str) -> Hold:
        return self._get(Hold, f"/v1/holds/{_seg(hold_id)}")

    def open_holds(self, mandate: str, *, limit: int = 100) -> list[Hold]:
        """The holds of ``mandate`` still in flight, newest first; at most ``limit``."""
        path = f"/v1/mandates/{_seg(mandate)}/holds"
        return self._list(Hold, path, params={"limit": limit})

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
            "kind": kind,
            "reason": reason,
            "hold_id": hold_id,
            "provider": provider,
            "model": model,
            "feature_code": feature_code,
            "feature_instance": feature_instance,
            "workflow_id": workflow_id,
            "since": since,
            "until": until,
        }
        return self._get(Page, f"/v1/mandates/{_seg(mandate)}/entries", params=params)

    def verify(self, mandate: str | None = None) -> list[Drift]:
        """Recompute the accounts of ``mandate`` (None: of every mandate, for a
        system admin) from their entries: an empty list when the ledger is sound."""
        path = "/v1/verify" if mandate is None else f"/v1/mandates/{_seg(mandate)}/verify"
        return self._list(Drift, path)

    # -------------------------------------------------------------- settings

    def allowed_providers(self, mandate: str, user: str) -> list[str]:
        """The enabled providers ``user`` may use in ``mandate``, sorted."""
        return _strings(self._call("GET", _user_path(mandate, user, "providers")))

    def is_provider_allowed(self, mandate: str, user: str, provider: str) -> bool:
        """May ``user`` use ``provider`` in ``mandate`` now? False on any doubt
        (also when this key may not read the mandate), as in the library."""
        path = _user_path(mandate, user, "providers", provider)
        try:
            return bool(self._field(path, "allowed"))
        except e.PermissionDenied:
            return False

    def set_overdraft_limit(
        self, mandate: str, amount: Decimal, *, user: str | None = None
    ) -> Balance:
        """How far the account may go below zero for holds and usage (admins)."""
        body = _body(amount=_money(amount, "amount"), user=user)
        path = f"/v1/mandates/{_seg(mandate)}/overdraft-limit"
        return _parse(Balance, self._call("PUT", path, body))

    def set_spending_limit(
        self,
        mandate: str,
        amount: Decimal | None,
        *,
        user: str | None = None,
        feature_instance: str | None = None,
        period: str = "month",
    ) -> SpendingLimit | None:
        """At most ``amount`` per ``period`` for ``user`` or ``feature_instance``
        (admins); ``amount`` None removes the limit and returns None."""
        body = {
            **_body(user=user, feature_instance=feature_instance, period=period),
            "amount": None if amount is None else _money(amount, "amount"),
        }
        answer = self._call("PUT", f"/v1/mandates/{_seg(mandate)}/limits", body)
        return None if answer is None else _parse(SpendingLimit, answer)

    def spending_limits(self, mandate: str) -> list[SpendingLimit]:
        return self._list(SpendingLimit, f"/v1/mandates/{_seg(mandate)}/limits")

    # --------------------------------------------------------------- reports

    def audit_log(
        self, mandate: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> AuditPage:
        """What admins changed in ``mandate`` (None: on the platform), newest
        first; pass the page's ``cursor`` back for the next page."""
        path = "/v1/audit" if mandate is None else f"/v1/mandates/{_seg(mandate)}/audit"
        return self._get(AuditPage, path, params={"limit": limit, "cursor": cursor})

    def balances_for_user(self, user: str) -> list[UserBalance]:
        """One row per mandate ``user`` belongs to (that this key may see), sorted."""
        return self._list(UserBalance, f"/v1/users/{_seg(user)}/balances")

    def usage_report(
        self,
        mandate: str,
        *,
        group_by: GroupBy = ("day",),
        since: datetime | None = None,
        until: datetime | None = None,
        user: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        feature_code: str | None = None,
        feature_instance: str | None = None,
        workflow_id: str | None = None,
    ) -> list[UsageRow]:
        """Calls, tokens, provider cost and billed amount per group (``day``,
        ``provider``, ``user``, ...), with the library's filters."""
        params = {
            "group_by": list(group_by),
            "since": since,
            "until": until,
            "user": user,
            "provider": provider,
            "model": model,
            "feature_code": feature_code,
            "feature_instance": feature_instance,
            "workflow_id": workflow_id,
        }
        return self._list(UsageRow, f"/v1/mandates/{_seg(mandate)}/usage-report", params=params)

    def iter_history_csv(
        self,
        mandate: str,
        *,
        page_size: int = 1000,
        spreadsheet_safe: bool = True,
        **filters: Unpack[HistoryFilters],
    ) -> Iterator[str]:
        """The history as CSV lines (each ending ``\\r\\n``), header first, newest
        first, with ``history()``'s filters. The request is sent (and a refusal
        raised) before this returns; the lines are read from the service as they
        are iterated, never held whole."""
        params = {"page_size": page_size, "spreadsheet_safe": spreadsheet_safe, **filters}
        return self._csv(f"/v1/mandates/{_seg(mandate)}/entries.csv", params)

    def export_history_csv(
        self,
        mandate: str,
        out: TextIO,
        *,
        page_size: int = 1000,
        spreadsheet_safe: bool = True,
        **filters: Unpack[HistoryFilters],
    ) -> int:
        """Write the history as CSV to ``out``; returns the number of entries written."""
        lines = self.iter_history_csv(
            mandate, page_size=page_size, spreadsheet_safe=spreadsheet_safe, **filters
        )
        return write_lines(lines, out)

    def iter_usage_report_csv(
        self,
        mandate: str,
        *,
        group_by: GroupBy = ("day",),
        spreadsheet_safe: bool = True,
        **filters: Unpack[UsageFilters],
    ) -> Iterator[str]:
        """``usage_report()`` as CSV lines, header first, read as they are iterated."""
        params = {"group_by": list(group_by), "spreadsheet_safe": spreadsheet_safe, **filters}
        return self._csv(f"/v1/mandates/{_seg(mandate)}/usage-report.csv", params)

    def export_usage_report_csv(
        self,
        mandate: str,
        out: TextIO,
        *,
        group_by: GroupBy = ("day",),
        spreadsheet_safe: bool = True,
        **filters: Unpack[UsageFilters],
    ) -> int:
        """Write ``usage_report()`` as CSV to ``out``; returns the number of groups written."""
        lines = self.iter_usage_report_csv(
            mandate, group_by=group_by, spreadsheet_safe=spreadsheet_safe, **filters
        )
        return write_lines(lines, out)

    # ------------------------------------------------------------ transport

    def _get(self, cls: type[T], path: str, *, params: Mapping[str, Any] | None = None) -> T:
        return _parse(cls, self._call("GET", path, params=params))

    def _list(self, cls: type[T], path: str, *, params: Mapping[str, Any] | None = None) -> list[T]:
        answer = self._call("GET", path, params=params)
        if not isinstance(answer, list):
            raise _malformed(f"a list of {cls.__name__}", answer)
        return [_parse(cls, item) for item in answer]

    def _field(self, path: str, name: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """One field of a JSON object the service answers a GET with."""
        answer = self._call("GET", path, params=params)
        if not isinstance(answer, dict) or name not in answer:
            raise _malformed(f"an object with {name!r}", answer)
        return answer[name]

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
        content: str | None = None,
    ) -> Any:
        """Send one request, retrying what may be retried; the decoded JSON answer
        (None for an answer without a body, such as 204)."""
        response = self._send(method, path, body, params=params, key=key, content=content)
        if response.status_code == 204:
            return None
        try:
            decoded = _json(response.content)
        except ValueError:
            raise _malformed("a JSON body", response.text[:200]) from None
        if isinstance(decoded, dict) and response.headers.get("Idempotent-Replayed") == "true":
            decoded["replayed"] = True
        return decoded

    def _csv(self, path: str, params: Mapping[str, Any]) -> Iterator[str]:
        """The CSV records of a streamed answer, read as they are iterated."""
        response = self._send("GET", path, params=params, stream=True, accept="text/csv")
        return _records(response, path)

    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
        content: str | None = None,
        stream: bool = False,
        accept: str = "application/json",
    ) -> httpx.Response:
        """Send one request, retrying what may be retried: the successful response
        (its body not read yet when ``stream``), or the error it describes raised."""
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": f"{accept}, application/problem+json",
            "User-Agent": f"aibill-python/{_version()}",
        }
        if key is not None:
            headers["Idempotency-Key"] = key
        if content is not None:
            headers["Content-Type"] = "text/csv; charset=utf-8"
        query = _query(params or {})
        url = self.base_url + path
        attempts = self._retries + 1
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            try:
                request = self._http.build_request(
                    method,
                    url,
                    json=None if body is None else dict(body),
                    content=None if content is None else content.encode("utf-8"),
                    params=query or None,
                    headers=headers,
                    timeout=self._timeout,
                )
                response = self._http.send(request, stream=stream)
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
            if response.is_success:
                return response
            response.read()
            response.close()
            if response.status_code in RETRY_STATUSES and not last:
                log.info("retrying %s %s after HTTP %d", method, path, response.status_code)
                self._pause(attempt)
                continue
            raise self._failure(response, method, path, key)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(
        self, response: httpx.Response, method: str, path: str, key: str | None
    ) -> e.AibillError:
        """The error an unsuccessful answer stands for."""
        status = response.status_code
        try:
            decoded = _json(response.content) if response.content else None
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("code"), str):
            return _error(status, decoded)
        if status in RETRY_STATUSES:
            return ServiceUnavailable(
                f"The aibill service answered HTTP {status} to {method} {path}"
                f" {self._retries + 1} time(s).",
                status=status,
                method=method,
                path=path,
                idempotency_key=key,
            )
        return e.AibillError(
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


# ------------------------------------------------------- the settings services


class _Part:
    """A part of the client with the surface of one of the library's services."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client.base_url!r})"


class PricingClient(_Part):
    """``client.pricing``: the surface of ``billing.pricing`` over HTTP."""

    def set_exchange_rate(
        self,
        base: str,
        quote: str,
        rate: Decimal | int | str,
        *,
        valid_from: datetime | None = None,
        source: str | None = None,
    ) -> ExchangeRate:
        """Set the rate from ``base`` to ``quote`` from ``valid_from`` (default:
        now) on (system admins)."""
        body = _body(
            base=base,
            quote=quote,
            rate=_decimal_text(rate, "rate"),
            valid_from=valid_from,
            source=source,
        )
        return _parse(ExchangeRate, self._client._call("POST", "/v1/exchange-rates", body))

    def import_exchange_rates(self, source: TextIO | Iterable[str]) -> int:
        """Import rates from CSV (a text file or an iterable of lines with the
        header ``base,quote,rate,valid_from``), all or nothing; returns how many
        were new. The file is sent whole, so it must fit in one request (64 KiB)."""
        if isinstance(source, str):
            raise e.InvalidRequest(
                "import_exchange_rates reads a file or an iterable of lines, not one string "
                "(wrap it: io.StringIO(text)).",
                field="source",
            )
        text = "".join(line if line.endswith("\n") else f"{line}\n" for line in source)
        answer = self._client._call("POST", "/v1/exchange-rates/import", content=text)
        return int(answer["imported"])

    def exchange_rates(
        self, base: str | None = None, quote: str | None = None
    ) -> list[ExchangeRate]:
        params = {"base": base, "quote": quote}
        return self._client._list(ExchangeRate, "/v1/exchange-rates", params=params)

    def exchange_rate(self, base: str, quote: str, at: datetime) -> Decimal:
        """The rate from ``base`` to ``quote`` in force at ``at``."""
        path = f"/v1/exchange-rates/{_seg(base)}/{_seg(quote)}"
        return _decimal(self._client._field(path, "rate", params={"at": at}), "rate")

    def set_markup(
        self,
        percent: Decimal | int | str,
        *,
        mandate: str | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> Markup:
        """Set a markup in percent for the platform, a mandate, a provider or a model."""
        body = _body(
            percent=_decimal_text(percent, "percent"),
            mandate=mandate,
            provider=provider,
            model=model,
        )
        return _parse(Markup, self._client._call("POST", "/v1/markups", body))

    def clear_markup(
        self, *, mandate: str | None = None, provider: str | None = None, model: str | None = None
    ) -> bool:
        """Remove the markup of exactly this scope; returns whether there was one."""
        params = {"mandate": mandate, "provider": provider, "model": model}
        answer = self._client._call("DELETE", "/v1/markups", params=params)
        return bool(answer["removed"])

    def markups(self, mandate: str | None = None) -> list[Markup]:
        return self._client._list(Markup, "/v1/markups", params={"mandate": mandate})

    def markup_for(self, mandate: str | None, provider: str | None, model: str | None) -> Decimal:
        """The markup in percent that applies to a call: the most specific set, else 50."""
        params = {"mandate": mandate, "provider": provider, "model": model}
        percent = self._client._field("/v1/markups/effective", "percent", params=params)
        return _decimal(percent, "percent")

    def set_custom_price(
        self,
        provider: str,
        model: str,
        *,
        input_mtok: Decimal | int | str,
        output_mtok: Decimal | int | str,
        cache_read_mtok: Decimal | int | str | None = None,
        cache_write_mtok: Decimal | int | str | None = None,
        per_request: Decimal | int | str | None = None,
        currency: str = "USD",
        valid_from: datetime | None = None,
        mandate: str | None = None,
        output_limit: int | None = None,
    ) -> CustomPrice:
        """Price a model (one the catalog lacks, or instead of the catalog) from
        ``valid_from`` (default: now) on, platform-wide or for one mandate."""
        prices = {
            "input_mtok": input_mtok,
            "output_mtok": output_mtok,
            "cache_read_mtok": cache_read_mtok,
            "cache_write_mtok": cache_write_mtok,
            "per_request": per_request,
        }
        body = _body(
            provider=provider,
            model=model,
            **{k: None if v is None else _decimal_text(v, k) for k, v in prices.items()},
            currency=currency,
            valid_from=valid_from,
            mandate=mandate,
            output_limit=output_limit,
        )
        return _parse(CustomPrice, self._client._call("POST", "/v1/prices", body))

    def custom_prices(self, mandate: str | None = None) -> list[CustomPrice]:
        return self._client._list(CustomPrice, "/v1/prices", params={"mandate": mandate})

    def model_price(
        self,
        provider: str,
        model: str,
        *,
        mandate: str | None = None,
        at: datetime | None = None,
    ) -> ModelPrice:
        """The prices in force for one model at ``at`` (default: now): the
        mandate's custom price, else the platform's, else the catalog's."""
        path = f"/v1/prices/{_seg(provider)}/{quote(model, safe=':@/')}"
        return self._client._get(ModelPrice, path, params={"mandate": mandate, "at": at})


class AccessClient(_Part):
    """``client.access``: the surface of ``billing.access`` over HTTP."""

    @staticmethod
    def builtin_rules() -> tuple[Rule, ...]:
        """The default rules of the built-in roles (those of this library's version)."""
        return BUILTIN_RULES

    def register_provider(
        self, provider: str, *, display_name: str | None = None, enabled: bool = True
    ) -> ProviderInfo:
        """Add a provider to the platform's registry, or update it (system admins)."""
        body = _body(provider=provider, display_name=display_name, enabled=enabled)
        return _parse(ProviderInfo, self._client._call("POST", "/v1/providers", body))

    def set_provider_enabled(self, provider: str, enabled: bool) -> ProviderInfo:
        """Enable or disable a provider; disabling stops new holds at once."""
        path = f"/v1/providers/{_seg(provider)}"
        return _parse(ProviderInfo, self._client._call("PATCH", path, {"enabled": enabled}))

    def providers(self) -> list[ProviderInfo]:
        return self._client._list(ProviderInfo, "/v1/providers")

    def add_sysadmin(self, user: str) -> None:
        self._client._call("POST", "/v1/sysadmins", {"user": user})

    def remove_sysadmin(self, user: str) -> None:
        self._client._call("DELETE", f"/v1/sysadmins/{_seg(user)}")

    def is_sysadmin(self, user: str) -> bool:
        return bool(self._client._field(f"/v1/sysadmins/{_seg(user)}", "sysadmin"))

    def grant_role(self, mandate: str, user: str, role: str) -> list[str]:
        """Give ``user`` ``role`` in ``mandate``; returns their roles."""
        return _strings(self._client._call("PUT", _user_path(mandate, user, "roles", role)))

    def revoke_role(self, mandate: str, user: str, role: str) -> list[str]:
        """Take ``role`` from ``user`` in ``mandate``; returns their roles."""
        return _strings(self._client._call("DELETE", _user_path(mandate, user, "roles", role)))

    def roles_of(self, mandate: str, user: str) -> list[str]:
        return _strings(self._client._call("GET", _user_path(mandate, user, "roles")))

    def define_role(self, mandate: str, role: str, description: str | None = None) -> RoleInfo:
        """Define a custom role in ``mandate``; give it rules with :meth:`add_rule`."""
        body = _body(role=role, description=description)
        path = f"/v1/mandates/{_seg(mandate)}/roles"
        return _parse(RoleInfo, self._client._call("POST", path, body))

    def custom_roles(self, mandate: str) -> list[RoleInfo]:
        return self._client._list(RoleInfo, f"/v1/mandates/{_seg(mandate)}/roles")

    def add_rule(
        self, mandate: str, role: str, context: str, item: str, permissions: Iterable[str]
    ) -> RuleInfo:
        """Grant ``permissions`` on ``item`` (in ``context``) to ``role`` in ``mandate``."""
        body = {
            "role": role,
            "context": str(context),
            "item": item,
            "permissions": [str(p) for p in permissions],
        }
        path = f"/v1/mandates/{_seg(mandate)}/rules"
        return _parse(RuleInfo, self._client._call("POST", path, body))

    def remove_rule(self, mandate: str, rule_id: str) -> None:
        self._client._call("DELETE", f"/v1/mandates/{_seg(mandate)}/rules/{_seg(rule_id)}")

    def rules(self, mandate: str) -> list[RuleInfo]:
        return self._client._list(RuleInfo, f"/v1/mandates/{_seg(mandate)}/rules")

    def allowed_providers(self, mandate: str, user: str) -> list[str]:
        return self._client.allowed_providers(mandate, user)

    def is_provider_allowed(self, mandate: str, user: str, provider: str) -> bool:
        return self._client.is_provider_allowed(mandate, user, provider)


class KeysClient(_Part):
    """``client.keys``: the surface of ``billing.keys`` over HTTP. ``mandate``
    None is the platform: a system admin's keys."""

    def create_key(
        self,
        *,
        user: str,
        mandate: str | None,
        scopes: Iterable[str] = ("billing:use",),
        expires_at: datetime | None = None,
        name: str | None = None,
    ) -> CreatedKey:
        """A new key for ``user``; its ``secret`` is in this answer only."""
        body = _body(user=user, scopes=[str(x) for x in scopes], expires_at=expires_at, name=name)
        return _parse(CreatedKey, self._client._call("POST", _keys_path(mandate), body))

    def list_keys(self, mandate: str | None) -> list[ApiKey]:
        return self._client._list(ApiKey, _keys_path(mandate))

    def get_key(self, key_id: str, *, mandate: str | None) -> ApiKey:
        return self._client._get(ApiKey, _keys_path(mandate, key_id))

    def revoke_key(self, key_id: str, *, mandate: str | None) -> ApiKey:
        """Revoke a key at once; revoking it again returns it as it is."""
        path = _keys_path(mandate, key_id, "revoke")
        return _parse(ApiKey, self._client._call("POST", path))


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


def _decimal_text(value: object, field: str) -> str:
    """A rate, percent or price as the exact decimal string the service takes;
    floats are refused as the library refuses them."""
    return format(to_decimal(value, field=field), "f")


def _body(**values: Any) -> dict[str, Any]:
    """A JSON body: the values given (not None), times as ISO 8601."""
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in values.items()
        if v is not None
    }


def _query(params: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters: the values given (not None), times as ISO 8601, enums
    by value, booleans as ``true``/``false``, sequences repeated."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Enum):
            return str(value.value)
        return str(value)

    return {
        name: [text(v) for v in value] if isinstance(value, list | tuple) else text(value)
        for name, value in params.items()
        if value is not None
    }


def _user_path(mandate: str, user: str, *rest: str) -> str:
    tail = "".join(f"/{_seg(part)}" for part in rest)
    return f"/v1/mandates/{_seg(mandate)}/users/{_seg(user)}{tail}"


def _keys_path(mandate: str | None, *rest: str) -> str:
    head = "/v1/keys" if mandate is None else f"/v1/mandates/{_seg(mandate)}/keys"
    return head + "".join(f"/{_seg(part)}" for part in rest)


def _strings(answer: Any) -> list[str]:
    if not isinstance(answer, list) or not all(isinstance(x, str) for x in answer):
        raise _malformed("a list of strings", answer)
    return answer


def _records(response: httpx.Response, path: str) -> Iterator[str]:
    """The CSV records of a streamed answer, each with its line ending, as they
    arrive: a record ends at a line ending outside quotes (a quoted cell may
    hold line breaks of its own)."""
    record = ""
    quotes = 0
    try:
        for chunk in response.iter_text():
            start = 0
            while start < len(chunk):
                end = chunk.find("\n", start) + 1 or len(chunk)
                piece = chunk[start:end]
                record += piece
                quotes += piece.count('"')
                start = end
                if piece.endswith("\n") and quotes % 2 == 0:
                    yield record
                    record, quotes = "", 0
    except _RETRY_ERRORS as exc:
        raise ServiceUnavailable(
            f"The CSV from {path} broke off: {exc}", method="GET", path=path
        ) from exc
    finally:
        response.close()
    if record:
        yield record


def _json(content: bytes) -> Any:
    """JSON with every fractional number as ``Decimal``; NaN and infinities refused."""
    return json.loads(content, parse_float=Decimal, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number aibill sends")


def _version() -> str:
    return __version__


def _malformed(expected: str, got: object) -> e.AibillError:
    return e.AibillError(f"The aibill service answered with {got!r}, not {expected}.")


_HINTS: dict[type, dict[str, Any]] = {}


def _api_key_json(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "key_id": data.get("id")}


def _created_key_json(data: dict[str, Any]) -> dict[str, Any]:
    return {"secret": data.get("secret"), "info": data.get("key")}


def _usage_row_json(data: dict[str, Any]) -> dict[str, Any]:
    # A group's period (day, week, month) is a datetime; its other keys are tags.
    keys = data.get("keys")
    if not isinstance(keys, dict):
        return data
    periods = {
        name: _datetime(value, f"UsageRow.keys[{name!r}]")
        for name, value in keys.items()
        if name in PERIOD_KEYS and value is not None
    }
    return {**data, "keys": {**keys, **periods}}


_WIRE: Final[dict[type, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    ApiKey: _api_key_json,
    CreatedKey: _created_key_json,
    UsageRow: _usage_row_json,
}
"""Where the service's JSON of a type differs from its fields (a key's ``id``)."""


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
    wire = _WIRE.get(cls)
    if wire is not None:
        data = wire(data)
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
    if origin in (list, tuple, frozenset, set):
        if not isinstance(raw, list):
            raise _malformed(f"a list for {where}", raw)
        item = (get_args(tp) or (Any,))[0]
        return origin(_value(item, x, where) for x in raw)
    if origin is dict:
        if not isinstance(raw, dict):
            raise _malformed(f"an object for {where}", raw)
        _, item = get_args(tp) or (str, Any)
        return {k: _value(item, v, f"{where}[{k!r}]") for k, v in raw.items()}
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
    if isinstance(error, e.TooManyFailedAttempts):
        wait = details.get("retry_after_s")
        error.retry_after_s = wait if isinstance(wait, int) and wait > 0 else 1
    return error
