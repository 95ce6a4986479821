"""server/jobs/telemetry.py's Telemetry in the job store's SQLite file (server/jobs/sqlite.py)."""

from __future__ import annotations

import json
import time
from typing import Any

from server.jobs.model import Status
from server.jobs.sqlite_db import SqliteDatabase
from server.jobs.telemetry import FinishedJob, SubmittedJob

TELEMETRY_SCHEMA = """
-- resolution: the request's, copied from its input at the first progress write (the input is deleted when
-- the job completes, server/jobs/store.py), for /metrics' labels.
CREATE TABLE IF NOT EXISTS job_progress (
    job_id      TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    resolution  TEXT,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS worker_stats (
    worker_id   TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_completed_at ON jobs (completed_at);
CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at);
"""


class SqliteTelemetry:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self.db.conn().execute(
            "INSERT INTO job_progress (job_id, data, resolution, updated_at) VALUES (?, ?,"
            " (SELECT json_extract(input, '$.resolution') FROM job_inputs WHERE job_id = ?), ?)"
            " ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at,"
            " resolution = COALESCE(job_progress.resolution, excluded.resolution)",
            (job_id, json.dumps(progress), job_id, time.time()),
        )

    def progress(self, job_id: str) -> dict[str, Any] | None:
        row = self.db.conn().execute("SELECT data FROM job_progress WHERE job_id = ?", (job_id,)).fetchone()
        return json.loads(row["data"]) if row else None

    def set_worker_stats(self, worker_id: str, stats: dict[str, Any]) -> None:
        self.db.conn().execute(
            "INSERT INTO worker_stats (worker_id, data, updated_at) VALUES (?, ?, ?) ON CONFLICT (worker_id)"
            " DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            (worker_id, json.dumps(stats), time.time()),
        )

    def worker_stats(self) -> dict[str, dict[str, Any]]:
        rows = self.db.conn().execute("SELECT worker_id, data FROM worker_stats").fetchall()
        return {r["worker_id"]: json.loads(r["data"]) for r in rows}

    def queued_by_priority(self) -> dict[int, int]:
        rows = self.db.conn().execute(
            "SELECT priority, COUNT(*) AS n FROM jobs WHERE status = ? GROUP BY priority", (Status.IN_QUEUE,),
        ).fetchall()
        return {r["priority"]: r["n"] for r in rows}

    def finished_since(self, after: float, limit: int = 1000) -> list[FinishedJob]:
        rows = self.db.conn().execute(
            "SELECT j.id, j.endpoint, j.created_at, j.started_at, j.completed_at, j.error_type,"
            " p.resolution, p.data AS progress"
            " FROM jobs j LEFT JOIN job_progress p ON p.job_id = j.id"
            " WHERE j.status = ? AND j.completed_at >= ? ORDER BY j.completed_at LIMIT ?",
            (Status.COMPLETED, after, limit),
        ).fetchall()
        return [FinishedJob(r["id"], r["endpoint"], r["created_at"], r["started_at"], r["completed_at"],
                            r["error_type"], r["resolution"],
                            json.loads(r["progress"]) if r["progress"] else None) for r in rows]

    def submitted_since(self, after: float, limit: int = 1000) -> list[SubmittedJob]:
        rows = self.db.conn().execute(
            "SELECT id, endpoint, created_at FROM jobs WHERE created_at >= ? ORDER BY created_at LIMIT ?",
            (after, limit),
        ).fetchall()
        return [SubmittedJob(r["id"], r["endpoint"], r["created_at"]) for r in rows]
