"""What the workers report besides results, read by the API process: a running job's progress, each
worker's own figures (GPU memory), and the queries /metrics counts from.

The API process never imports torch, so worker-side figures travel through the job store like everything
else a worker says (server/jobs/store.py: `store.telemetry`). Every backend implements `Telemetry`;
tests/jobs/test_telemetry.py runs the same checks against each.

Guarantees:
- `progress(job_id)` is the last dict `set_progress` stored for it (a later write replaces it whole), or
  None; it lives as long as the job (retention deletes both).
- `worker_stats()` holds the last dict each worker stored, keyed by worker id.
- `finished_since(after)` lists the COMPLETED jobs whose `completed_at` is >= `after`, oldest first, each
  with its endpoint, timings, error type, requested resolution and last progress; `submitted_since`
  likewise by `created_at`. Callers keep their own cursor (a job at the boundary may come twice: dedupe
  by id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class FinishedJob:
    id: str
    endpoint: str
    created_at: float
    started_at: float | None
    completed_at: float
    error_type: str | None
    resolution: str | None
    progress: dict[str, Any] | None


@dataclass(frozen=True)
class SubmittedJob:
    id: str
    endpoint: str
    created_at: float


class Telemetry(Protocol):
    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None: ...

    def progress(self, job_id: str) -> dict[str, Any] | None: ...

    def set_worker_stats(self, worker_id: str, stats: dict[str, Any]) -> None: ...

    def worker_stats(self) -> dict[str, dict[str, Any]]: ...

    def queued_by_priority(self) -> dict[int, int]:
        """Queued jobs per priority (0 = high); priorities with none are absent."""
        ...

    def finished_since(self, after: float, limit: int = 1000) -> list[FinishedJob]: ...

    def submitted_since(self, after: float, limit: int = 1000) -> list[SubmittedJob]: ...
