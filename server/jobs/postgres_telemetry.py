"""server/jobs/telemetry.py's Telemetry in the job store's PostgreSQL database (server/jobs/postgres.py).

Workers on every box write here and any API replica's /metrics reads it, so the figures are the whole
fleet's, not one machine's."""

from __future__ import annotations

import json
import time
from typing import Any

from server.jobs.model import Status
from server.jobs.postgres_db import PostgresDatabase
from server.jobs.telemetry import FinishedJob, SubmittedJob


class PostgresTelemetry:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO vace_job_progress (job_id, data, resolution, updated_at) VALUES (%s, %s,"
            " (SELECT input::jsonb->>'resolution' FROM vace_jobs WHERE id = %s), %s)"
            " ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at,"
            " resolution = COALESCE(vace_job_progress.resolution, excluded.resolution)",
            (job_id, json.dumps(progress), job_id, time.time()))

    def progress(self, job_id: str) -> dict[str, Any] | None:
        row = self.db.fetchone("SELECT data FROM vace_job_progress WHERE job_id = %s", (job_id,))
        return json.loads(row["data"]) if row else None

    def set_worker_stats(self, worker_id: str, stats: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO vace_worker_stats (worker_id, data, updated_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (worker_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            (worker_id, json.dumps(stats), time.time()))

    def worker_stats(self) -> dict[str, dict[str, Any]]:
        rows = self.db.fetchall("SELECT worker_id, data FROM vace_worker_stats")
        return {r["worker_id"]: json.loads(r["data"]) for r in rows}

    def queued_by_priority(self) -> dict[int, int]:
        rows = self.db.fetchall("SELECT priority, COUNT(*) AS n FROM vace_jobs WHERE status = %s"
                                " GROUP BY priority", (Status.IN_QUEUE,))
        return {int(r["priority"]): int(r["n"]) for r in rows}

    def finished_since(self, after: float, limit: int = 1000) -> list[FinishedJob]:
        rows = self.db.fetchall(
            "SELECT j.id, j.endpoint, j.created_at, j.started_at, j.completed_at, j.error_type,"
            " p.resolution, p.data AS progress"
            " FROM vace_jobs j LEFT JOIN vace_job_progress p ON p.job_id = j.id"
            " WHERE j.status = %s AND j.completed_at >= %s ORDER BY j.completed_at LIMIT %s",
            (Status.COMPLETED, after, limit))
        return [FinishedJob(r["id"], r["endpoint"], r["created_at"], r["started_at"], r["completed_at"],
                            r["error_type"], r["resolution"],
                            json.loads(r["progress"]) if r["progress"] else None) for r in rows]

    def submitted_since(self, after: float, limit: int = 1000) -> list[SubmittedJob]:
        rows = self.db.fetchall("SELECT id, endpoint, created_at FROM vace_jobs WHERE created_at >= %s"
                                " ORDER BY created_at LIMIT %s", (after, limit))
        return [SubmittedJob(r["id"], r["endpoint"], r["created_at"]) for r in rows]
