"""The FastAPI application: fal's queue/run routes, output files and health. Never imports torch."""

from __future__ import annotations

import mimetypes
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from server.addressing import FalAddressingMiddleware
from server.endpoints import ENDPOINTS
from server.filestore import FILES_ROUTE, FileStore
from server.jobstore import JobStore
from server.queue_api import QueueApi
from server.settings import Settings
from server.supervisor import Supervisor

HEARTBEAT_STALE_S = 15.0


def create_app(settings: Settings, *, run_workers: bool = True) -> FastAPI:
    store = JobStore(settings.db_path)
    files = FileStore(settings.files_dir)
    supervisor = Supervisor(settings, store) if run_workers else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if supervisor is not None:
            supervisor.start()
        yield
        if supervisor is not None:
            await run_in_threadpool(supervisor.stop)

    app = FastAPI(
        title="Wan VACE 14B (self-hosted, fal-compatible)",
        version="0.1.0",
        description="fal.ai's fal-ai/wan-vace-14b queue API on your own GPU. "
        "Submit to /queue/{endpoint_id}, poll .../requests/{id}/status, fetch .../requests/{id}.",
        lifespan=lifespan,
        redirect_slashes=False,  # fal's SDKs follow no redirects; trailing slashes are stripped instead
    )
    app.add_middleware(FalAddressingMiddleware)
    app.state.store = store
    app.state.settings = settings
    QueueApi(store, settings.public_url).include_in(app)

    @app.get("/health", tags=["server"])
    def health() -> JSONResponse:
        """200 once at least one worker has its model loaded and is alive; 503 before that."""
        workers = store.workers()
        now = time.time()
        ready = [w for w in workers if w["state"] == "ready" and now - w["heartbeat"] < HEARTBEAT_STALE_S]
        body = {
            "status": "ok" if ready else "starting",
            "workers": [{"id": w["id"], "state": w["state"], "model": w["model"], "detail": w["detail"]}
                        for w in workers],
            "queued": store.count_queued(),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(FILES_ROUTE + "/{token}/{name}", tags=["files"], response_model=None)
    def get_file(token: str, name: str) -> FileResponse | JSONResponse:
        path = files.resolve(token, name)
        if path is None:
            return JSONResponse({"detail": "File not found"}, status_code=404)
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, filename=name)

    @app.get("/", tags=["server"])
    def index() -> dict[str, object]:
        return {"endpoints": sorted(ENDPOINTS), "docs": "/docs", "openapi": "/openapi.json"}

    return app
