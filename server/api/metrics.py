"""/metrics in Prometheus' text format (prometheus-client), counted from the job store.

Jobs end in worker processes (or here: a queued job cancelled, a start deadline passed), and the API process
never imports torch, so every figure is read from the store when Prometheus scrapes: new submissions and
finished jobs since the last scrape (server/jobs/telemetry.py) feed the counters and histograms; queue
depth, worker states and each worker's GPU memory (reported with its heartbeat) are read as they are now.
Counters start at zero with the process, as Prometheus expects of a restarted target. Webhook outcomes are
counted as the dispatcher records them (`CountingOutbox`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from server.contract.endpoints import APP_ID
from server.jobs.model import PRIORITIES, WebhookDelivery
from server.jobs.store import JobStore, WebhookOutbox

# A job that commits after a later one (clocks of several processes) still lands inside this window.
LOOKBACK_S = 30.0
CANCELLED = "client_cancelled"
PRIORITY_NAMES = {number: name for name, number in PRIORITIES.items()}
# From a tiny CPU job (seconds) to a 720p 14B job on one GPU (tens of minutes).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)
__all__ = ["CONTENT_TYPE_LATEST", "CountingOutbox", "Metrics"]
# The *_created series (a timestamp per label set) double the output and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        started = time.time()
        self._submitted_cursor = started
        self._finished_cursor = started
        self._seen_submitted: dict[str, float] = {}
        self._seen_finished: dict[str, float] = {}
        r = self.registry
        self.submitted = Counter("vace_requests_submitted", "Requests queued", ["endpoint"], registry=r)
        self.completed = Counter("vace_requests_completed", "Requests that produced an output", ["endpoint"],
                                 registry=r)
        self.failed = Counter("vace_requests_failed", "Requests that ended in an error (cancellations "
                              "excluded)", ["endpoint", "error_type"], registry=r)
        self.cancelled = Counter("vace_requests_cancelled", "Requests cancelled by their client",
                                 ["endpoint"], registry=r)
        self.queue_depth = Gauge("vace_queue_depth", "Requests waiting in the queue", ["priority"],
                                 registry=r)
        self.duration = Histogram("vace_job_duration_seconds", "Start to finish of successful requests",
                                  ["endpoint", "resolution"], buckets=DURATION_BUCKETS, registry=r)
        self.step = Histogram("vace_step_seconds", "Seconds per denoising step", ["endpoint", "resolution"],
                              buckets=STEP_BUCKETS, registry=r)
        self.forwards = Counter("vace_transformer_forwards", "Transformer forwards of finished jobs: "
                                "computed, or reused from the step cache (acceleration)",
                                ["endpoint", "outcome"], registry=r)
        self.worker_state = Gauge("vace_worker_state", "1 for each worker's current state",
                                  ["worker", "state"], registry=r)
        self.gpu_in_use = Gauge("vace_worker_gpu_memory_bytes", "GPU memory allocated by the worker",
                                ["worker"], registry=r)
        self.gpu_peak = Gauge("vace_worker_gpu_memory_peak_bytes", "Peak GPU memory allocated by the worker "
                              "since it started", ["worker"], registry=r)
        self.webhooks = Counter("vace_webhook_deliveries", "Webhook delivery attempts by outcome "
                                "(delivered, retry, failed)", ["outcome"], registry=r)
        for name in PRIORITIES:
            self.queue_depth.labels(name).set(0)

    def render(self) -> bytes:
        with self._lock:
            self._count_new_jobs()
            self._read_current_state()
            return generate_latest(self.registry)

    def _count_new_jobs(self) -> None:
        telemetry = self.store.telemetry
        for job in telemetry.submitted_since(self._submitted_cursor - LOOKBACK_S, limit=100_000):
            if job.id in self._seen_submitted:
                continue
            self._seen_submitted[job.id] = job.created_at
            self._submitted_cursor = max(self._submitted_cursor, job.created_at)
            self.submitted.labels(endpoint_label(job.endpoint)).inc()
        for done in telemetry.finished_since(self._finished_cursor - LOOKBACK_S, limit=100_000):
            if done.id in self._seen_finished:
                continue
            self._seen_finished[done.id] = done.completed_at
            self._finished_cursor = max(self._finished_cursor, done.completed_at)
            resolution = done.resolution or "unknown"
            endpoint = endpoint_label(done.endpoint)
            if done.error_type == CANCELLED:
                self.cancelled.labels(endpoint).inc()
            elif done.error_type is not None:
                self.failed.labels(endpoint, done.error_type).inc()
            else:
                self.completed.labels(endpoint).inc()
                if done.started_at is not None:
                    took = done.completed_at - done.started_at
                    self.duration.labels(endpoint, resolution).observe(took)
            for seconds in _step_seconds(done.progress):
                self.step.labels(endpoint, resolution).observe(seconds)
            for outcome, count in _forwards(done.progress).items():
                self.forwards.labels(endpoint, outcome).inc(count)
        _prune(self._seen_submitted, self._submitted_cursor - LOOKBACK_S)
        _prune(self._seen_finished, self._finished_cursor - LOOKBACK_S)

    def _read_current_state(self) -> None:
        queued = self.store.telemetry.queued_by_priority()
        for number, name in PRIORITY_NAMES.items():
            self.queue_depth.labels(name).set(queued.get(number, 0))
        self.worker_state.clear()
        for worker in self.store.workers():
            self.worker_state.labels(worker["id"], worker["state"]).set(1)
        self.gpu_in_use.clear()
        self.gpu_peak.clear()
        for worker_id, stats in self.store.telemetry.worker_stats().items():
            if isinstance(stats.get("gpu_memory_bytes"), int):
                self.gpu_in_use.labels(worker_id).set(stats["gpu_memory_bytes"])
            if isinstance(stats.get("gpu_memory_peak_bytes"), int):
                self.gpu_peak.labels(worker_id).set(stats["gpu_memory_peak_bytes"])


class CountingOutbox:
    """The webhook dispatcher's outbox with each recorded attempt counted in `Metrics.webhooks`."""

    def __init__(self, outbox: WebhookOutbox, metrics: Metrics) -> None:
        self.outbox = outbox
        self.counter = metrics.webhooks

    def enqueue_completed(self, max_age_s: float) -> int:
        return self.outbox.enqueue_completed(max_age_s)

    def due(self, limit: int = 20) -> list[WebhookDelivery]:
        return self.outbox.due(limit)

    def get(self, job_id: str) -> WebhookDelivery | None:
        return self.outbox.get(job_id)

    def mark_delivered(self, job_id: str, status_code: int) -> None:
        self.outbox.mark_delivered(job_id, status_code)
        self.counter.labels("delivered").inc()

    def mark_failed_attempt(self, job_id: str, status_code: int | None, error: str,
                            next_at: float | None) -> None:
        self.outbox.mark_failed_attempt(job_id, status_code, error, next_at)
        self.counter.labels("retry" if next_at is not None else "failed").inc()


def endpoint_label(endpoint: str) -> str:
    """`fal-ai/wan-vace-14b/depth` -> `depth`; the app's own root endpoint -> `root`."""
    return "root" if endpoint == APP_ID else endpoint.removeprefix(APP_ID + "/")


def _step_seconds(progress: dict[str, Any] | None) -> list[float]:
    """The per-step timings a worker left in the job's final progress (server/worker/progress.py)."""
    values = (progress or {}).get("step_seconds")
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, int | float) and v >= 0]


def _forwards(progress: dict[str, Any] | None) -> dict[str, int]:
    """The transformer forwards a worker counted for the job (server/worker/progress.py), by outcome."""
    values = (progress or {}).get("forwards")
    if not isinstance(values, dict):
        return {}
    return {k: v for k, v in values.items() if k in ("computed", "reused") and isinstance(v, int) and v >= 0}


def _prune(seen: dict[str, float], before: float) -> None:
    for job_id in [k for k, ts in seen.items() if ts < before]:
        del seen[job_id]
