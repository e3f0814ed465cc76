"""``aibill.Client``: the aibill service over HTTP, with the methods of
:class:`aibill.Billing` under the same names and arguments (see the package's doc)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, TextIO, Unpack

import httpx

from aibill.client.errors import error_from_problem
from aibill.client.parts import AccessClient, KeysClient, PricingClient
from aibill.client.transport import Transport
from aibill.client.wire import (
    json_body,
    malformed,
    money,
    parse,
    record_fields,
    seg,
    strings,
    usage_body,
    usage_fields,
)
from aibill.domain import errors as e
from aibill.domain.audit import AuditPage
from aibill.domain.batch import MAX_BATCH_RECORDS, RecordOutcome, UsageRecord
from aibill.domain.held import HeldCall
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
from aibill.domain.prices import Charge
from aibill.domain.reports import GroupBy, UsageRow, UserBalance, write_lines
from aibill.domain.usage import Usage

DEFAULT_HOLD_TTL_S: Final = 900


class Client(Transport):
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
        super().__init__(
            base_url, api_key, timeout=timeout, retries=retries, http=http, backoff_s=backoff_s
        )
        self.pricing = PricingClient(self)
        """Exchange rates, markups, custom prices and model prices: ``billing.pricing``."""
        self.access = AccessClient(self)
        """The provider registry, system admins, roles and rules: ``billing.access``."""
        self.keys = KeysClient(self)
        """API keys: ``billing.keys``."""

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

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
        return parse(Mandate, self._call("POST", "/v1/mandates", body=body))

    def get_mandate(self, mandate: str) -> Mandate:
        return self._get(Mandate, f"/v1/mandates/{seg(mandate)}")

    def mandates(self) -> list[Mandate]:
        """The mandates this key may see, by name: every one for a system admin,
        its own for a mandate's key."""
        return self._list(Mandate, "/v1/mandates")

    def set_billing_model(self, mandate: str, billing_model: str | BillingModel) -> Mandate:
        """Change how ``mandate`` is billed (admins); the same model again changes
        nothing. Refused with ``HoldsInFlight`` while any hold is pending."""
        body = {"billing_model": str(billing_model)}
        path = f"/v1/mandates/{seg(mandate)}/billing-model"
        return parse(Mandate, self._call("PUT", path, body))

    def users(self) -> list[str]:
        """Every registered user identity, by name (system admins)."""
        return strings(self._call("GET", "/v1/users"))

    def members(self, mandate: str) -> list[Member]:
        """The members of ``mandate`` with their roles, by user name."""
        return self._list(Member, f"/v1/mandates/{seg(mandate)}/members")

    def add_user(self, user: str) -> str:
        """Register a user identity (idempotent); returns its id."""
        answer = self._call("POST", "/v1/users", body={"id": user})
        return str(answer["id"])

    def add_member(self, mandate: str, user: str, *, role: str | None = "member") -> list[str]:
        """Make ``user`` a member of ``mandate`` with ``role`` (``member`` unless
        said otherwise; ``None``: no role yet). Someone already a member is given
        the role if they lack it. Returns the member's roles afterwards."""
        answer = self._call(
            "POST", f"/v1/mandates/{seg(mandate)}/members", body={"user": user, "role": role}
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
        body = json_body(
            amount=money(amount, "amount"),
            user=user,
            reason=reason,
            description=description,
            corrects=corrects,
        )
        path = f"/v1/mandates/{seg(mandate)}/credits"
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
        body = json_body(
            estimate=None if estimate is None else money(estimate, "estimate"),
            user=user,
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            feature_instance=feature_instance,
        )
        return parse(CheckResult, self._call("POST", f"/v1/mandates/{seg(mandate)}/check", body))

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
        body = json_body(
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            at=at,
        )
        return parse(Charge, self._call("POST", f"/v1/mandates/{seg(mandate)}/estimate", body))

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
        ttl_s: int = DEFAULT_HOLD_TTL_S,
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
        body = json_body(
            amount=None if amount is None else money(amount, "amount"),
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
        path = f"/v1/mandates/{seg(mandate)}/holds"
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
        body = json_body(
            amount=None if amount is None else money(amount, "amount"),
            usage=None if usage is None else usage_fields(usage),
            description=description,
        )
        return self._write(Entry, f"/v1/holds/{seg(hold_id)}/capture", body, idempotency_key)

    def release(self, hold_id: str, *, idempotency_key: str | None = None) -> Hold:
        """Free a hold without a debit (the call failed or never started).

        Releasing a released or expired hold returns it; releasing a captured
        hold raises ``HoldAlreadyCaptured``."""
        return self._write(Hold, f"/v1/holds/{seg(hold_id)}/release", None, idempotency_key)

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
        record = UsageRecord(
            mandate,
            idempotency_key or "",  # sent as the header, not in the body
            amount=amount,
            user=user,
            provider=provider,
            model=model,
            usage=usage,
            provider_cost=provider_cost,
            provider_currency=provider_currency,
            feature_code=feature_code,
            feature_instance=feature_instance,
            workflow_id=workflow_id,
            already_happened=already_happened,
            description=description,
            metadata=metadata,
        )
        body = usage_body(record)
        path = f"/v1/mandates/{seg(mandate)}/usage"
        return self._write(Entry, path, body, idempotency_key)

    def record_usage_batch(self, records: Sequence[UsageRecord]) -> list[RecordOutcome]:
        """Post up to 1,000 usage records in one request (``POST /v1/usage/batch``):
        one outcome per record, in order, its entry or its error. Each record
        has its own idempotency key, so the whole request is retried safely."""
        if not isinstance(records, Sequence) or not 1 <= len(records) <= MAX_BATCH_RECORDS:
            raise e.InvalidRequest(
                f"A batch has from 1 to {MAX_BATCH_RECORDS} records.", field="records"
            )
        body = {"records": [record_fields(r) for r in records]}
        answer = self._call("POST", "/v1/usage/batch", body)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(records):
            raise malformed(f"{len(records)} results", answer)
        return [record_outcome(result) for result in results]

    # -------------------------------------------------------------- reading

    def balance(self, mandate: str, *, user: str | None = None) -> Balance:
        """The account the billing model names for ``user``."""
        path = f"/v1/mandates/{seg(mandate)}/balance"
        return self._get(Balance, path, params={"user": user})

    def accounts(self, mandate: str) -> list[Balance]:
        """Every account of ``mandate`` (the pool and the users' wallets), by name."""
        return self._list(Balance, f"/v1/mandates/{seg(mandate)}/accounts")

    def get_hold(self, hold_id: str) -> Hold:
        return self._get(Hold, f"/v1/holds/{seg(hold_id)}")

    def open_holds(self, mandate: str, *, limit: int = 100) -> list[Hold]:
        """The holds of ``mandate`` still in flight, newest first; at most ``limit``."""
        path = f"/v1/mandates/{seg(mandate)}/holds"
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
        return self._get(Page, f"/v1/mandates/{seg(mandate)}/entries", params=params)

    def verify(self, mandate: str | None = None) -> list[Drift]:
        """Recompute the accounts of ``mandate`` (None: of every mandate, for a
        system admin) from their entries: an empty list when the ledger is sound."""
        path = "/v1/verify" if mandate is None else f"/v1/mandates/{seg(mandate)}/verify"
        return self._list(Drift, path)

    # -------------------------------------------------------------- settings

    def allowed_providers(self, mandate: str, user: str) -> list[str]:
        """The enabled providers ``user`` may use in ``mandate``, sorted."""
        return self.access.allowed_providers(mandate, user)

    def is_provider_allowed(self, mandate: str, user: str, provider: str) -> bool:
        """May ``user`` use ``provider`` in ``mandate`` now? False on any doubt
        (also when this key may not read the mandate), as in the library."""
        return self.access.is_provider_allowed(mandate, user, provider)

    def set_overdraft_limit(
        self, mandate: str, amount: Decimal, *, user: str | None = None
    ) -> Balance:
        """How far the account may go below zero for holds and usage (admins)."""
        body = json_body(amount=money(amount, "amount"), user=user)
        path = f"/v1/mandates/{seg(mandate)}/overdraft-limit"
        return parse(Balance, self._call("PUT", path, body))

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
            **json_body(user=user, feature_instance=feature_instance, period=period),
            "amount": None if amount is None else money(amount, "amount"),
        }
        answer = self._call("PUT", f"/v1/mandates/{seg(mandate)}/limits", body)
        return None if answer is None else parse(SpendingLimit, answer)

    def spending_limits(self, mandate: str) -> list[SpendingLimit]:
        return self._list(SpendingLimit, f"/v1/mandates/{seg(mandate)}/limits")

    # --------------------------------------------------------------- reports

    def audit_log(
        self, mandate: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> AuditPage:
        """What admins changed in ``mandate`` (None: on the platform), newest
        first; pass the page's ``cursor`` back for the next page."""
        path = "/v1/audit" if mandate is None else f"/v1/mandates/{seg(mandate)}/audit"
        return self._get(AuditPage, path, params={"limit": limit, "cursor": cursor})

    def balances_for_user(self, user: str) -> list[UserBalance]:
        """One row per mandate ``user`` belongs to (that this key may see), sorted."""
        return self._list(UserBalance, f"/v1/users/{seg(user)}/balances")

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
        return self._list(UsageRow, f"/v1/mandates/{seg(mandate)}/usage-report", params=params)

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
        return self._csv(f"/v1/mandates/{seg(mandate)}/entries.csv", params)

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
        return self._csv(f"/v1/mandates/{seg(mandate)}/usage-report.csv", params)

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


def record_outcome(result: object) -> RecordOutcome:
    """One result of a batch, as the library returns it: the entry, or
    aibill's own exception for the error's code."""
    if isinstance(result, dict) and isinstance(result.get("entry"), dict):
        return RecordOutcome(entry=parse(Entry, result["entry"]))
    error = result.get("error") if isinstance(result, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        raise malformed("an entry or an error", result)
    problem = {
        "code": error["code"],
        "detail": error.get("message"),
        "details": error.get("details"),
    }
    return RecordOutcome(error=error_from_problem(200, problem))
