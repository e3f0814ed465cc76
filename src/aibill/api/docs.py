"""``/docs``: the interactive API reference (Swagger UI), served from the
app's own vendored copy (``static/vendor/swagger-ui``, see
``scripts/vendor_assets.sh``) under the dashboard's Content Security Policy:
nothing is loaded from another origin and no script is inline (the page's
one script, ``static/api-docs.js``, is a file). ``/redoc`` is not served."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from aibill.http.headers import SECURITY_HEADERS

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API reference</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    """Serve ``/docs`` for ``app``'s OpenAPI schema."""
    openapi_url = app.openapi_url or "/openapi.json"
    html = DOCS_PAGE.format(title=app.title, openapi_url=openapi_url)

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(html, headers=SECURITY_HEADERS)
