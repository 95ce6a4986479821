"""The FastAPI application: wiring of the routes, middleware and background threads. Never imports torch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from server.api.background.input_reaper import InputReaper
from server.api.background.retention import RetentionSweeper
from server.api.background.start_timeouts import StartTimeoutSweeper
from server.api.background.supervisor import Supervisor
from server.api.background.webhook_signing import jwks, load_or_create_signing_key
from server.api.background.webhooks import WebhookDispatcher
from server.api.metrics import CountingOutbox, Metrics
from server.api.middleware.addressing import REQUEST_ID_HEADER, FalAddressingMiddleware
from server.api.middleware.auth import ApiKeyMiddleware
from server.api.middleware.body_limit import RequestSizeMiddleware
from server.api.middleware.status_fast_path import StatusFastPath
from server.api.responses import os_error_response, validation_error_response
from server.api.routes.docs import include_docs
from server.api.routes.openapi import openapi_router
from server.api.routes.playground import playground_router
from server.api.routes.queue import QueueApi
from server.api.routes.service import service_router
from server.api.routes.storage import StorageApi
from server.contract.limits import InputLimits
from server.files.data_uris import DataUriFiles
from server.files.factory import open_settings_file_store, open_settings_uploads
from server.files.free_space import FreeSpace
from server.jobs.factory import open_settings_job_store
from server.jobs.store import JobStore
from server.outbound import AddressPolicy
from server.settings import Settings

# What the JS client sends from a browser (docs/fal-protocol.md §6.2), plus the other x-fal-* request headers.
CORS_HEADERS = [
    "authorization", "content-type", "accept", "x-fal-queue-priority", "x-fal-target-url",
    "x-fal-runner-hint", "x-fal-request-timeout", "x-fal-request-start-timeout",
    "x-fal-object-lifecycle-preference", "x-fal-object-lifecycle", "x-fal-file-name", "x-fal-store-io",
    "x-fal-no-retry", "x-fal-disable-fallbacks",
]


def create_app(settings: Settings, *, run_workers: bool = True, store: JobStore | None = None) -> FastAPI:
    """`store`: the job store to serve (tests pass server/jobs/memory.py's); by default the settings' file."""
    # Owner-only when this server creates it: jobs (prompts, inputs), outputs and uploads are the user's
    # data, and nothing under a 0700 folder is reachable by other local users whatever the files' modes.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if store is None:
        store = open_settings_job_store(settings)
    files = open_settings_file_store(settings)
    supervisor = Supervisor(settings, store) if run_workers else None
    signing_key = load_or_create_signing_key(settings.webhook_key_path)
    webhooks = WebhookDispatcher(
        store, signing_key,
        max_attempts=settings.webhook_max_attempts, retry_base_s=settings.webhook_retry_base_s,
        retry_max_s=settings.webhook_retry_max_s, timeout_s=settings.webhook_timeout_s,
        allow_hosts=settings.fetch_allow_hosts, concurrency=settings.webhook_concurrency,
    )
    metrics = Metrics(store)
    webhooks.deliveries = CountingOutbox(webhooks.deliveries, metrics)  # outcomes for /metrics

    free_space = FreeSpace(settings.data_dir, settings.min_free_disk_bytes)
    uploads = open_settings_uploads(settings, files, free_space)
    inputs = DataUriFiles(files, settings.data_dir / "inputs", settings.max_input_bytes, free_space)
    input_reaper = InputReaper(store, inputs)
    retention = RetentionSweeper(
        store, files, settings.work_dir, settings.retention_s,
        uploads=uploads, upload_max_age_s=settings.upload_max_age_s,
    )

    start_timeouts = StartTimeoutSweeper(store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if supervisor is not None:
            supervisor.start()
        webhooks.start()
        retention.start()
        start_timeouts.start()
        input_reaper.start()
        yield
        # Together: the workers' grace period (30 s) must not wait behind the other threads' joins.
        stops = [webhooks.stop, retention.stop, start_timeouts.stop, input_reaper.stop]
        stops += [supervisor.stop] if supervisor is not None else []
        await asyncio.gather(*(run_in_threadpool(stop) for stop in stops))

    app = FastAPI(
        title="Wan VACE 14B (self-hosted, fal-compatible)",
        version="0.1.0",
        description="fal.ai's fal-ai/wan-vace-14b queue API on your own GPU. "
        "Submit to /queue/{endpoint_id}, poll .../requests/{id}/status, fetch .../requests/{id}.",
        lifespan=lifespan,
        redirect_slashes=False,  # fal's SDKs follow no redirects; trailing slashes are stripped instead
        docs_url=None, redoc_url=None,  # /docs from local files by include_docs; no ReDoc (see there)
    )
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.add_exception_handler(OSError, os_error_response)  # a full disk is a 507, never a plain-text 500
    # Innermost: addressing has already mapped /api/fal/proxy and Host: queue.* onto the real routes, and
    # CORS (outermost) answers preflights and decorates the 401s.
    shutting_down = threading.Event()
    queue_api = QueueApi(store, settings.public_url, InputLimits.from_settings(settings), shutting_down,
                         AddressPolicy.for_operator(settings.fetch_allow_hosts), reaper=input_reaper,
                         free_space=free_space)
    app.add_middleware(StatusFastPath, api=queue_api)  # status polls skip FastAPI's router
    app.add_middleware(RequestSizeMiddleware, max_bytes=settings.max_request_bytes)  # inside auth: 401 first
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    app.add_middleware(FalAddressingMiddleware)
    # Added last, so outermost: preflights are answered before addressing, and every answer is exposed.
    app.add_middleware(
        CORSMiddleware, allow_origins=[o.strip() for o in settings.cors_allow_origins.split(",")],
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"], allow_headers=CORS_HEADERS,
        expose_headers=[REQUEST_ID_HEADER, "x-fal-error-type", "x-fal-request-timeout-type", "etag"],
        max_age=600,
    )
    app.state.store = store

    def begin_shutdown() -> None:
        """Called by the CLI's server on SIGTERM, before uvicorn waits for open requests to finish: the
        workers start requeueing their jobs at once, and requests waiting on a job end."""
        shutting_down.set()
        if supervisor is not None:
            supervisor.begin_stop()

    app.state.begin_shutdown = begin_shutdown
    app.state.settings = settings
    queue_api.include_in(app)
    storage = StorageApi(files, uploads, settings.public_url)
    app.include_router(storage.router)
    presign_s = settings.presigned_url_ttl_s if settings.file_urls == "presigned" else None
    app.include_router(openapi_router(settings.public_url, bool(settings.api_keys)))
    app.include_router(service_router(store, files, jwks(signing_key.public_key()), metrics,
                                      presign_s=presign_s))
    include_docs(app)
    app.include_router(playground_router())
    return app
