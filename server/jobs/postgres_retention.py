"""Expiry queries in the job store's PostgreSQL database (server/jobs/postgres.py), for
server/api/background/retention.py. Every API replica may sweep: a delete of what another replica already
deleted changes nothing. Only COMPLETED jobs are ever deleted, whatever the caller passes."""

from __future__ import annotations

from server.jobs.model import Job, Status
from server.jobs.postgres_db import PostgresDatabase, row_to_job


class PostgresRetentionQueries:
    """server/jobs/store.py's RetentionQueries over the job store's PostgreSQL database."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def expired(self, completed_before: float, limit: int = 500) -> list[Job]:
        rows = self.db.fetchall(
            "SELECT * FROM vace_jobs WHERE status = %s AND completed_at < %s ORDER BY completed_at LIMIT %s",
            (Status.COMPLETED, completed_before, limit))
        return [row_to_job(r) for r in rows]

    def delete_completed(self, job_ids: list[str]) -> int:
        with self.db.transaction() as conn:
            rows = conn.execute("DELETE FROM vace_jobs WHERE id = ANY(%s) AND status = %s RETURNING id",
                                (job_ids, Status.COMPLETED)).fetchall()
            gone = [r["id"] for r in rows]
            if gone:
                conn.execute("DELETE FROM vace_logs WHERE job_id = ANY(%s)", (gone,))
                conn.execute("DELETE FROM vace_webhook_deliveries WHERE job_id = ANY(%s)", (gone,))
                conn.execute("DELETE FROM vace_job_progress WHERE job_id = ANY(%s)", (gone,))
        return len(gone)

    def references(self, text: str) -> bool:
        row = self.db.fetchone("SELECT 1 AS hit FROM vace_jobs WHERE strpos(input, %s) > 0"
                               " OR strpos(output, %s) > 0 LIMIT 1", (text, text))
        return row is not None

    def is_active(self, job_id: str) -> bool:
        row = self.db.fetchone("SELECT status FROM vace_jobs WHERE id = %s", (job_id,))
        return row is not None and row["status"] != Status.COMPLETED
