"""An in-memory JobStore for one process: protocol tests run the API against it without a worker or a model.

It passes the same contract suite as SQLite (tests/jobs/contract.py), so what the API answers from it is
what it answers from a real store. One lock serialises every call, which gives claims their exclusivity.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

from server.contract.capacity import CapacityTable
from server.contract.errors import JobError, cancelled_error, start_timeout_error, worker_lost_error
from server.jobs.memory_telemetry import MemoryTelemetry
from server.jobs.model import (
    PRIORITIES,
    CancelOutcome,
    Job,
    JobResult,
    JobStatus,
    LogEntry,
    Status,
    WebhookDelivery,
)


class MemoryJobStore:
    """server/jobs/store.py's JobStore in dicts; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.log_entries: dict[str, list[LogEntry]] = {}
        self.worker_rows: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, WebhookDelivery] = {}
        self._last_seq = 0
        self._last_log_id = 0
        self._webhooks = MemoryWebhookOutbox(self)
        self._retention = MemoryRetentionQueries(self)
        self._telemetry = MemoryTelemetry(self)

    @property
    def telemetry(self) -> MemoryTelemetry:
        return self._telemetry

    @property
    def webhooks(self) -> MemoryWebhookOutbox:
        return self._webhooks

    @property
    def retention(self) -> MemoryRetentionQueries:
        return self._retention

    def close(self) -> None:
        pass  # nothing held outside this object

    # -- submit and read -------------------------------------------------------------------------------

    def submit(self, endpoint: str, payload: dict[str, Any], *, public_base: str,
               priority: int = PRIORITIES["normal"], webhook_url: str | None = None,
               start_deadline: float | None = None) -> Job:
        with self.lock:
            self._last_seq += 1
            job = Job(id=str(uuid.uuid4()), seq=self._last_seq, endpoint=endpoint,
                      input=json.loads(json.dumps(payload)), status=Status.IN_QUEUE, priority=priority,
                      public_base=public_base, webhook_url=webhook_url, start_deadline=start_deadline,
                      created_at=time.time(), started_at=None, completed_at=None, attempts=0, worker_id=None,
                      cancel_requested=False, output=None, error=None)
            self.jobs[job.id] = job
            return job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def get_status(self, job_id: str) -> JobStatus | None:
        job = self.get(job_id)
        return job.summary if job else None

    def get_result(self, job_id: str) -> JobResult | None:
        job = self.get(job_id)
        return job.result if job else None

    def queue_position(self, job: Job | JobStatus) -> int:
        with self.lock:
            return sum(1 for other in self._queued() if (other.priority, other.seq) < (job.priority, job.seq))

    def count_queued(self) -> int:
        with self.lock:
            return len(self._queued())

    def _queued(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.status is Status.IN_QUEUE]

    # -- logs ------------------------------------------------------------------------------------------

    def add_log(self, job_id: str, message: str, level: str = "INFO") -> None:
        with self.lock:
            self._last_log_id += 1
            self.log_entries.setdefault(job_id, []).append(LogEntry(self._last_log_id, time.time(), level,
                                                                    message))

    def logs(self, job_id: str, after_id: int = 0) -> list[LogEntry]:
        with self.lock:
            return [e for e in self.log_entries.get(job_id, []) if e.id > after_id]

    # -- cancel ----------------------------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> CancelOutcome:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return CancelOutcome.NOT_FOUND
            if job.status is Status.COMPLETED:
                return CancelOutcome.ALREADY_COMPLETED
            if job.status is Status.IN_QUEUE:
                self._write_error(job_id, cancelled_error(), None)
                return CancelOutcome.OK
            self.jobs[job_id] = replace(job, cancel_requested=True)
            return CancelOutcome.CANCELLATION_REQUESTED

    def is_cancel_requested(self, job_id: str) -> bool:
        job = self.get(job_id)
        return job is not None and job.cancel_requested

    # -- worker side -----------------------------------------------------------------------------------

    def claim(self, worker_id: str) -> Job | None:
        now = time.time()
        with self.lock:
            self._expire(now)
            queued = self._queued()
            if not queued:
                return None
            job = min(queued, key=lambda j: (j.priority, j.seq))
            claimed = replace(job, status=Status.IN_PROGRESS, worker_id=worker_id, started_at=now,
                              attempts=job.attempts + 1)
            self.jobs[job.id] = claimed
            return claimed

    def expire_start_deadlines(self, now: float | None = None) -> list[str]:
        with self.lock:
            return self._expire(time.time() if now is None else now)

    def _expire(self, now: float) -> list[str]:
        expired = [job.id for job in self._queued()
                   if job.start_deadline is not None and job.start_deadline < now]
        for job_id in expired:
            self._write_error(job_id, start_timeout_error(), None)
        return expired

    def complete(self, job_id: str, worker_id: str, output: dict[str, Any]) -> bool:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.status is not Status.IN_PROGRESS or job.worker_id != worker_id:
                return False
            self.jobs[job_id] = replace(job, status=Status.COMPLETED, output=json.loads(json.dumps(output)),
                                        completed_at=time.time(), input={})
            return True

    def fail(self, job_id: str, worker_id: str | None, error: JobError) -> bool:
        with self.lock:
            return self._write_error(job_id, error, worker_id)

    def requeue(self, job_id: str, worker_id: str, *, count_attempt: bool) -> bool:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.status is not Status.IN_PROGRESS or job.worker_id != worker_id:
                return False
            # Attempts are counted when a job is claimed; a requeue that must not spend one gives it back.
            attempts = job.attempts if count_attempt else max(job.attempts - 1, 0)
            self.jobs[job_id] = replace(job, status=Status.IN_QUEUE, worker_id=None, started_at=None,
                                        attempts=attempts)
            return True

    def release(self, worker_id: str) -> list[str]:
        with self.lock:
            ids = [job.id for job in self.jobs.values() if job.status is Status.IN_PROGRESS
                   and job.worker_id == worker_id and not job.cancel_requested]
            for job_id in ids:
                self.requeue(job_id, worker_id, count_attempt=False)
            return ids

    def recover_orphans(self, live_worker_ids: set[str], max_attempts: int) -> list[str]:
        touched: list[str] = []
        with self.lock:
            for job in list(self.jobs.values()):
                if job.status is not Status.IN_PROGRESS or job.worker_id in live_worker_ids:
                    continue
                touched.append(job.id)
                if job.cancel_requested:
                    self._write_error(job.id, cancelled_error(), None)
                elif job.attempts >= max_attempts:
                    self._write_error(job.id, worker_lost_error(job.attempts), None)
                else:
                    self.jobs[job.id] = replace(job, status=Status.IN_QUEUE, worker_id=None, started_at=None)
        return touched

    def _write_error(self, job_id: str, error: JobError, worker_id: str | None) -> bool:
        """Terminal failure; only from a non-terminal state, and only by the owning worker if one is named."""
        job = self.jobs.get(job_id)
        if job is None or job.status is Status.COMPLETED:
            return False
        if worker_id is not None and job.worker_id != worker_id:
            return False
        self.jobs[job_id] = replace(job, status=Status.COMPLETED, error=error, completed_at=time.time(),
                                    input={})
        return True

    # -- worker registry -------------------------------------------------------------------------------

    def set_worker_state(self, worker_id: str, pid: int, state: str, model: str | None = None,
                         detail: str | None = None, capacity: CapacityTable | None = None) -> None:
        with self.lock:
            self.worker_rows[worker_id] = {"id": worker_id, "pid": pid, "state": state, "model": model,
                                           "detail": detail, "heartbeat": time.time(),
                                           "capacity": copy.deepcopy(capacity)}

    def heartbeat(self, worker_id: str) -> None:
        with self.lock:
            if worker_id in self.worker_rows:
                self.worker_rows[worker_id]["heartbeat"] = time.time()

    def workers(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(self.worker_rows[k]) for k in sorted(self.worker_rows)]

    def clear_workers(self) -> None:
        with self.lock:
            self.worker_rows.clear()

    def remove_worker(self, worker_id: str) -> None:
        with self.lock:
            self.worker_rows.pop(worker_id, None)


