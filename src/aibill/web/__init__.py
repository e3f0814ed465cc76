"""The web dashboard, served by the API's app at ``/``: server-rendered pages
with a little progressive JavaScript, every asset served by the app itself.

It signs people in with an API key (a server-side session in a cookie) and
calls the same service the API calls, as the signed-in principal; what the
service refuses, the dashboard neither offers nor does. See docs/dashboard.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.staticfiles import StaticFiles

from aibill.web import admin, auth, pages, platform

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


__all__ = ["STATIC_DIR", "router", "static_files"]
