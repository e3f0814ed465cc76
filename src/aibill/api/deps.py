"""Request dependencies: who is asking, and the idempotency key of a write."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from aibill.domain import errors as e
from aibill.service.billing import Billing

MAX_KEY_LENGTH = 200


def system_billing(request: Request) -> Billing:
    billing: Billing = request.app.state.billing
    return billing


def principal_billing(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> Billing:
    """The ledger acting for the holder of the request's API key.

    Every endpoint but the health checks needs ``Authorization: Bearer <key>``;
    a missing or refused key is 401 with the same answer whatever the reason.
    """
    billing = system_billing(request)
    if not authorization or not authorization.startswith("Bearer "):
        raise e.InvalidApiKey()
    view = billing.authenticate(authorization.removeprefix("Bearer ").strip())
    request.state.principal = view.principal
    return view


def idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=MAX_KEY_LENGTH,
            description="Makes the write safe to retry: the same key and body replay the first"
            " response (marked `Idempotent-Replayed: true`); another body is 409.",
        ),
    ] = None,
) -> str:
    if not idempotency_key:
        raise e.InvalidRequest(
            "This write needs an Idempotency-Key header (any unique string, at most 200"
            " characters), so that a retry never applies it twice.",
            field="Idempotency-Key",
        )
    return idempotency_key


def optional_idempotency_key(
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=MAX_KEY_LENGTH)
    ] = None,
) -> str | None:
    return idempotency_key or None


Ledger = Annotated[Billing, Depends(principal_billing)]
Key = Annotated[str, Depends(idempotency_key)]
OptionalKey = Annotated[str | None, Depends(optional_idempotency_key)]
