"""Who is looking at the dashboard, and whether a form really came from it.

* The session cookie (``aibill_session``) carries a session token
  (:mod:`aibill.service.sessions`), never the API key: HttpOnly,
  SameSite=Lax, Path=/, Secure when the page was served over https, and no
  Max-Age (it ends with the browser; the server ends it sooner).
* Every form carries the session's CSRF token (a hidden ``csrf`` field) and is
  refused without it; a POST whose ``Origin`` (or, without one, ``Referer``)
  names another site is refused too.
* The sign-in form, before any session exists, is protected by a double
  submit: a random token in its own cookie (``aibill_signin``) and in the form.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from starlette.datastructures import FormData, UploadFile

from aibill.domain import errors as e
from aibill.domain.principal import PrincipalKind, Scope
from aibill.domain.sessions import WebSession
from aibill.http.throttle import auth_throttle, client_address
from aibill.service.billing import Billing
from aibill.service.sessions import InvalidSession, Sessions

SESSION_COOKIE = "aibill_session"
SIGNIN_COOKIE = "aibill_signin"
CSRF_FIELD = "csrf"


class SignInRequired(Exception):
    """No live session: the page answers with the sign-in form."""


class FormRefused(Exception):
    """A POST without this session's CSRF token, or from another origin."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in person: their session and the ledger acting for them."""

    session: WebSession
    ledger: Billing

    @property
    def csrf(self) -> str:
        return self.session.csrf_token

    @property
    def who(self) -> str:
        p = self.session.principal
        return f"{p.user} · system admin" if p.kind is PrincipalKind.SYSADMIN else f"{p.user}"

    def administers_platform(self) -> bool:
        """Whether the service lets this viewer change the platform's settings
        (no, when it cannot say: error pages ask this too)."""
        try:
            return self.ledger.may(Scope.ADMIN, None)
        except e.AibillError:
            return False


class Form:
    """A submitted form's fields as text (missing fields are empty)."""

    def __init__(self, data: FormData) -> None:
        self._data = data

    def get(self, name: str) -> str:
        value = self._data.get(name)
        return value.strip() if isinstance(value, str) else ""

    def optional(self, name: str) -> str | None:
        return self.get(name) or None

    def getlist(self, name: str) -> list[str]:
        return [v for v in self._data.getlist(name) if isinstance(v, str)]

    def file(self, name: str) -> bytes | None:
        """The content of an uploaded file (None when none was chosen)."""
        value = self._data.get(name)
        if not isinstance(value, UploadFile) or not (value.filename or value.size):
            return None
        value.file.seek(0)
        return value.file.read()

    def values(self) -> dict[str, str]:
        """What to fill the form with again (never secrets: the caller leaves them out)."""
        return {k: v for k, v in self._data.items() if isinstance(v, str) and k != CSRF_FIELD}


def sessions(request: Request) -> Sessions:
    """The app's session store, on the ledger's engine and clock."""
    state = request.app.state
    found: Sessions | None = getattr(state, "web_sessions", None)
    if found is None:
        billing: Billing = state.billing
        found = Sessions(
            billing.engine, clock=billing.clock, policy=getattr(state, "session_policy", None)
        )
        state.web_sessions = found
    return found


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    _cookie(request, response, SESSION_COOKIE, token, samesite="lax", path="/")


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, samesite="lax", secure=secure(request), path="/"
    )


def signin_token(request: Request) -> str:
    """The sign-in form's double-submit token: the cookie's, or a new one."""
    token = request.cookies.get(SIGNIN_COOKIE, "")
    return token if len(token) == 64 else secrets.token_hex(32)


def set_signin_cookie(request: Request, response: Response, token: str) -> None:
    _cookie(
        request, response, SIGNIN_COOKIE, token, samesite="strict", path="/sign-in", max_age=3600
    )


def _cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    *,
    samesite: Literal["lax", "strict"],
    path: str,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite=samesite,
        secure=secure(request),
        path=path,
        max_age=max_age,
    )


def same_origin(request: Request) -> bool:
    """The POST came from a page of this site (when the browser says where from)."""
    here = f"{request.url.scheme}://{request.url.netloc}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == here
    referer = request.headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}" == here
    return True  # no header to judge by: the CSRF token alone decides


def signin_ok(request: Request, form: Form) -> bool:
    cookie = request.cookies.get(SIGNIN_COOKIE, "")
    field = form.get(CSRF_FIELD)
    return (
        same_origin(request)
        and len(cookie) == 64
        and hmac.compare_digest(cookie.encode(), field.encode("utf-8", "replace"))
    )


# ------------------------------------------------------------- dependencies


def resume_session(request: Request, token: str) -> WebSession:
    """The live session ``token`` names, checked against the database only
    while the client's address has failures left to spend
    (:class:`~aibill.domain.errors.TooManyFailedAttempts` otherwise, unless
    this very token worked recently); a refused token spends one."""
    attempt = auth_throttle(request).check(client_address(request), token, key_id=False)
    try:
        session = sessions(request).resume(token)
    except InvalidSession:
        attempt.failed()
        raise
    attempt.succeeded()
    return session


def current_viewer(request: Request) -> Viewer:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired()
    try:
        session = resume_session(request, token)
    except InvalidSession:
        raise SignInRequired() from None
    billing: Billing = request.app.state.billing
    viewer = Viewer(session, billing.as_principal(session.principal))
    request.state.principal = session.principal
    request.state.viewer = viewer  # for the error pages
    return viewer


async def read_form(request: Request) -> Form:
    return Form(await request.form())


def posted_viewer(
    request: Request,
    viewer: Annotated[Viewer, Depends(current_viewer)],
    form: Annotated[Form, Depends(read_form)],
) -> Viewer:
    """The viewer of a POST that carries this session's CSRF token and came
    from this site; :class:`FormRefused` otherwise."""
    if not same_origin(request) or not viewer.session.csrf_ok(form.get(CSRF_FIELD)):
        raise FormRefused()
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
PostedViewer = Annotated[Viewer, Depends(posted_viewer)]
FormDep = Annotated[Form, Depends(read_form)]
