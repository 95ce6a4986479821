"""The server's own routes: health (/health, /healthz, /readyz), /metrics, output files, the webhook signing
keys (JWKS) and the index."""

from __future__ import annotations

import mimetypes
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from server.api.background.webhook_signing import JWKS_ROUTE
from server.api.metrics import CONTENT_TYPE_LATEST, Metrics
from server.contract.capacity import merged_capacity
from server.contract.endpoints import ENDPOINTS
from server.files.store import FILES_ROUTE, FileStore
from server.jobs.store import JobStore

HEARTBEAT_STALE_S = 15.0


def ready_workers(store: JobStore) -> list[dict[str, Any]]:
    """Workers with their model loaded and a fresh heartbeat."""
    now = time.time()
    return [w for w in store.workers() if w["state"] == "ready" and now - w["heartbeat"] < HEARTBEAT_STALE_S]


def service_router(store: JobStore, files: FileStore, published_keys: dict[str, Any], metrics: Metrics, *,
                   presign_s: float | None = None) -> APIRouter:
    """`presign_s`: redirect file downloads to presigned bucket links valid this long (a store with
    `presigned_url`, server/files/s3.py), instead of serving the bytes."""
    router = APIRouter()

    @router.get("/healthz", tags=["server"])
    def liveness() -> JSONResponse:
        """Liveness: 200 whenever the API process answers (workers may still be loading)."""
        return JSONResponse({"status": "ok"})

    @router.get("/readyz", tags=["server"])
    def readiness() -> JSONResponse:
        """Readiness: 200 once a worker has its model loaded and is alive; 503 before that."""
        ready = ready_workers(store)
        # The longest video per size any ready worker holds (server/contract/capacity.py); null: no limit
        # is known (a CPU worker, or none ready).
        capacity = merged_capacity([w.get("capacity") for w in ready])
        return JSONResponse({"status": "ready" if ready else "starting", "ready_workers": len(ready),
                             "capacity": capacity}, status_code=200 if ready else 503)

    @router.get("/metrics", tags=["server"], response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus text format; the list is in README.md (Metrics)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/health", tags=["server"])
    def health() -> JSONResponse:
        """200 once at least one worker has its model loaded and is alive; 503 before that."""
        workers = store.workers()
        ready = ready_workers(store)
        body = {
            "status": "ok" if ready else "starting",
            # "node" (the box) from a store shared by several (server/jobs/postgres.py).
            "workers": [{"id": w["id"], "state": w["state"], "model": w["model"], "detail": w["detail"],
                         "capacity": w.get("capacity"),
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

    @router.get("/", tags=["server"], response_model=None)
    def index(request: Request) -> dict[str, object] | HTMLResponse:
        """JSON for programs; a browser (Accept: text/html) gets links to the playground and the docs."""
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(INDEX_HTML)
        return {"endpoints": sorted(ENDPOINTS), "docs": "/docs", "openapi": "/openapi.json",
                "playground": "/playground", "metrics": "/metrics"}

    return router


INDEX_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Wan VACE 14B</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>Wan VACE 14B, fal-compatible</h1>
<ul><li><a href="/playground">Playground</a>: try every endpoint from this page</li>
<li><a href="/docs">API docs</a> (Swagger UI)</li>
<li><a href="/metrics">Prometheus metrics</a>, <a href="/health">health</a></li></ul></body></html>"""