class MemoryWebhookOutbox:
    """server/jobs/store.py's WebhookOutbox over a MemoryJobStore's dicts."""

    def __init__(self, store: MemoryJobStore) -> None:
        self.store = store

    def enqueue_completed(self, max_age_s: float) -> int:
        now = time.time()
        created = 0
        with self.store.lock:
            for job in self.store.jobs.values():
                if (job.status is Status.COMPLETED and job.webhook_url is not None and job.completed_at
                        is not None and job.completed_at >= now - max_age_s
                        and job.id not in self.store.deliveries):
                    self.store.deliveries[job.id] = WebhookDelivery(job.id, "pending", 0, now, None, None)
                    created += 1
        return created

    def due(self, limit: int = 20) -> list[WebhookDelivery]:
        now = time.time()
        with self.store.lock:
            pending = [d for d in self.store.deliveries.values() if d.state == "pending" and d.next_at <= now]
        return sorted(pending, key=lambda d: d.next_at)[:limit]

    def get(self, job_id: str) -> WebhookDelivery | None:
        with self.store.lock:
            return self.store.deliveries.get(job_id)

    def mark_delivered(self, job_id: str, status_code: int) -> None:
        with self.store.lock:
            if (d := self.store.deliveries.get(job_id)) is not None:
                self.store.deliveries[job_id] = replace(d, state="delivered", attempts=d.attempts + 1,
                                                        last_status=status_code, last_error=None)

    def mark_failed_attempt(self, job_id: str, status_code: int | None, error: str,
                            next_at: float | None) -> None:
        with self.store.lock:
            if (d := self.store.deliveries.get(job_id)) is not None:
                self.store.deliveries[job_id] = replace(
                    d, state="pending" if next_at is not None else "failed", attempts=d.attempts + 1,
                    last_status=status_code, last_error=error[:500],
                    next_at=next_at if next_at is not None else d.next_at)


class MemoryRetentionQueries:
    """server/jobs/store.py's RetentionQueries over a MemoryJobStore's dicts."""

    def __init__(self, store: MemoryJobStore) -> None:
        self.store = store

    def expired(self, completed_before: float, limit: int = 500) -> list[Job]:
        with self.store.lock:
            done = [j for j in self.store.jobs.values() if j.status is Status.COMPLETED
                    and j.completed_at is not None and j.completed_at < completed_before]
        return sorted(done, key=lambda j: j.completed_at or 0.0)[:limit]

    def delete_completed(self, job_ids: list[str]) -> int:
        deleted = 0
        with self.store.lock:
            for job_id in job_ids:
                job = self.store.jobs.get(job_id)
                if job is None or job.status is not Status.COMPLETED:
                    continue
                del self.store.jobs[job_id]
                self.store.log_entries.pop(job_id, None)
                self.store.deliveries.pop(job_id, None)
                self.store.telemetry.forget(job_id)
                deleted += 1
        return deleted

    def references(self, text: str) -> bool:
        # The same text SQLite searches (server/jobs/sqlite_retention.py): the JSON of input and output.
        with self.store.lock:
            return any(text in json.dumps(j.input) or (j.output is not None and text in json.dumps(j.output))
                       for j in self.store.jobs.values())

    def is_active(self, job_id: str) -> bool:
        job = self.store.get(job_id)
        return job is not None and job.status is not Status.COMPLETED
