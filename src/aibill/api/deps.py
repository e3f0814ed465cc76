"""Request dependencies: who is asking, the idempotency key of a write, and
the check that every text of a request can be stored (concepts.md rule 12)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from aibill.domain import errors as e
from aibill.domain.text import check_line, find_unstorable
from aibill.http.throttle import auth_throttle, client_address
from aibill.service.billing import Billing

MAX_KEY_LENGTH = 200


def system_billing(request: Request) -> Billing:
    billing: Billing = request.app.state.billing
    return billing


async def storable_text(request: Request) -> None:
    """Refuse a request any of whose texts no database can store (a lone
    surrogate, written ``\\ud800`` in JSON, or a NUL), wherever it is: a path
    parameter, a query parameter, or anywhere in a JSON body, object keys
    included. A 422 ``invalid_request`` naming the field by its path
    (``metadata.note``), before the key is looked up. The services check every
    text they take in any case (and more strictly); this is the second line."""
    hit = find_unstorable(dict(request.path_params))
    for name, value in request.query_params.multi_items():
        hit = hit or find_unstorable({name: value})
    route = request.scope.get("route")
    if hit is None and isinstance(route, APIRoute) and route.body_field is not None:
        try:
            body = await request.json()  # already read and parsed for the route
        except ValueError:  # not JSON: the route's own validation answers
            body = None
        hit = find_unstorable(body)
    if hit is not None:
        field, what = hit
        raise e.InvalidRequest(
            f"{field or 'The request body'} has {what}; text must be valid Unicode without NUL.",
            field=field or "body",
        )


async def principal_billing(
    request: Request,
    _text: Annotated[None, Depends(storable_text)],
    authorization: Annotated[str | None, Header()] = None,
) -> Billing:
    """The ledger acting for the holder of the request's API key.

    Every endpoint but the health checks needs ``Authorization: Bearer <key>``;
    a missing or refused key is 401 with the same answer whatever the reason.
    After too many refused keys from the client's address, or for the key id
    presented, it is 429 before the key is looked up (:mod:`aibill.http.throttle`).

    A key this process verified a moment ago (``AIBILL_KEY_CACHE_S``) is
    answered here, on the event loop, without I/O; any other goes to a
    worker thread, where :meth:`~aibill.service.keys.Keys.authenticate` reads
    it (a thread hop costs a request more than the lookup in memory).
    """
    billing = system_billing(request)
    if not authorization or not authorization.startswith("Bearer "):
        raise e.InvalidApiKey()
    presented = authorization.removeprefix("Bearer ").strip()
    attempt = auth_throttle(request).check(client_address(request), presented)
    principal = billing.keys.recall(presented)
    if principal is None:
        try:
            principal = await run_in_threadpool(billing.keys.authenticate, presented)
        except e.InvalidApiKey:
            attempt.failed()
            raise
    attempt.succeeded()
    request.state.principal = principal
    return billing.as_principal(principal)


# The two below are ``async`` for no I/O they do: FastAPI runs a plain ``def``
# dependency in a worker thread, and that hop costs more than the check.


async def idempotency_key(
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
    return check_line(idempotency_key, "Idempotency-Key", max_length=MAX_KEY_LENGTH)


async def optional_idempotency_key(
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=MAX_KEY_LENGTH)
    ] = None,
) -> str | None:
    if not idempotency_key:
        return None
    return check_line(idempotency_key, "Idempotency-Key", max_length=MAX_KEY_LENGTH)


Ledger = Annotated[Billing, Depends(principal_billing)]
Key = Annotated[str, Depends(idempotency_key)]
OptionalKey = Annotated[str | None, Depends(optional_idempotency_key)]
