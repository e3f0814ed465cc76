"""The dashboard's routes answer in HTML: pages, redirects, and designed error
pages (never the API's JSON problems). Every page is sent with headers that
keep it private and local: no caching, no framing, and a Content Security
Policy that allows nothing from another origin."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from aibill.domain import errors as e
from aibill.http.headers import SECURITY_HEADERS
from aibill.http.status import status_of
from aibill.web.render import make_environment
from aibill.web.security import FormRefused, SignInRequired, clear_session_cookie, current_viewer

log = logging.getLogger("aibill.web")
ENV = make_environment()


TITLES = {
    401: "Not signed in",
    402: "Refused",
    403: "Not allowed",
    404: "Not found",
    405: "Not available",
    409: "Conflict",
    422: "Not valid",
    429: "Too many attempts",
    503: "Unavailable",
}


class PageNotFound(Exception):
    """Nothing here for this viewer: the same page whether the thing is
    missing or belongs to someone else."""


def page(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    html = ENV.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def redirect(url: str) -> RedirectResponse:
    """After a POST: see the result with a GET (a reload does not post again)."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this site, else ``default`` (no open redirects)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


def error_page(
    request: Request, status: int, title: str, message: str, code: str | None = None
) -> HTMLResponse:
    viewer = getattr(request.state, "viewer", None)
    return page(
        request,
        "error.html",
        status=status,
        viewer=viewer,
        error_status=status,
        title=title,
        message=message,
        code=code,
    )


API_PATHS = frozenset({"v1", "healthz", "readyz", "metrics", "openapi.json", "docs", "redoc"})
"""First path segments that belong to the API and the operators: their errors stay JSON."""


def for_people(path: str) -> bool:
    """Whether ``path`` is the dashboard's (anything the API and operators do not own)."""
    return path.split("/", 2)[1] not in API_PATHS


def http_error_page(
    request: Request, status: int, detail: str, headers: Mapping[str, str] | None
) -> Response:
    """A dashboard address no route answers (a mistyped URL, mostly): the
    dashboard's own page, with the navigation when a session is open, and
    the way back to the overview."""
    with contextlib.suppress(SignInRequired, e.AibillError):  # else: without the navigation
        current_viewer(request)
    if status == 404:
        title, message, code = "Not found", "There is no page at this address.", "not_found"
    elif status == 405:
        title, message = TITLES[405], "This address does not answer that kind of request."
        code = "method_not_allowed"
    else:
        title, message, code = TITLES.get(status, "Something went wrong"), detail, None
    response = error_page(request, status, title, message, code)
    response.headers.update(headers or {})
    return response


class WebRoute(APIRoute):
    """A dashboard route: a missing session leads to the sign-in page, and the
    service's refusals become error pages with their message and code."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                target = request.url.path
                if request.method == "GET" and request.url.query:
                    target += f"?{request.url.query}"
                response = redirect(f"/sign-in?next={quote(target, safe='/')}")
                if request.cookies:
                    clear_session_cookie(request, response)
                return response
            except FormRefused:
                return error_page(
                    request,
                    403,
                    "This form cannot be sent",
                    "It has expired or did not come from this dashboard. Go back, reload the "
                    "page and try again.",
                    "csrf_refused",
                )
            except PageNotFound:
                return error_page(
                    request,
                    404,
                    "Not found",
                    "There is nothing here, or it is not yours to see.",
                    "not_found",
                )
            except e.AibillError as exc:
                status = status_of(exc)
                if status >= 500:
                    log.error("dashboard: %s", exc.message)
                title = TITLES.get(status, "Something went wrong")
                answer = error_page(request, status, title, exc.message, exc.code)
                if isinstance(exc, e.TooManyFailedAttempts):
                    answer.headers["Retry-After"] = str(exc.retry_after_s)
                return answer

        return run
