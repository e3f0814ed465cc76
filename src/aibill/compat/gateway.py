"""The seed's billing interface, kept working unchanged on top of aibill.

The original gateway called one service class::

    service = getService(currentUser, mandateId, featureInstanceId, featureCode)
    if not service.hasBalance(estimate):
        raise InsufficientBalanceException(service.getCurrentBalance(), estimate)
    ...  # the AI call
    service.recordUsage(base_price, workflowId=wf, aicoreProvider="openai")

This module offers the same names, arguments and return shapes, and does the
work with :class:`aibill.Billing`. ``recordUsage(base)`` posts what the seed
posted: the provider's base price (USD unless :func:`configure` says
otherwise), converted to the mandate's currency at the rate in force, marked
up, rounded once; ``calculatePriceWithMarkup(base)`` returns that amount.

It is the one boundary where the seed's plain numbers meet the ledger (see
:func:`to_decimal`): on the way in an ``int`` or ``float`` becomes a
``Decimal`` through ``str()``, so ``0.1`` is exactly ``Decimal("0.1")``, a
money amount is rounded once, half-even, to micro-units, and a base price is
read to pico-units; on the way out amounts are ``float`` again, as the seed
returned them, each result also carrying the exact aibill value in ``.exact``.

What it does not keep of the seed, on purpose (see ``docs/compat.md``): float
money in the ledger, a permission check that fails open, a shared mutable
service cache, and a USD price labelled CHF (the base price is converted at
the rate in force; a missing rate is an error, never 1:1).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from enum import StrEnum
from typing import Any, Protocol

from aibill.catalog import CATALOG_CURRENCY
from aibill.domain.errors import InvalidAmount, InvalidRequest
from aibill.domain.model import (
    MAX_DESCRIPTION_LENGTH,
    BillingModel,
    CheckResult,
    Entry,
    EntryKind,
    Tags,
    check_name,
)
from aibill.domain.money import (
    MAX_AMOUNT_MICROS,
    MICROS_PER_UNIT,
    check_currency,
    decimal_from_text,
    from_micros,
    round_to_micros,
)
from aibill.domain.prices import MAX_PICO, PICO_PER_UNIT, Charge
from aibill.domain.text import printable
from aibill.service import lookups
from aibill.service.billing import Billing

log = logging.getLogger("aibill.compat.gateway")

Number = int | float | Decimal
"""What the seed's callers pass as money: plain numbers (a Decimal is welcome too)."""

ENV_DATABASE_URL = "AIBILL_DATABASE_URL"
HISTORY_PAGE = 1000
"""Entries read per history query (``Billing.history`` serves at most 1000)."""
MAX_MANDATES_PER_USER = 1000
"""At most this many mandates are read for one user's balances."""


# ---------------------------------------------------------------- the seed's types


class BillingModelEnum(StrEnum):
    UNLIMITED = "UNLIMITED"
    PREPAY_MANDATE = "PREPAY_MANDATE"
    PREPAY_USER = "PREPAY_USER"


class TransactionTypeEnum(StrEnum):
    CREDIT = "CREDIT"
    DEBIT = "DEBIT"


class ReferenceTypeEnum(StrEnum):
    ADMIN = "ADMIN"
    PAYMENT = "PAYMENT"
    SYSTEM = "SYSTEM"
    WORKFLOW = "WORKFLOW"


_MODELS = {
    BillingModel.UNLIMITED: BillingModelEnum.UNLIMITED,
    BillingModel.PREPAY_MANDATE: BillingModelEnum.PREPAY_MANDATE,
    BillingModel.PREPAY_USER: BillingModelEnum.PREPAY_USER,
}

CREDIT_REASON_OF_REFERENCE = {
    ReferenceTypeEnum.ADMIN: "admin",
    ReferenceTypeEnum.PAYMENT: "payment",
    ReferenceTypeEnum.SYSTEM: "system",
    # A credit the platform makes for a workflow is neither an admin's nor a
    # payment: it is the system acting. aibill has no "workflow" credit reason.
    ReferenceTypeEnum.WORKFLOW: "system",
}
"""``addCredit(referenceType=...)`` -> the aibill credit reason it posts."""

