"""server/jobs/telemetry.py's Telemetry for the in-memory store (server/jobs/memory.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from server.jobs.model import Status
from server.jobs.telemetry import FinishedJob, SubmittedJob

if TYPE_CHECKING:
    from server.jobs.memory import MemoryJobStore


class MemoryTelemetry:
    def __init__(self, store: MemoryJobStore) -> None:
        self.store = store
        self.progress_of: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        # The request's resolution, kept from the first progress write: a finished job's input is dropped.
        self.resolution_of: dict[str, str | None] = {}

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self.store.lock:
            self.progress_of[job_id] = json.loads(json.dumps(progress))
            job = self.store.jobs.get(job_id)
            if self.resolution_of.get(job_id) is None and job is not None:
                self.resolution_of[job_id] = _resolution(job.input)

    def progress(self, job_id: str) -> dict[str, Any] | None:
        with self.store.lock:
            value = self.progress_of.get(job_id)
            return json.loads(json.dumps(value)) if value is not None else None

    def set_worker_stats(self, worker_id: str, stats: dict[str, Any]) -> None:
        with self.store.lock:
            self.stats[worker_id] = json.loads(json.dumps(stats))

    def worker_stats(self) -> dict[str, dict[str, Any]]:
        with self.store.lock:
            return {k: dict(v) for k, v in self.stats.items()}

    def queued_by_priority(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        with self.store.lock:
            for job in self.store.jobs.values():
                if job.status is Status.IN_QUEUE:
                    counts[job.priority] = counts.get(job.priority, 0) + 1
        return counts

    def finished_since(self, after: float, limit: int = 1000) -> list[FinishedJob]:
        with self.store.lock:
            done = sorted((j for j in self.store.jobs.values() if j.status is Status.COMPLETED
                           and j.completed_at is not None and j.completed_at >= after),
                          key=lambda j: j.completed_at or 0.0)[:limit]
            return [FinishedJob(j.id, j.endpoint, j.created_at, j.started_at, j.completed_at or 0.0,
                                j.error.error_type if j.error else None, self.resolution_of.get(j.id),
                                self.progress(j.id)) for j in done]

    def submitted_since(self, after: float, limit: int = 1000) -> list[SubmittedJob]:
        with self.store.lock:
            jobs = sorted((j for j in self.store.jobs.values() if j.created_at >= after),
                          key=lambda j: j.created_at)[:limit]
            return [SubmittedJob(j.id, j.endpoint, j.created_at) for j in jobs]

    def forget(self, job_id: str) -> None:
        self.progress_of.pop(job_id, None)
        self.resolution_of.pop(job_id, None)


def _resolution(payload: dict[str, Any]) -> str | None:
    value = payload.get("resolution")
    return value if isinstance(value, str) else None
