"""/playground: a page to try every endpoint, built in the browser from /openapi.json (server/api/static/).

The page, its script and styles are this server's own files; it calls only this server (the schema, the
storage upload routes, the queue, the result files).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from server.api.routes.docs import APP_STATIC


def playground_router() -> APIRouter:
    router = APIRouter()

    @router.get("/playground", include_in_schema=False)
    def playground() -> FileResponse:
        return FileResponse(APP_STATIC / "playground.html", media_type="text/html")

    return router