REFERENCE_OF_REASON = {
    "admin": ReferenceTypeEnum.ADMIN,
    "payment": ReferenceTypeEnum.PAYMENT,
    "system": ReferenceTypeEnum.SYSTEM,
    "refund": ReferenceTypeEnum.ADMIN,
    "adjustment": ReferenceTypeEnum.ADMIN,
    "usage": ReferenceTypeEnum.WORKFLOW,
}
"""An entry's aibill reason -> the seed's reference type (unknown reasons: SYSTEM)."""


@dataclass(frozen=True, slots=True)
class BillingCheckResult:
    """May a call costing ``requiredAmount`` start? ``reason`` is None when allowed,
    else a sentence a person understands; ``reasonCode`` is aibill's code."""

    allowed: bool
    currentBalance: float  # noqa: N815
    reason: str | None
    billingModel: BillingModelEnum  # noqa: N815
    reasonCode: str  # noqa: N815
    availableBalance: float  # noqa: N815
    requiredAmount: float  # noqa: N815
    currency: str
    exact: CheckResult


@dataclass(frozen=True, slots=True)
class BillingTransaction:
    """One ledger entry, as the seed showed it. ``exact`` is the aibill entry."""

    id: str
    mandateId: str  # noqa: N815
    accountId: str  # noqa: N815
    userId: str | None  # noqa: N815
    transactionType: TransactionTypeEnum  # noqa: N815
    referenceType: ReferenceTypeEnum  # noqa: N815
    amount: float
    currency: str
    balanceAfter: float  # noqa: N815
    description: str | None
    workflowId: str | None  # noqa: N815
    featureInstanceId: str | None  # noqa: N815
    featureCode: str | None  # noqa: N815
    aicoreProvider: str | None  # noqa: N815
    overBalance: bool  # noqa: N815
    createdAt: datetime  # noqa: N815
    exact: Entry


