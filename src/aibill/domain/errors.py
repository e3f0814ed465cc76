"""The errors a caller of aibill can see.

Every error carries a stable machine ``code`` and a message a person
understands. The tree::

    AibillError
    ├── InvalidRequest            invalid_request     the call is malformed; nothing stored
    │   └── InvalidAmount         invalid_amount      float, negative, zero, too many decimals
    ├── NotFound                  not_found
    │   ├── UnknownMandate        unknown_mandate
    │   ├── UnknownUser           unknown_user
    │   ├── UnknownAccount        unknown_account
    │   ├── HoldNotFound          hold_not_found
    │   ├── UnknownModel          unknown_model          no price for this provider/model
    │   ├── MissingExchangeRate   missing_exchange_rate  no rate in force for the pair
    │   └── UnknownApiKey         unknown_api_key
    ├── Refused                   refused             a business refusal; stored, replayed
    │   ├── InsufficientBalance   insufficient_balance
    │   ├── LimitExceeded         limit_exceeded
    │   └── ProviderNotAllowed    provider_not_allowed   names the provider and the roles
    ├── Conflict                  conflict
    │   ├── IdempotencyConflict   idempotency_conflict   same key, other arguments (names the field)
    │   ├── AlreadyExists         already_exists         same name, different settings
    │   ├── HoldAlreadyCaptured   hold_already_captured
    │   └── HoldAlreadyReleased   hold_already_released
    ├── PermissionDenied          permission_denied
    │   ├── NotAMember            not_a_member
    │   └── SpendNotAllowed       permission_denied   may not make the mandate pay (a Refused too)
    ├── InvalidApiKey             invalid_api_key     a key refused, whatever the reason
    ├── TooManyFailedAttempts     too_many_failed_attempts  throttled after failed authentications
    └── StoreUnavailable          store_unavailable   the database failed after bounded retries

Business refusals (``Refused``) are outcomes, not faults: the first outcome
of an idempotency key is stored and a retry with that key gets the same
refusal back. Malformed requests (``InvalidRequest``) store nothing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar


class AibillError(Exception):
    """Base class of every error aibill raises on purpose."""

    code: ClassVar[str] = "aibill_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: code, message and the details as strings."""
        return {
            "code": self.code,
            "message": self.message,
            "details": {k: _jsonable(v) for k, v in self.details.items()},
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return value


class InvalidRequest(AibillError):
    code = "invalid_request"


class InvalidAmount(InvalidRequest):
    code = "invalid_amount"


class NotFound(AibillError):
    code = "not_found"


class UnknownMandate(NotFound):
    code = "unknown_mandate"

    def __init__(self, mandate: str) -> None:
        super().__init__(f"No mandate named {mandate!r}.", mandate=mandate)


class UnknownUser(NotFound):
    code = "unknown_user"

    def __init__(self, user: str) -> None:
        super().__init__(f"No user named {user!r}.", user=user)


class UnknownAccount(NotFound):
    code = "unknown_account"


class HoldNotFound(NotFound):
    code = "hold_not_found"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"No hold with id {hold_id!r}.", hold_id=hold_id)


class UnknownModel(NotFound):
    code = "unknown_model"

    def __init__(self, provider: str, model: str, message: str | None = None) -> None:
        super().__init__(
            message or f"No price for model {model!r} of provider {provider!r}.",
            provider=provider,
            model=model,
        )


class MissingExchangeRate(NotFound):
    code = "missing_exchange_rate"

    def __init__(self, base: str, quote: str, at: object) -> None:
        super().__init__(
            f"No exchange rate from {base} to {quote} in force at {at}.",
            base=base,
            quote=quote,
            at=str(at),
        )


class Refused(AibillError):
    code = "refused"


class InsufficientBalance(Refused):
    code = "insufficient_balance"

    def __init__(
        self, *, account: str, available: Decimal, required: Decimal, currency: str
    ) -> None:
        super().__init__(
            f"Insufficient balance on account {account!r}: {available} {currency} available, "
            f"{required} {currency} required.",
            account=account,
            available=available,
            required=required,
            currency=currency,
        )
        self.available = available
        self.required = required


