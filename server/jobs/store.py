"""The job store's interface, shared by every backend (server/jobs/sqlite.py, postgres.py, memory.py).

One store object (`JobStore`) carries the jobs, their logs and the worker registry; the two bookkeeping
concerns that live next to the jobs but have their own callers hang off it as attributes:
`store.webhooks` (a `WebhookOutbox`, for server/api/background/webhooks.py), `store.retention`
(`RetentionQueries`, for server/api/background/retention.py) and `store.telemetry` (server/jobs/telemetry.py:
progress, worker figures, /metrics). Sub-objects rather than one flat Protocol,
because their names would collide (`get` a job vs a delivery) and each caller needs only its own part.
tests/jobs/contract.py checks every statement below against every backend.

Guarantees, stated plainly:
- Queue order is priority (0 = high first), then submit order. `queue_position` counts the queued jobs that
  will be claimed before this one.
- A job is claimed by at most one worker at a time: `claim` hands a queued job to exactly one caller.
- Execution is at-least-once with bounded attempts: every claim counts an attempt; a job whose worker
  died is requeued by `recover_orphans` until it has used `max_attempts`, then failed with
  `runner_disconnected`. A graceful requeue (`requeue(count_attempt=False)`, `release`) gives the attempt
  back. So a job may run more than once; it never runs more than `max_attempts` times for lost workers.
- Terminal writes only by the owner: `complete`, `fail(worker_id=...)` and `requeue` succeed only while
  the job is IN_PROGRESS and claimed by that worker (this claim: a requeued job's old worker lost it).
  They return False otherwise, so a stale worker never reports a second result.
- A job completes once: nothing moves a COMPLETED job again (no second output, error or requeue).
- Cancel (`request_cancel`): unknown id -> NOT_FOUND; IN_QUEUE -> failed at once with fal's
  `client_cancelled` (499) and never started, OK; IN_PROGRESS -> flagged, CANCELLATION_REQUESTED (the
  worker polls `is_cancel_requested` and stops at the next step; if the worker is lost instead, recovery
  ends the job cancelled, never requeued); COMPLETED -> ALREADY_COMPLETED, unchanged.
- A queued job past its `start_deadline` is never started: it is failed with `request_timeout` (504) by
  `expire_start_deadlines` (the API's sweeper calls it every fraction of a second) or by the next `claim`,
  whichever comes first.
- Logs of a job are returned in the order they were added; `after_id` returns only newer ones.
- A job's input is dropped when it completes (success, failure, cancel, expiry: every move to COMPLETED):
  `get` returns it as `{}` from then on. Nothing reads a finished job's input (result, status and webhooks
  answer from the output and error), and a client that submits and cancels large inputs must not grow the
  store with them.
- A write that fails because the disk (or quota) is full raises OSError with errno ENOSPC and changes nothing;
  the API answers it as a 507 (server/api/responses.py).
- Result, status and cancel polls never read the input: `get_result` and `get_status` read only the
  columns they answer with (docs/fal-protocol.md §2's polls run at up to 10 Hz per client).
Nothing here knows about HTTP, the model, or a storage engine: payloads are JSON-able dicts, times are
`time.time()` seconds.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from server.contract.capacity import CapacityTable
from server.contract.errors import JobError
from server.jobs.model import (
    PRIORITIES,
    CancelOutcome,
    Job,
    JobResult,
    JobStatus,
    LogEntry,
    WebhookDelivery,
)
from server.jobs.telemetry import Telemetry


class WebhookOutbox(Protocol):
    """Webhook deliveries, one per completed job that named a webhook; they survive a restart.

    A delivery is `pending` until `mark_delivered` (-> `delivered`) or a failed attempt with no next time
    (-> `failed`); each mark counts an attempt. Several dispatchers may poll `due`; the dispatcher of
    server/api/background/webhooks.py runs once per API process.
    """

    def enqueue_completed(self, max_age_s: float) -> int:
        """Create a pending delivery, due now, for each job COMPLETED within `max_age_s` that has a
        webhook and no delivery yet; returns how many were created. Idempotent."""
        ...

    def due(self, limit: int = 20) -> list[WebhookDelivery]:
        """Pending deliveries whose `next_at` has passed, soonest first."""
        ...

    def get(self, job_id: str) -> WebhookDelivery | None: ...

    def mark_delivered(self, job_id: str, status_code: int) -> None: ...

    def mark_failed_attempt(self, job_id: str, status_code: int | None, error: str,
                            next_at: float | None) -> None:
        """Record a failed attempt; retry at `next_at`, or give up for good when it is None."""
        ...


class RetentionQueries(Protocol):
    """What the retention sweeper asks. Only COMPLETED jobs are ever deleted, whatever the caller passes."""

    def expired(self, completed_before: float, limit: int = 500) -> list[Job]:
        """COMPLETED jobs that completed before the cutoff, oldest first."""
        ...

    def delete_completed(self, job_ids: list[str]) -> int:
        """Delete these jobs if COMPLETED, with their logs and webhook delivery; returns how many went."""
        ...

    def references(self, text: str) -> bool:
        """Whether any remaining job mentions `text` in its input or output (e.g. a file token)."""
        ...

    def is_active(self, job_id: str) -> bool:
        """Whether the job exists and is queued or running."""
        ...


class JobStore(Protocol):
    """Jobs, their logs and the worker registry; see the module docstring for the guarantees."""

    @property
    def webhooks(self) -> WebhookOutbox: ...

    @property
    def retention(self) -> RetentionQueries: ...

    @property
    def telemetry(self) -> Telemetry:
        """Progress, worker figures and the /metrics queries (server/jobs/telemetry.py)."""
        ...

    # -- submit and read (API process) -----------------------------------------------------------------

    def submit(self, endpoint: str, payload: dict[str, Any], *, public_base: str,
               priority: int = PRIORITIES["normal"], webhook_url: str | None = None,
               start_deadline: float | None = None) -> Job:
        """Queue a new job (IN_QUEUE, no attempts) with a fresh unique id."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def get_status(self, job_id: str) -> JobStatus | None:
        """The job without its input and output (status polls)."""
        ...

    def get_result(self, job_id: str) -> JobResult | None:
        """The job's status, output and error, without its input (result polls)."""
        ...

    def queue_position(self, job: Job | JobStatus) -> int:
        """How many queued jobs will be started before this one (0 = next)."""
        ...

    def count_queued(self) -> int: ...

    def request_cancel(self, job_id: str) -> CancelOutcome: ...

    def is_cancel_requested(self, job_id: str) -> bool: ...

    # -- logs ------------------------------------------------------------------------------------------

    def add_log(self, job_id: str, message: str, level: str = "INFO") -> None: ...

    def logs(self, job_id: str, after_id: int = 0) -> list[LogEntry]: ...

    # -- worker side -----------------------------------------------------------------------------------

    def claim(self, worker_id: str) -> Job | None:
        """Take the next queued job (after failing those past their start deadline), or None."""
        ...

    def expire_start_deadlines(self, now: float | None = None) -> list[str]:
        """Fail every queued job whose start deadline is before `now` (default: the time now) with
        `request_timeout`; returns their ids."""
        ...

    def complete(self, job_id: str, worker_id: str, output: dict[str, Any]) -> bool: ...

    def fail(self, job_id: str, worker_id: str | None, error: JobError) -> bool:
        """Terminal failure. With a worker id, only by that owner; None (the server itself) fails any job
        that is not COMPLETED yet."""
        ...

    def requeue(self, job_id: str, worker_id: str, *, count_attempt: bool) -> bool: ...

    def release(self, worker_id: str) -> list[str]:
        """Requeue a worker's running jobs without spending an attempt (the server stopped it); jobs with
        a cancel request are left to `recover_orphans`. Returns their ids."""
        ...

    def recover_orphans(self, live_worker_ids: set[str], max_attempts: int) -> list[str]:
        """Jobs IN_PROGRESS under a worker not in `live_worker_ids`: cancelled if cancel was requested,
        failed once `attempts >= max_attempts`, else requeued. Returns their ids."""
        ...

    # -- worker registry (/health) ---------------------------------------------------------------------

    def set_worker_state(self, worker_id: str, pid: int, state: str, model: str | None = None,
                         detail: str | None = None, capacity: CapacityTable | None = None) -> None:
        """Register or update a worker; every call replaces its capacity (None: no published limit)."""
        ...

    def heartbeat(self, worker_id: str) -> None: ...

    def workers(self) -> list[dict[str, Any]]:
        """One dict per worker (id, pid, state, model, detail, heartbeat, capacity), by id; `capacity` is the
        table the worker published (server/contract/capacity.py), or None."""
        ...

    def clear_workers(self) -> None: ...

    def remove_worker(self, worker_id: str) -> None: ...

    def close(self) -> None:
        """Release this process's (or thread's) resources; the jobs stay."""
        ...


@runtime_checkable
class WakesWorkers(Protocol):
    """A store that can wake idle workers when a job is queued (server/jobs/postgres.py: LISTEN/NOTIFY),
    so they need not poll it; the others are polled (server/worker/loop.py)."""

    def wait_for_jobs(self, timeout_s: float) -> None:
        """Return when a job may have been queued, or after `timeout_s`."""
        ...