class BalanceLike(Protocol):
    """One account's balance as aibill reports it (``aibill.Balance``, or a row
    of ``Billing.balances_for_user``)."""

    @property
    def mandate(self) -> str: ...
    @property
    def account(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def balance(self) -> Decimal: ...
    @property
    def available(self) -> Decimal: ...
    @property
    def pending(self) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class BillingBalanceResponse:
    """A user's balance in one mandate, on the account its billing model names."""

    mandateId: str  # noqa: N815
    userId: str  # noqa: N815
    accountId: str  # noqa: N815
    billingModel: BillingModelEnum  # noqa: N815
    balance: float
    availableBalance: float  # noqa: N815
    pendingAmount: float  # noqa: N815
    currency: str
    exact: BalanceLike


# ------------------------------------------------------------------ exceptions


class InsufficientBalanceException(Exception):
    """The seed's refusal for a call the balance cannot pay.

    Nothing in this module raises it (``checkBalance`` answers, ``recordUsage``
    always records); callers raise it from a refused :class:`BillingCheckResult`.
    """

    def __init__(
        self,
        currentBalance: float | Decimal,  # noqa: N803
        requiredAmount: float | Decimal,  # noqa: N803
        message: str | None = None,
    ) -> None:
        self.currentBalance = currentBalance
        self.requiredAmount = requiredAmount
        self.message = message or (
            f"Insufficient balance: {currentBalance} available, {requiredAmount} required."
        )
        super().__init__(self.message)


class ProviderNotAllowedException(Exception):
    """The seed's refusal for a provider the user may not use in the mandate."""

    def __init__(self, provider: str, message: str | None = None) -> None:
        self.provider = provider
        self.message = message or f"Provider {provider!r} is not allowed."
        super().__init__(self.message)


# ------------------------------------------------------------ numbers in, out


def to_decimal(value: object, field: str) -> Decimal:
    """The seed's plain number as a Decimal, through ``str()``: ``0.1`` -> ``Decimal("0.1")``.

    ``str(float)`` is the shortest text that reads back as the same float, so
    it is the decimal the caller wrote (or the one its float arithmetic
    produced, ``0.1 + 0.2`` -> ``0.30000000000000004``). Accepts ``int``,
    ``float`` and ``Decimal``; refuses booleans, NaN, infinities and anything
    else with ``InvalidAmount``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidAmount(
            f"{field} must be a number (int, float or Decimal), not {type(value).__name__}.",
            field=field,
        )
    try:
        text = str(value)
    except ValueError:  # an int too long to write out (over 4300 digits)
        raise InvalidAmount(f"{field} is larger than aibill accepts.", field=field) from None
    # The text is read as any money string is: ASCII digits (and, from str(),
    # an exponent), finite, whatever a subclass's __str__ might write.
    return decimal_from_text(text, field=field, exponent=True)


def to_amount(value: object, field: str) -> Decimal:
    """A money amount from the seed: :func:`to_decimal`, then rounded once,
    half-even, to micro-units (the ledger's unit), which also drops float noise
    such as the ``...04`` of ``0.30000000000000004``."""
    exact = to_decimal(value, field)
    if abs(exact) * MICROS_PER_UNIT > MAX_AMOUNT_MICROS:
        raise InvalidAmount(f"{field} {value} is larger than aibill accepts.", field=field)
    return from_micros(round_to_micros(exact))


_BASE_PLACES = Decimal(1).scaleb(-12)


def _base_price(value: object, field: str) -> Decimal:
    """A provider's base price from the seed, in pico-units (10^-12, the
    precision the ledger keeps a provider cost at). A float computed as tokens
    times a price per token carries noise around its 17th significant digit
    (``3.0000000000000004e-06``); reading it to 10^-12 keeps the price, drops
    the noise, and leaves the one rounding of the charge, to micro-units,
    after conversion and markup."""
    base = to_decimal(value, field)
    if abs(base) * PICO_PER_UNIT > MAX_PICO:
        raise InvalidAmount(f"{field} {value} is larger than aibill accepts.", field=field)
    with localcontext() as ctx:
        ctx.prec = 60
        return base.quantize(_BASE_PLACES, rounding=ROUND_HALF_EVEN)


def _out(amount: Decimal) -> float:
    """An exact amount as the float the seed returned (correctly rounded)."""
    return float(amount)


# ------------------------------------------------------------- configuration

_lock = threading.Lock()
_billing: Billing | None = None
_owned = False
_base_currency: str = CATALOG_CURRENCY


def configure(billing: Billing | None, *, base_currency: str = CATALOG_CURRENCY) -> None:
    """Use ``billing`` for every service made from now on, the seed's base
    prices being in ``base_currency`` (the providers' USD unless given).

    ``None`` forgets the configuration (and closes a ledger this module opened
    itself); the next :func:`getService` then reads ``AIBILL_DATABASE_URL``.
    Services already made keep the ledger and base currency they were made with.
    """
    global _billing, _owned, _base_currency
    if billing is not None and not isinstance(billing, Billing):
        raise InvalidRequest("configure() takes an aibill.Billing (or None).", field="billing")
    try:
        currency = check_currency(base_currency)
    except InvalidRequest as exc:
        raise InvalidRequest(
            exc.message.replace("currency", "base_currency", 1), field="base_currency"
        ) from None
    with _lock:
        previous, owned = _billing, _owned
        _billing, _owned, _base_currency = billing, False, currency
    if owned and previous is not None and previous is not billing:
        previous.close()


def _configured() -> tuple[Billing, str]:
    global _billing, _owned
    with _lock:
        if _billing is None:
            url = os.environ.get(ENV_DATABASE_URL, "").strip()
            if not url:
                raise RuntimeError(
                    "aibill.compat.gateway is not configured: call "
                    f"aibill.compat.gateway.configure(billing) or set {ENV_DATABASE_URL}."
                )
            from aibill.service.root import open_billing

            _billing, _owned = open_billing(url), True
        return _billing, _base_currency


# ------------------------------------------------------------------- service


class UserLike(Protocol):
    """What the gateway passes as ``currentUser``: anything with a string ``id``."""

    @property
    def id(self) -> str: ...


def getService(  # noqa: N802
    currentUser: UserLike,  # noqa: N803
    mandateId: str,  # noqa: N803
    featureInstanceId: str | None = None,  # noqa: N803
    featureCode: str | None = None,  # noqa: N803
) -> BillingService:
    """A billing service for one user in one mandate (a new object each call:
    it holds only these ids and the configured ledger, nothing that changes)."""
    user = check_name(getattr(currentUser, "id", None), "user")
    mandate = check_name(mandateId, "mandate")
    Tags(feature_code=featureCode, feature_instance=featureInstanceId)  # validates both
    billing, base_currency = _configured()
    return BillingService(
        billing, user, mandate, featureInstanceId, featureCode, base_currency=base_currency
    )


class BillingService:
    """The seed's per-request service. Amounts in and out are plain numbers."""

    __slots__ = (
        "_billing",
        "base_currency",
        "feature_code",
        "feature_instance",
        "mandate",
        "user",
    )

    def __init__(
        self,
        billing: Billing,
        user: str,
        mandate: str,
        feature_instance: str | None = None,
        feature_code: str | None = None,
        *,
        base_currency: str = CATALOG_CURRENCY,
    ) -> None:
        self._billing = billing
        self.user = user
        self.mandate = mandate
        self.feature_instance = feature_instance
        self.feature_code = feature_code
        self.base_currency = check_currency(base_currency)

    # ---------------------------------------------------------------- prices

    def calculatePriceWithMarkup(  # noqa: N802
        self,
        basePrice: Number,  # noqa: N803
        *,
        aicoreProvider: str | None = None,  # noqa: N803
    ) -> float:
        """What ``recordUsage(basePrice, aicoreProvider=...)`` would post now:
        the base price (in the provider's currency, ``base_currency``)
        converted to the mandate's currency at the rate in force, marked up
        (the provider's markup when it has one, else the mandate's, 50 % unless
        set), rounded once, half-even, to micro-units. 0 for a non-positive
        price. A missing rate raises ``MissingExchangeRate``."""
        base = _base_price(basePrice, "basePrice")
        if base <= 0:
            return 0.0
        return _out(self._charge(base, aicoreProvider).amount)

    def _charge(self, base: Decimal, provider: str | None) -> Charge:
        return self._billing.pricing.price_cost(
            self.mandate,
            base,
            provider_currency=self.base_currency,
            provider=provider or None,
        )

    # ---------------------------------------------------------------- checks

    def checkBalance(self, estimatedCost: Number) -> BillingCheckResult:  # noqa: N802, N803
        """May a call costing up to ``estimatedCost`` start? Changes nothing.

        A non-positive estimate is checked as 0 (the account must not already be
        overdrawn). An unlimited mandate always allows; a prepaid one allows when
        the available balance covers the estimate and no spending limit would
        be passed. Errors (unknown mandate, not a member) are raised, never
        answered with "allowed".
        """
        estimate = max(to_amount(estimatedCost, "estimatedCost"), Decimal(0))
        result = self._billing.check(
            self.mandate,
            estimate=estimate,
            user=self.user,
            feature_instance=self.feature_instance,
        )
        return BillingCheckResult(
            allowed=result.allowed,
            currentBalance=_out(result.balance),
            reason=None if result.allowed else _reason_text(result),
            billingModel=_MODELS[result.billing_model],
            reasonCode=result.reason,
            availableBalance=_out(result.available),
            requiredAmount=_out(result.estimate),
            currency=result.currency,
            exact=result,
        )

    def hasBalance(self, estimatedCost: Number) -> bool:  # noqa: N802, N803
        return self.checkBalance(estimatedCost).allowed

    def getCurrentBalance(self) -> float:  # noqa: N802
        """The balance (credits minus debits) of the account the billing model
        names for this user: the mandate's pool, or the user's wallet."""
        return _out(self._billing.balance(self.mandate, user=self.user).balance)

    # ----------------------------------------------------------------- money

    def recordUsage(  # noqa: N802
        self,
        priceCHF: Number,  # noqa: N803
        workflowId: str | None = None,  # noqa: N803
        aicoreProvider: str | None = None,  # noqa: N803
        description: str | None = None,
    ) -> BillingTransaction | None:
        """Record an AI call that has happened, whose provider charged
        ``priceCHF`` (the seed's name; the seed's own docstring: the base price
        "before markup", "actually USD from provider").

        Posted as ``Billing.record_usage(provider_cost=...)`` posts it: the
        base price, in ``base_currency``, converted to the mandate's currency
        at the rate in force, marked up, rounded once, with the whole breakdown
        on the entry; ``calculatePriceWithMarkup`` tells the amount in advance.
        A missing rate raises ``MissingExchangeRate`` and writes nothing. A
        price that is not positive (or whose charge rounds to zero micro-units)
        records nothing and returns None, as in the seed. Otherwise the usage
        is always recorded, even over the balance (concepts.md rule 5; the entry
        says so). Each call is a new usage, with a fresh idempotency key: this
        call cannot be retried safely. Use
        ``Billing.record_usage(idempotency_key=...)`` for that.
        """
        base = _base_price(priceCHF, "priceCHF")
        if base <= 0:
            return None
        provider = aicoreProvider or None
        if self._charge(base, provider).amount_micros == 0:
            return None  # nothing to bill, as the seed billed nothing
        entry = self._billing.record_usage(
            self.mandate,
            provider_cost=base,
            provider_currency=self.base_currency,
            user=self.user,
            provider=provider,
            feature_code=self.feature_code,
            feature_instance=self.feature_instance,
            workflow_id=workflowId or None,
            description=_fit(description),
            already_happened=True,
            idempotency_key=_fresh_key("usage"),
        )
        return _transaction(entry)

    def addCredit(  # noqa: N802
        self,
        amount: Number,
        description: str = "Manual credit",
        referenceType: ReferenceTypeEnum = ReferenceTypeEnum.ADMIN,  # noqa: N803
    ) -> BillingTransaction | None:
        """Credit the account the billing model names for this user (who must be
        a member). ``referenceType`` becomes the aibill reason (see
        ``CREDIT_REASON_OF_REFERENCE``). An amount that is not positive (after
        rounding to micro-units) credits nothing and returns None, as in the
        seed. Not retry-safe either (a fresh key per call); use
        ``Billing.credit(idempotency_key=...)`` for that."""
        try:
            reason = CREDIT_REASON_OF_REFERENCE[ReferenceTypeEnum(referenceType)]
        except ValueError:
            raise InvalidRequest(
                f"referenceType must be one of {', '.join(ReferenceTypeEnum)}, "
                f"not {referenceType!r}.",
                field="referenceType",
            ) from None
        credit = to_amount(amount, "amount")
        if credit <= 0:
            return None
        entry = self._billing.credit(
            self.mandate,
            credit,
            user=self.user,
            reason=reason,
            description=_fit(description),
            idempotency_key=_fresh_key("credit"),
        )
        return _transaction(entry)

    # --------------------------------------------------------------- reading

    def getBalancesForUser(self) -> list[BillingBalanceResponse]:  # noqa: N802
        """This user's balance in every mandate they belong to, ordered by mandate:
        ``Billing.balances_for_user`` where the ledger has it, else one
        ``Billing.balance`` per membership."""
        per_user: Callable[[str], Any] | None = getattr(self._billing, "balances_for_user", None)
        if callable(per_user):
            balances: list[BalanceLike] = list(per_user(self.user))
        else:
            balances = [
                self._billing.balance(m, user=self.user)
                for m in _mandates_of(self._billing, self.user)
            ]
        rows = []
        for b in sorted(balances, key=lambda b: b.mandate):
            model = getattr(b, "billing_model", None)
            if not isinstance(model, BillingModel):
                model = self._billing.get_mandate(b.mandate).billing_model
            rows.append(
                BillingBalanceResponse(
                    mandateId=b.mandate,
                    userId=self.user,
                    accountId=b.account,
                    billingModel=_MODELS[model],
                    balance=_out(b.balance),
                    availableBalance=_out(b.available),
                    pendingAmount=_out(b.pending),
                    currency=b.currency,
                    exact=b,
                )
            )
        return rows

    def getTransactionHistory(self, limit: int = 100) -> list[BillingTransaction]:  # noqa: N802
        """The newest ``limit`` entries of the account the billing model names for
        this user (the pool's entries include other members' usage), newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidRequest("limit must be a whole number.", field="limit")
        if limit <= 0:
            return []
        account = self._billing.balance(self.mandate, user=self.user).account
        found: list[BillingTransaction] = []
        cursor: str | None = None
        while len(found) < limit:
            page = self._billing.history(
                self.mandate,
                account=account,
                limit=min(HISTORY_PAGE, limit - len(found)),
                cursor=cursor,
            )
            found.extend(_transaction(entry) for entry in page.entries)
            cursor = page.cursor
            if cursor is None:
                break
        return found

    # ------------------------------------------------------------ permissions

    def isProviderAllowed(self, provider: str) -> bool:  # noqa: N802
        """Fails closed (concepts.md rule 10): True only when the configured ledger
        has ``is_provider_allowed(mandate, user, provider)`` and it answers True."""
        check: Callable[..., Any] | None = getattr(self._billing, "is_provider_allowed", None)
        if not callable(check):
            log.warning(
                "provider %r refused for user %r in mandate %r: provider permissions are "
                "not available (the ledger has no is_provider_allowed); refusing by default",
                provider,
                self.user,
                self.mandate,
            )
            return False
        try:
            answer = check(self.mandate, self.user, provider)
        except Exception:
            log.warning(
                "provider %r refused for user %r in mandate %r: the permission check failed",
                provider,
                self.user,
                self.mandate,
                exc_info=True,
            )
            return False
        if answer is not True:
            log.info(
                "provider %r not allowed for user %r in mandate %r (answer %r)",
                provider,
                self.user,
                self.mandate,
                answer,
            )
        return answer is True

    def getallowedProviders(self) -> list[str]:  # noqa: N802
        """Fails closed: the providers ``allowed_providers(mandate, user)`` of the
        configured ledger names, or ``[]`` when it has none or it fails."""
        listing: Callable[..., Any] | None = getattr(self._billing, "allowed_providers", None)
        if not callable(listing):
            log.warning(
                "no providers allowed for user %r in mandate %r: provider permissions are "
                "not available (the ledger has no allowed_providers); refusing by default",
                self.user,
                self.mandate,
            )
            return []
        try:
            answer = list(listing(self.mandate, self.user))
            if not all(isinstance(p, str) for p in answer):
                raise TypeError(f"allowed_providers returned non-strings: {answer!r}")
        except Exception:
            log.warning(
                "no providers allowed for user %r in mandate %r: the permission check failed",
                self.user,
                self.mandate,
                exc_info=True,
            )
            return []
        return answer

    def __repr__(self) -> str:
        return (
            f"BillingService(user={self.user!r}, mandate={self.mandate!r}, "
            f"featureInstanceId={self.feature_instance!r}, featureCode={self.feature_code!r})"
        )


# ------------------------------------------------------------------- helpers


def _fresh_key(kind: str) -> str:
    """The seed's calls carry no idempotency key and two identical calls are two
    events, so no key can be derived from the arguments: each call gets a new one."""
    return f"compat-{kind}-{uuid.uuid4().hex}"


def _fit(description: str | None) -> str | None:
    """A description as aibill stores it: usage that happened must not be lost
    to a long text, so it is cut to the ledger's limit instead of refused, and
    characters the ledger refuses (controls, lone surrogates) are written as
    visible escapes."""
    if description is None:
        return None
    text = printable(str(description))
    if not text:
        return None
    if len(text) > MAX_DESCRIPTION_LENGTH:
        return text[: MAX_DESCRIPTION_LENGTH - 1] + "\u2026"
    return text


def _reason_text(result: CheckResult) -> str:
    if result.reason == "insufficient_balance":
        return (
            f"Insufficient balance: {result.available} {result.currency} available, "
            f"{result.estimate} {result.currency} required."
        )
    if result.reason == "limit_exceeded":
        return f"A spending limit would be passed by {result.estimate} {result.currency}."
    return f"Not allowed: {result.reason}."


def _transaction(entry: Entry) -> BillingTransaction:
    return BillingTransaction(
        id=entry.id,
        mandateId=entry.mandate,
        accountId=entry.account,
        userId=entry.user,
        transactionType=(
            TransactionTypeEnum.CREDIT
            if entry.kind is EntryKind.CREDIT
            else TransactionTypeEnum.DEBIT
        ),
        referenceType=REFERENCE_OF_REASON.get(entry.reason, ReferenceTypeEnum.SYSTEM),
        amount=_out(entry.amount),
        currency=entry.currency,
        balanceAfter=_out(entry.balance_after),
        description=entry.description,
        workflowId=entry.workflow_id,
        featureInstanceId=entry.feature_instance,
        featureCode=entry.feature_code,
        aicoreProvider=entry.provider,
        overBalance=entry.over_balance,
        createdAt=entry.posted_at,
        exact=entry,
    )


def _mandates_of(billing: Billing, user: str) -> list[str]:
    """The mandates ``user`` belongs to, for a ledger without
    ``balances_for_user``: one read of the memberships, bounded."""
    return lookups.mandates_of(billing.engine, user, limit=MAX_MANDATES_PER_USER)


__all__ = [
    "BalanceLike",
    "BillingBalanceResponse",
    "BillingCheckResult",
    "BillingModelEnum",
    "BillingService",
    "BillingTransaction",
    "InsufficientBalanceException",
    "Number",
    "ProviderNotAllowedException",
    "ReferenceTypeEnum",
    "TransactionTypeEnum",
    "configure",
    "getService",
    "to_amount",
    "to_decimal",
]
