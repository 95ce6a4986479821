"""fal's queue and run routes (docs/fal-protocol.md §2): submit, status, status stream, result, cancel, run.

This module deliberately has no `from __future__ import annotations`: FastAPI reads the per-endpoint input
model from each generated handler's annotations at runtime.
"""

import asyncio
import json
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from server.api.background.input_reaper import InputReaper
from server.api.responses import EncodableJSONResponse, error_response, unprocessable
from server.api.routes.service import HEARTBEAT_STALE_S
from server.api.urls import absolute_urls, public_base, scope_base
from server.contract.capacity import CapacityTable, capacity_refusal, live_capacities
from server.contract.endpoints import (
    APP_ID,
    ENDPOINTS,
    Endpoint,
    Refusal,
    parse_app_path,
    stored_input,
    submit_refusal,
)
from server.contract.errors import request_error
from server.contract.inputs import task_of, unknown_fields
from server.contract.limits import InputLimits
from server.files.data_uris import BadDataUri
from server.files.free_space import FreeSpace
from server.jobs.model import PRIORITIES, CancelOutcome, Job, JobResult, JobStatus, LogEntry, Status
from server.jobs.store import JobStore
from server.outbound import AddressNotAllowed, AddressPolicy

STREAM_POLL_S = 0.25
STREAM_KEEPALIVE_S = 15.0
RUN_POLL_S = 0.25
MAX_SEED = 2**31 - 1
NOT_FOUND = {"detail": "Request not found"}
QUEUE_FULL = "queue_full"
SHUTTING_DOWN = "server_shutting_down"
SHUTTING_DOWN_DETAIL = "The server is shutting down; this request was cancelled. Retry it in a moment."
# How long a sync run waits, once the server is stopping, for its running job to stop or finish; less
# than uvicorn's drain time (server/api/server.py's GRACEFUL_SHUTDOWN_S, 30 s).
RUN_SHUTDOWN_WAIT_S = 20.0


def queue_urls(scope: Scope, override: str | None, job_id: str) -> dict[str, str]:
    """The URLs of a job, under the prefix the caller used (FalAddressingMiddleware puts it in the state)."""
    base = f"{scope_base(scope, override)}{scope['state']['queue_prefix']}/{APP_ID}/requests/{job_id}"
    return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}


def log_json(entry: LogEntry) -> dict[str, Any]:
    return {
        "message": entry.message,
        "level": entry.level,
        "source": "USER",
        "timestamp": datetime.fromtimestamp(entry.ts, UTC).isoformat(),
    }


def status_body(job: JobStatus, urls: dict[str, str], position: int,
                logs: list[LogEntry] | None, progress: dict[str, Any] | None = None) -> dict[str, Any]:
    """fal-client reads queue_position for IN_QUEUE and requires the `logs` key otherwise (null is fine).
    `progress` (phase, fraction, eta, preview) is this server's extension; fal's clients ignore unknown
    keys."""
    body: dict[str, Any] = {"status": job.status.value, "request_id": job.id, **urls}
    if job.status is Status.IN_QUEUE:
        body["queue_position"] = position
        return body
    body["logs"] = [log_json(e) for e in logs] if logs is not None else None
    if progress is not None:
        body["progress"] = progress
    if job.status is Status.COMPLETED:
        body["metrics"] = {"inference_time": job.inference_time}
        if job.error_message is not None:
            body["error"] = job.error_message
            body["error_type"] = job.error_type
    return body


def result_response(job: JobResult, base: str) -> JSONResponse:
    """The model's answer, or its error replayed with the status code and body it had."""
    if job.status is not Status.COMPLETED:
        return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
    if job.error is None:
        # Encodable whatever the row holds (a lone surrogate stored before submit refused it).
        return EncodableJSONResponse(absolute_urls(job.output, base))
    return error_response(job.error, {"X-Fal-Retryable": "false"})


def refusal_response(refusal: Refusal) -> JSONResponse:
    """A submit-time refusal in the form of FastAPI's (and fal's) 422 validation errors."""
    return unprocessable(refusal.loc, refusal.message, refusal.error_type, refusal.ctx)


