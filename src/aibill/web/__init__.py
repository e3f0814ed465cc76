"""The web dashboard, served by the API's app at ``/``: server-rendered pages
with a little progressive JavaScript, every asset served by the app itself.

It signs people in with an API key (a server-side session in a cookie) and
calls the same service the API calls, as the signed-in principal; what the
service refuses, the dashboard neither offers nor does. See docs/dashboard.md.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from aibill.web import admin, auth, pages, platform
from aibill.web.routing import for_people, http_error_page

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)
router.include_router(auth.router)
router.include_router(pages.router)
router.include_router(admin.router)
router.include_router(platform.router)
router.include_router(pages.fallback)


def static_files() -> StaticFiles:
    """The dashboard's scripts, styles, chart library and fonts, at ``/static``."""
    return StaticFiles(directory=STATIC_DIR)


def install(app: FastAPI) -> None:
    """Answer an address no route has, outside the API (``/v1``) and the
    operators' paths, with the dashboard's own "not found" page instead of
    the API's problem document. Call it after the API installed its handlers."""
    api_answer = app.exception_handlers[HTTPException]

    async def answer(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and for_people(request.url.path):
            return await run_in_threadpool(
                http_error_page, request, exc.status_code, str(exc.detail), exc.headers
            )
        found = api_answer(request, exc)
        return await found if inspect.isawaitable(found) else found

    app.add_exception_handler(HTTPException, answer)


__all__ = ["STATIC_DIR", "install", "router", "static_files"]
