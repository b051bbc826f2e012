"""The API documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served without a CDN.

FastAPI's own pages load Swagger UI and ReDoc from jsDelivr (and ReDoc's fonts from Google), so they are blank
offline and run third-party script unchecked. Here the assets come from the ``fastapi-offline`` package, which
ships ``swagger-ui-bundle.js``, ``swagger-ui.css`` and ``redoc.standalone.js`` in its wheel; they are served at
``/docs/assets/``. Neither page has an inline script: Swagger UI is started by ``/docs/init.js`` (it reads the
OpenAPI URL from a ``data-`` attribute), ReDoc starts itself on its ``<redoc spec-url>`` element. Both pages are
sent with a Content-Security-Policy that allows script from this origin only.
"""

from __future__ import annotations

import html
from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from provenance import PRODUCT_NAME

ASSETS_PACKAGE = "fastapi_offline"
ASSETS_DIR = "static"
ASSETS_URL = "/docs/assets"
INIT_URL = "/docs/init.js"
# Script from this origin only (no inline script, no eval). Both UIs set inline styles at run time (ReDoc's
# styled-components inserts <style> elements), hence 'unsafe-inline' for styles alone; ReDoc's search index
# runs in a worker it creates from a blob: URL; images and fonts are this origin's or data: URIs.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# Swagger UI's start, FastAPI's default parameters; validatorUrl null: no badge fetched from swagger.io.
_SWAGGER_INIT = """\
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
"""

router = APIRouter()


def _openapi_url(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + (request.app.openapi_url or "/openapi.json")


@router.get("/docs", include_in_schema=False, response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on this app's OpenAPI document, from local assets."""
    root = str(request.scope.get("root_path", ""))
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(PRODUCT_NAME)} API - Swagger UI</title>
<link rel="icon" type="image/png" href="{root}{ASSETS_URL}/favicon.png">
<link rel="stylesheet" href="{root}{ASSETS_URL}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{html.escape(_openapi_url(request))}"></div>
<script src="{root}{ASSETS_URL}/swagger-ui-bundle.js"></script>
<script src="{root}{INIT_URL}"></script>
</body>
</html>
"""
    return HTMLResponse(page, headers=_HEADERS)


@router.get("/redoc", include_in_schema=False, response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc on this app's OpenAPI document, from local assets (system fonts: no Google Fonts)."""
    root = str(request.scope.get("root_path", ""))
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(PRODUCT_NAME)} API - ReDoc</title>
<link rel="icon" type="image/png" href="{root}{ASSETS_URL}/favicon.png">
</head>
<body>
<redoc spec-url="{html.escape(_openapi_url(request))}"></redoc>
<script src="{root}{ASSETS_URL}/redoc.standalone.js"></script>
</body>
</html>
"""
    return HTMLResponse(page, headers=_HEADERS)


@router.get(INIT_URL, include_in_schema=False)
def swagger_init() -> Response:
    """The script that starts Swagger UI (a file, so the page needs no inline script)."""
    return Response(_SWAGGER_INIT, media_type="text/javascript", headers={"X-Content-Type-Options": "nosniff"})


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their assets; the app must be created with ``docs_url=None, redoc_url=None``."""
    app.include_router(router)
    assets = resources.files(ASSETS_PACKAGE).joinpath(ASSETS_DIR)
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
