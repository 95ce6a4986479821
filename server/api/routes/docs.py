"""/docs (Swagger UI) from this server's own files: no page loads anything from another host.

FastAPI's default pages pull their scripts from a CDN, which leaves /docs blank behind a firewall, where
self-hosted servers often are. The fastapi-offline package ships the Swagger UI bundle (Apache-2.0, stated
in the package's metadata); we serve it at STATIC_DOCS_ROUTE. ReDoc is not offered: its bundle loads its
logo from its vendor's CDN (tests/server/test_ops_e2e.py records every request the pages make).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DOCS_ROUTE = "/static/docs"
STATIC_ROUTE = "/static/app"  # server/api/static: the playground's script and styles
BUNDLES = Path(fastapi_offline.__file__).parent / "static"
APP_STATIC = Path(__file__).resolve().parents[1] / "static"

# Swagger UI otherwise sends the schema to validator.swagger.io for its badge.
SWAGGER_PARAMETERS = {"validatorUrl": None, "defaultModelsExpandDepth": 0}


def include_docs(app: FastAPI) -> None:
    """Mount the bundle and the page; create the app with docs_url=None and redoc_url=None."""
    app.mount(STATIC_DOCS_ROUTE, StaticFiles(directory=BUNDLES), name="static-docs")
    app.mount(STATIC_ROUTE, StaticFiles(directory=APP_STATIC), name="static-app")
    favicon = f"{STATIC_DOCS_ROUTE}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{STATIC_DOCS_ROUTE}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_DOCS_ROUTE}/swagger-ui.css", swagger_favicon_url=favicon,
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