class Conflict(AibillError):
    code = "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"

    def __init__(self, key: str, field: str, first: Any, now: Any) -> None:
        super().__init__(
            f"Idempotency key {key!r} was first used with {field}={first!r}; "
            f"this call has {field}={now!r}. Use a new key for a different request.",
            key=key,
            field=field,
            first=first,
            now=now,
        )
        self.field = field


class AlreadyExists(Conflict):
    code = "already_exists"


class HoldAlreadyCaptured(Conflict):
    code = "hold_already_captured"


class HoldAlreadyReleased(Conflict):
    code = "hold_already_released"


class HoldsInFlight(Conflict):
    """A change that would move where money is reserved, refused while holds are open."""

    code = "holds_in_flight"


class LastSystemAdmin(Conflict):
    """Removing this system admin would leave the platform with none."""

    code = "last_sysadmin"


class PermissionDenied(AibillError):
    code = "permission_denied"


class NotAMember(PermissionDenied):
    code = "not_a_member"

    def __init__(self, mandate: str, user: str) -> None:
        super().__init__(
            f"User {user!r} is not a member of mandate {mandate!r}.", mandate=mandate, user=user
        )


class InvalidApiKey(AibillError):
    """An API key was refused. The message is the same whatever the reason
    (malformed, unknown, wrong secret, revoked, expired, holder gone)."""

    code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__("The API key is not valid.")


class TooManyFailedAttempts(AibillError):
    """Too many failed authentications from this client address, or for this
    API key id, in a short time: refused before the key is looked at. The
    same message whichever it was; ``retry_after_s`` (at most a minute by
    default) says when to try again."""

    code = "too_many_failed_attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "Too many failed attempts to authenticate from this address or with this key;"
            f" try again in {retry_after_s} second{'' if retry_after_s == 1 else 's'}.",
            retry_after_s=retry_after_s,
        )
        self.retry_after_s = retry_after_s


class UnknownApiKey(NotFound):
    code = "unknown_api_key"

    def __init__(self, key_id: str, mandate: str | None) -> None:
        where = f"mandate {mandate!r}" if mandate is not None else "the platform"
        super().__init__(f"No API key {key_id!r} in {where}.", key_id=key_id, mandate=mandate)


class StoreUnavailable(AibillError):
    """The database could not be reached or kept failing. The message is always
    generic: the driver's text (hosts, ports) goes to the log, never to a caller."""

    code = "store_unavailable"
    MESSAGE: ClassVar[str] = "The database is unavailable right now; try again shortly."
    retry_after_s: ClassVar[int] = 2
    """How long a client should wait before trying again (HTTP ``Retry-After``)."""

    def __init__(self, message: str = MESSAGE, **details: Any) -> None:
        super().__init__(message, **details)


class LimitExceeded(Refused):
    code = "limit_exceeded"


class ProviderNotAllowed(Refused):
    code = "provider_not_allowed"

    def __init__(
        self, provider: str, user: str | None, roles: tuple[str, ...], reason: str
    ) -> None:
        super().__init__(
            f"Provider {provider!r} is not allowed"
            + (f" for {user!r}" if user else "")
            + f" (roles: {', '.join(roles) or 'none'}): {reason}",
            provider=provider,
            user=user,
            roles=list(roles),
            reason=reason,
        )


class SpendNotAllowed(PermissionDenied, Refused):
    """The principal, or the user it names, has no role that lets them make the
    mandate pay (concepts.md rule 10). A permission refusal (403,
    ``permission_denied``) that is also a business refusal: stored under the
    idempotency key and replayed, like ``ProviderNotAllowed``."""

    code = "permission_denied"

    def __init__(self, user: str, mandate: str, roles: tuple[str, ...], reason: str) -> None:
        super().__init__(
            f"{user!r} may not spend in mandate {mandate!r} "
            f"(roles: {', '.join(roles) or 'none'}): {reason}",
            user=user,
            mandate=mandate,
            roles=list(roles),
            reason=reason,
        )


REFUSAL_TYPES: dict[str, type[Refused]] = {
    InsufficientBalance.code: InsufficientBalance,
    LimitExceeded.code: LimitExceeded,
    ProviderNotAllowed.code: ProviderNotAllowed,
    SpendNotAllowed.code: SpendNotAllowed,
}
