"""Signing in (with an API key, through a form) and out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from aibill.domain import errors as e
from aibill.domain.principal import Scope
from aibill.http.throttle import auth_throttle, client_address
from aibill.service.billing import Billing
from aibill.service.sessions import InvalidSession
from aibill.web.routing import WebRoute, local_path, page, redirect
from aibill.web.security import (
    SESSION_COOKIE,
    FormDep,
    PostedViewer,
    clear_session_cookie,
    resume_session,
    sessions,
    set_session_cookie,
    set_signin_cookie,
    signin_ok,
    signin_token,
)

router = APIRouter(route_class=WebRoute, include_in_schema=False)
REFUSED = "That API key is not valid. Check that you pasted all of it."
READ_NEEDED = (
    "That key may only place holds and record usage (billing:use). The dashboard shows "
    "balances and history: sign in with a key that has billing:read or billing:admin."
)


def _form(request: Request, *, status: int = 200, error: str | None = None) -> Response:
    token = signin_token(request)
    response = page(
        request,
        "sign_in.html",
        status=status,
        viewer=None,
        error=error,
        signin_token=token,
        next=local_path(request.query_params.get("next")),
        ended=request.query_params.get("ended") == "1",
        policy=sessions(request).policy,
    )
    set_signin_cookie(request, response, token)
    return response


@router.get("/sign-in")
def sign_in_form(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        try:
            resume_session(request, token)
        except (InvalidSession, e.TooManyFailedAttempts):
            pass
        else:  # signed in already
            return redirect(local_path(request.query_params.get("next")))
    return _form(request)


@router.post("/sign-in")
def sign_in(request: Request, form: FormDep) -> Response:
    if not signin_ok(request, form):
        return _form(
            request,
            status=403,
            error="The sign-in form expired or did not come from this page; try again.",
        )
    billing: Billing = request.app.state.billing
    presented = form.get("api_key")
    try:
        attempt = auth_throttle(request).check(client_address(request), presented)
    except e.TooManyFailedAttempts as exc:
        response = _form(request, status=429, error=exc.message)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    try:
        principal = billing.keys.authenticate(presented)
    except e.InvalidApiKey:
        attempt.failed()
        return _form(request, status=401, error=REFUSED)
    attempt.succeeded()
    if not billing.as_principal(principal).may(Scope.READ, principal.mandate):
        return _form(request, status=403, error=READ_NEEDED)  # a gateway's use-only key
    store = sessions(request)
    store.close(request.cookies.get(SESSION_COOKIE, ""))  # a session this browser had before
    opened = store.open(principal)
    response = redirect(local_path(form.get("next")))
    set_session_cookie(request, response, opened.token)
    return response


@router.post("/sign-out")
def sign_out(request: Request, viewer: PostedViewer) -> Response:
    sessions(request).close(request.cookies.get(SESSION_COOKIE, ""))
    response = redirect("/sign-in?ended=1")
    clear_session_cookie(request, response)
    return response
