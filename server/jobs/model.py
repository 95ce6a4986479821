"""The job store's data types, shared by the API process and the workers: no SQL, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from server.contract.errors import JobError


class Status(StrEnum):
    """The only three states fal's clients accept (anything else makes fal-client raise)."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


class CancelOutcome(StrEnum):
    """fal's cancel answers."""

    OK = "OK"
    CANCELLATION_REQUESTED = "CANCELLATION_REQUESTED"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    NOT_FOUND = "NOT_FOUND"


PRIORITIES = {"high": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class JobStatus:
    """What status polls need, read without the (possibly megabytes of) input and output JSON."""

    id: str
    seq: int
    status: Status
    priority: int
    started_at: float | None
    completed_at: float | None
    error_message: str | None
    error_type: str | None

    @property
    def inference_time(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.started_at


@dataclass(frozen=True)
class JobResult:
    """What result polls answer with: the status, the output and the error, read without the input."""

    id: str
    status: Status
    output: dict[str, Any] | None
    error: JobError | None


@dataclass(frozen=True)
class Job:
    id: str
    seq: int
    endpoint: str
    input: dict[str, Any]
    status: Status
    priority: int
    public_base: str
    webhook_url: str | None
    start_deadline: float | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    attempts: int
    worker_id: str | None
    cancel_requested: bool
    output: dict[str, Any] | None
    error: JobError | None

    @property
    def summary(self) -> JobStatus:
        error = self.error
        return JobStatus(self.id, self.seq, self.status, self.priority, self.started_at, self.completed_at,
                         error.message if error else None, error.error_type if error else None)

    @property
    def inference_time(self) -> float | None:
        return self.summary.inference_time

    @property
    def result(self) -> JobResult:
        return JobResult(self.id, self.status, self.output, self.error)


@dataclass(frozen=True)
class LogEntry:
    id: int
    ts: float
    level: str
    message: str


@dataclass(frozen=True)
class WebhookDelivery:
    job_id: str
    state: str
    attempts: int
    next_at: float
    last_status: int | None
    last_error: str | None
