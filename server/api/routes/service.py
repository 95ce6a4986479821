"""The server's own routes: health, output files, the webhook signing keys (JWKS) and the index."""

from __future__ import annotations

import mimetypes
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from server.api.background.webhook_signing import JWKS_ROUTE
from server.contract.endpoints import ENDPOINTS
from server.files.store import FILES_ROUTE, FileStore
from server.jobs.store import JobStore

HEARTBEAT_STALE_S = 15.0


def service_router(store: JobStore, files: FileStore, published_keys: dict[str, Any], *,
                   presign_s: float | None = None) -> APIRouter:
    """`presign_s`: redirect file downloads to presigned bucket links valid this long (a store with
    `presigned_url`, server/files/s3.py), instead of serving the bytes."""
    router = APIRouter()

    @router.get("/health", tags=["server"])
    def health() -> JSONResponse:
        """200 once at least one worker has its model loaded and is alive; 503 before that."""
        workers = store.workers()
        now = time.time()
        ready = [w for w in workers if w["state"] == "ready" and now - w["heartbeat"] < HEARTBEAT_STALE_S]
        body = {
            "status": "ok" if ready else "starting",
            # "node" (the box) from a store shared by several (server/jobs/postgres.py).
            "workers": [{"id": w["id"], "state": w["state"], "model": w["model"], "detail": w["detail"],
                         **({"node": w["node"]} if "node" in w else {})} for w in workers],
            "queued": store.count_queued(),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    # HEAD too: clients and proxies check a link's size and type before fetching it (FileResponse sends the
    # headers alone for HEAD).
    @router.api_route(FILES_ROUTE + "/{token}/{name}", methods=["GET", "HEAD"], tags=["files"],
                      response_model=None)
    def get_file(token: str, name: str) -> FileResponse | JSONResponse | RedirectResponse:
        presign = getattr(files, "presigned_url", None)
        if presign_s is not None and presign is not None:
            if not files.exists(f"{token}/{name}"):
                return JSONResponse({"detail": "File not found"}, status_code=404)
            return RedirectResponse(presign(f"{token}/{name}", presign_s), status_code=307)
        try:
            path = files.local_copy(f"{token}/{name}")
        except FileNotFoundError:
            return JSONResponse({"detail": "File not found"}, status_code=404)
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, filename=name)

    @router.get(JWKS_ROUTE, tags=["server"])
    def webhook_keys() -> JSONResponse:
        """The public key(s) webhook signatures verify against, as fal publishes its own (JWKS)."""
        return JSONResponse(published_keys, headers={"Cache-Control": "public, max-age=3600"})

    @router.get("/", tags=["server"])
    def index() -> dict[str, object]:
        return {"endpoints": sorted(ENDPOINTS), "docs": "/docs", "openapi": "/openapi.json"}

    return router
