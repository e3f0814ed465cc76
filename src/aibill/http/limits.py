"""Request bodies are bounded while they stream, before any other work.

:class:`BodyLimit` is a pure ASGI middleware, the outermost of the app. For
every HTTP request it

* refuses a declared ``Content-Length`` above the route's limit (or one that
  is not a single non-negative integer) at once, without reading the body;
* otherwise reads the body from the server, counting bytes however it is
  framed (``Content-Length`` or ``Transfer-Encoding: chunked``), and refuses
  it as soon as the count passes the limit, without reading further;
* and only when the whole body is within the limit hands the request to the
  app, with the buffered body replayed.

A refusal is a 413 with ``Connection: close``: the server stops reading and
closes the connection, so an oversized body costs at most the limit in
memory, and no authentication, parsing or route work is done for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KIB = 1024
JSON_BODY_BYTES = 64 * KIB
"""The JSON API's requests (``/v1/...``) and anything else that is not a form."""
FORM_BODY_BYTES = 16 * KIB
"""The dashboard's forms (every field is at most a few hundred characters)."""
UPLOAD_FILE_BYTES = 64 * KIB
"""A rate-import file: the API's CSV body, or the file in the dashboard's form."""
MULTIPART_SLACK_BYTES = 8 * KIB
"""What the dashboard's upload form adds around the file (boundaries, other fields)."""
UPLOAD_PATHS = frozenset({"/v1/exchange-rates/import", "/platform/rates-import"})
BATCH_BODY_BYTES = 1024 * KIB
"""A batch of up to 1,000 usage records (``POST /v1/usage/batch``)."""
BATCH_PATHS = frozenset({"/v1/usage/batch"})


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The largest body, in bytes, each kind of route accepts."""

    json_bytes: int = JSON_BODY_BYTES
    form_bytes: int = FORM_BODY_BYTES
    upload_bytes: int = UPLOAD_FILE_BYTES
    upload_paths: frozenset[str] = field(default=UPLOAD_PATHS)
    is_form: Callable[[str], bool] = field(default=lambda path: False)

    def for_path(self, path: str) -> int:
        """The limit for a request to ``path``."""
        if path in BATCH_PATHS:
            return BATCH_BODY_BYTES
        if path in self.upload_paths:
            multipart = self.is_form(path)
            return self.upload_bytes + (MULTIPART_SLACK_BYTES if multipart else 0)
        return self.form_bytes if self.is_form(path) else self.json_bytes


Refusal = Callable[[Scope, int], Response]
"""Builds the 413 answer for a request and its limit."""


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The ``Content-Length`` the client declared: None when there is none, -1
    when it is malformed (not digits, or several different values)."""
    found = {value.strip() for name, value in headers if name.lower() == b"content-length"}
    if not found:
        return None
    if len(found) > 1:
        return -1
    (value,) = found
    return int(value) if value.isdigit() and len(value) <= 18 else -1


class BodyLimit:
    """The ASGI middleware; see the module's documentation."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, refusal: Refusal) -> None:
        self.app = app
        self.limits = limits
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope.get("path", ""))
        declared = declared_length(scope.get("headers", []))
        if declared is not None and not 0 <= declared <= limit:
            await self._refuse(scope, receive, send, limit)
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nobody to answer
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await self._refuse(scope, receive, send, limit)
                return
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = self.refusal(scope, limit)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the whole body once, then what the server says
    (a disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