def lone_surrogate(value: Any, loc: tuple[str | int, ...] = ("body",)) -> tuple[str | int, ...] | None:
    """Where a string holds a lone surrogate ("\\ud800" is valid JSON, but no text): it could be stored,
    but never written back in a result or webhook, so it is refused at submit."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return loc
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = lone_surrogate(item, (*loc, key))
        if found is not None:
            return found
    return None


def parse_start_timeout(value: str | None) -> float | None:
    if value is None:
        return None
    seconds = float(value)  # ValueError is answered as a 400 by the caller
    if not math.isfinite(seconds) or seconds <= 0:  # float() takes "nan" and "inf": neither is a deadline
        raise ValueError(value)
    return time.time() + seconds


def shutting_down_response() -> JSONResponse:
    return error_response(request_error(SHUTTING_DOWN_DETAIL, SHUTTING_DOWN, 503), {"Retry-After": "30"})


class QueueApi:
    """Owns the routes; holds the store and settings the handlers need."""

    def __init__(self, store: JobStore, public_url: str | None, limits: InputLimits,
                 shutting_down: threading.Event | None = None,
                 webhook_policy: AddressPolicy | None = None, *, reaper: InputReaper,
                 free_space: FreeSpace) -> None:
        self.store = store
        # The SSRF policy deliveries use (server/api/background/webhooks.py), applied at submit too.
        self.webhook_policy = webhook_policy or AddressPolicy.for_operator(None)
        self.public_url = public_url
        self.limits = limits
        self.input_files = reaper.inputs  # large data: URIs as files, while their job is queued or running
        self.reaper = reaper
        self.free_space = free_space
        # Set on SIGTERM: requests that wait on a job (sync run, status streams) end instead of holding
        # the shutdown open while the workers requeue their jobs.
        self.shutting_down = shutting_down or threading.Event()
        self.router = APIRouter()
        for endpoint in ENDPOINTS.values():
            self.router.add_api_route(
                f"/queue/{endpoint.id}", self._submit_handler(endpoint), methods=["POST"],
                summary=f"Submit a {endpoint.id} request to the queue", tags=["queue"],
            )
            self.router.add_api_route(
                f"/run/{endpoint.id}", self._run_handler(endpoint), methods=["POST"],
                response_model=endpoint.output_model,
                summary=f"Run {endpoint.id} and wait for the result", tags=["run"],
            )
        prefix = "/queue/{app_path:path}/requests/{request_id}"
        # Most specific first: the result route's path would also match the others.
        for suffix, handler, method in (("/status/stream", self.status_stream, "GET"),
                                        ("/status", self.status, "GET"),
                                        ("/cancel", self.cancel, "PUT"),
                                        ("", self.result, "GET")):
            self.router.add_api_route(prefix + suffix, handler, methods=[method], tags=["queue"])

    def include_in(self, app: FastAPI) -> None:
        app.include_router(self.router)

    # -- submit and run --------------------------------------------------------------------------

    def _enqueue(self, request: Request, endpoint: Endpoint, payload: BaseModel, webhook: str | None,
                 priority: str | None, start_timeout: str | None) -> Job | JSONResponse:
        task = task_of(endpoint.id, payload)
        refusal = submit_refusal(task, payload, self.limits)
        if refusal is None:
            refusal = capacity_refusal(task, payload, self._live_capacities)
        if refusal is None and webhook is not None:
            refusal = self._webhook_refusal(webhook)
        if refusal is not None:
            return refusal_response(refusal)
        try:
            deadline = parse_start_timeout(start_timeout)
        except ValueError:
            return error_response(request_error(f"Invalid request timeout header: {start_timeout!r}",
                                                "bad_request", 400))
        full = self._queue_full(request)
        if full is not None:
            return full
        # A seed not given is chosen at submit so a retried attempt reproduces the same video.
        data = stored_input(endpoint, payload, random_seed=secrets.randbelow(MAX_SEED))
        where = lone_surrogate(data)
        if where is not None:
            return unprocessable(where, f"{where[-1]} holds a lone surrogate (\\ud800-\\udfff), which is no "
                                 "text; send valid Unicode", "string_unicode")
        self.free_space.check()  # an OSError (ENOSPC), answered as a 507 by server/api/responses.py
        base = public_base(request, self.public_url)
        try:
            data, token = self.input_files.spill(data, base)
        except BadDataUri as exc:
            return unprocessable(exc.loc, exc.message, exc.error_type)
        try:
            job = self.store.submit(
                endpoint.id, data, public_base=base,
                priority=PRIORITIES.get((priority or "normal").lower(), PRIORITIES["normal"]),
                webhook_url=webhook, start_deadline=deadline,
            )
        except BaseException:
            if token is not None:
                self.input_files.discard(token)
            raise
        if token is not None:
            self.input_files.bind(token, job.id)
        request.state.fal_request_id = job.id
        ignored = unknown_fields(payload)
        if ignored:
            # fal accepts fields its schema lacks; this server does too, and says which it ignored.
            self.store.add_log(job.id, f"Ignored field(s) not in {endpoint.id}'s schema: "
                               f"{', '.join(ignored)}", "WARN")
        return job

    def _live_capacities(self) -> list[CapacityTable | None]:
        """What each live worker published (server/contract/capacity.py); read only for requests that fix
        their size and length."""
        return live_capacities(self.store.workers(), time.time(), HEARTBEAT_STALE_S)

    def _webhook_refusal(self, url: str) -> Refusal | None:
        """A webhook URL the deliveries would refuse (malformed, or an address the SSRF policy refuses),
        refused at submit. A host that does not resolve now is accepted: delivery retries it later."""
        try:
            self.webhook_policy.target(url)
        except AddressNotAllowed as exc:
            return Refusal(f"fal_webhook is not a URL this server may deliver to: {exc}",
                           "invalid_webhook_url", ("query", "fal_webhook"))
        except LookupError:
            return None
        return None

    def _queue_full(self, request: Request) -> JSONResponse | None:
        """A soft cap (concurrent submits may pass it together): a full queue is answered, not grown.

        429 is what fal answers when it cannot take more work; fal's clients retry it with backoff.
        """
        limit = request.app.state.settings.max_queue_length
        queued = self.store.count_queued()
        if queued < limit:
            return None
        detail = f"The queue is full ({queued} requests waiting, limit {limit}); retry later"
        return error_response(request_error(detail, QUEUE_FULL, 429), {"Retry-After": "10"})

    def _submit_handler(self, endpoint: Endpoint) -> Callable[..., Any]:
        def submit(
            request: Request,
            payload: endpoint.input_model,  # type: ignore[name-defined]
            fal_webhook: str | None = Query(None, description="URL to POST the result to when done"),
            x_fal_queue_priority: str | None = Header(None),
            x_fal_request_timeout: str | None = Header(None),
            x_fal_request_start_timeout: str | None = Header(None),
        ) -> Any:
            job = self._enqueue(request, endpoint, payload, fal_webhook, x_fal_queue_priority,
                                x_fal_request_start_timeout or x_fal_request_timeout)
            if isinstance(job, JSONResponse):
                return job
            body = {"status": job.status.value, "request_id": job.id,
                    **queue_urls(request.scope, self.public_url, job.id),
                    "queue_position": self.store.queue_position(job)}
            return JSONResponse(body)

        return submit

    def _run_handler(self, endpoint: Endpoint) -> Callable[..., Any]:
        async def run(
            request: Request,
            payload: endpoint.input_model,  # type: ignore[name-defined]
            x_fal_request_timeout: str | None = Header(None),
        ) -> Any:
            if self.shutting_down.is_set():
                return shutting_down_response()
            job = await run_in_threadpool(self._enqueue, request, endpoint, payload, None, "normal",
                                          x_fal_request_timeout)
            if isinstance(job, JSONResponse):
                return job
            status = job.summary
            shutdown_deadline: float | None = None
            while status.status is not Status.COMPLETED:
                if await request.is_disconnected():
                    # Like Cog: a sync caller that went away does not keep a GPU busy.
                    await run_in_threadpool(self.store.request_cancel, job.id)
                    return JSONResponse({"detail": "Client disconnected"}, status_code=499)
                if self.shutting_down.is_set() and shutdown_deadline is None:
                    # The caller holds no request id to come back for, and will retry: cancel, not requeue.
                    outcome = await run_in_threadpool(self.store.request_cancel, job.id)
                    if outcome is CancelOutcome.OK:  # still queued: cancelled at once
                        return shutting_down_response()
                    # Running (it stops at its next step, or finishes if it is encoding) or just completed:
                    # answer with what it ends as, if that is soon.
                    shutdown_deadline = time.monotonic() + RUN_SHUTDOWN_WAIT_S
                if shutdown_deadline is not None and time.monotonic() > shutdown_deadline:
                    return shutting_down_response()
                await asyncio.sleep(RUN_POLL_S)
                # The light row: the job's input is never read back.
                status, _, _ = await run_in_threadpool(self._poll, job.id, None)
            final = await run_in_threadpool(self._result, job.id)
            if shutdown_deadline is not None and final.error is not None and final.error.status_code == 499:
                return shutting_down_response()  # cancelled by the shutdown, not by anyone the caller knows
            return result_response(final, public_base(request, self.public_url))

        return run

    # -- status, result, cancel ------------------------------------------------------------------

    def _result(self, request_id: str) -> JobResult:
        job = self.store.get_result(request_id)
        assert job is not None, "jobs are never deleted while a request waits on them"
        return job

    def _lookup(self, request: Request, app_path: str, request_id: str,
                read: Callable[[str], JobResult | JobStatus | None]) -> JobResult | JobStatus | None:
        """The job through `read`, one of the store's narrow reads: polls never read the job's input."""
        if parse_app_path(app_path) is None:
            return None
        job = read(request_id)
        if job is not None:
            request.state.fal_request_id = job.id
        return job

    def _poll(self, job_id: str, log_after: int | None) -> tuple[JobStatus, int, list[LogEntry] | None]:
        """One status read: the light row, the queue position and (if asked) the log lines after an id."""
        job = self.store.get_status(job_id)
        if job is None:
            raise LookupError(job_id)
        position = self.store.queue_position(job) if job.status is Status.IN_QUEUE else 0
        entries = self.store.logs(job_id, log_after) if log_after is not None else None
        return job, position, entries

    def _progress(self, job: JobStatus) -> dict[str, Any] | None:
        """The worker's last progress report (server/worker/progress.py), while the job runs."""
        return self.store.telemetry.progress(job.id) if job.status is Status.IN_PROGRESS else None

    async def status(self, request: Request, app_path: str, request_id: str,
                     logs: str | None = Query(None, description="1/0/true/false")) -> JSONResponse:
        """Documents the route; live polls are answered by server/api/middleware/status_fast_path.py with
        the same code."""
        return self.status_answer(request.scope, app_path, request_id, logs)

    def status_answer(self, scope: Scope, app_path: str, request_id: str, logs: str | None) -> JSONResponse:
        """A status poll. Clients poll at up to 10 Hz each: a few indexed reads on the event loop (WAL
        readers never wait for the writer) are cheaper than a hop to the thread pool, and the job's input
        is not read."""
        try:
            if parse_app_path(app_path) is None:
                raise LookupError(app_path)
            job, position, entries = self._poll(request_id, 0 if _truthy(logs) else None)
        except LookupError:
            return JSONResponse(NOT_FOUND, status_code=404)
        scope["state"]["fal_request_id"] = request_id
        body = status_body(job, queue_urls(scope, self.public_url, job.id), position, entries,
                           self._progress(job))
        return JSONResponse(body, status_code=200 if job.status is Status.COMPLETED else 202)

    async def status_stream(self, request: Request, app_path: str, request_id: str,
                            logs: str | None = Query(None)) -> Any:
        if parse_app_path(app_path) is None or self.store.get_status(request_id) is None:
            return JSONResponse(NOT_FOUND, status_code=404)
        request.state.fal_request_id = request_id
        urls = queue_urls(request.scope, self.public_url, request_id)
        return StreamingResponse(self._events(request, request_id, urls, _truthy(logs)),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(self, request: Request, job_id: str, urls: dict[str, str],
                      with_logs: bool) -> AsyncIterator[str]:
        """One event per change; each carries only the log lines that are new since the last event."""
        last_sent: tuple[Any, ...] | None = None
        last_log_id = 0
        last_write = time.monotonic()
        while True:
            job, position, new_logs = self._poll(job_id, last_log_id if with_logs else None)
            progress = self._progress(job)
            key = (job.status, position, bool(new_logs), json.dumps(progress))
            if key != last_sent or new_logs:
                if new_logs:
                    last_log_id = new_logs[-1].id
                yield f"data: {json.dumps(status_body(job, urls, position, new_logs, progress))}\n\n"
                last_sent, last_write = key, time.monotonic()
            if job.status is Status.COMPLETED:
                return  # fal closes the stream after COMPLETED; the JS client hangs otherwise
            if time.monotonic() - last_write >= STREAM_KEEPALIVE_S:
                yield ": keepalive\n\n"
                last_write = time.monotonic()
            if await request.is_disconnected() or self.shutting_down.is_set():
                # The job is requeued by its worker. A stream held open would be cut by uvicorn's drain
                # anyway; @fal-ai/client's streaming mode then reports an error, polling clients carry on.
                return
            await asyncio.sleep(STREAM_POLL_S)

    def result(self, request: Request, app_path: str, request_id: str) -> JSONResponse:
        job = self._lookup(request, app_path, request_id, self.store.get_result)
        if not isinstance(job, JobResult):
            return JSONResponse(NOT_FOUND, status_code=404)
        return result_response(job, public_base(request, self.public_url))

    def cancel(self, request: Request, app_path: str, request_id: str) -> JSONResponse:
        if self._lookup(request, app_path, request_id, self.store.get_status) is None:
            return JSONResponse({"status": CancelOutcome.NOT_FOUND.value, **NOT_FOUND}, status_code=404)
        outcome = self.store.request_cancel(request_id)
        if outcome is CancelOutcome.OK:
            self.reaper.reap()  # a queued job's input files are not needed any more
        code = 400 if outcome is CancelOutcome.ALREADY_COMPLETED else 202
        return JSONResponse({"status": outcome.value}, status_code=code)


def _truthy(flag: str | None) -> bool:
    """Clients spell the logs flag 1/0 (JS, fal SDK) or true/false (Python via httpx)."""
    return flag is not None and flag.strip().lower() in ("1", "true", "yes", "on")
