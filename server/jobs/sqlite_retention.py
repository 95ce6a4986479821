"""Expiry queries in the job store's SQLite file (server/jobs/sqlite.py), for
server/api/background/retention.py."""

from __future__ import annotations

from server.jobs.model import Job, Status
from server.jobs.sqlite_db import SELECT_JOBS, SqliteDatabase, row_to_job

# ------------------------------------------------------------------------------------------------------------
# Retention (server/api/background/retention.py). Finds and deletes finished jobs past their TTL: the job
# row, its logs and any webhook delivery row. Only COMPLETED jobs are ever deleted, whatever the caller
# passes.
# ------------------------------------------------------------------------------------------------------------


class SqliteRetentionQueries:
    """server/jobs/store.py's RetentionQueries over the job store's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def expired(self, completed_before: float, limit: int = 500) -> list[Job]:
        rows = self.db.conn().execute(
            f"{SELECT_JOBS} WHERE jobs.status = ? AND jobs.completed_at < ?"
            " ORDER BY jobs.completed_at LIMIT ?",
            (Status.COMPLETED, completed_before, limit),
        ).fetchall()
        return [row_to_job(r) for r in rows]

    def delete_completed(self, job_ids: list[str]) -> int:
        """Delete these jobs if they are COMPLETED, with their logs; returns how many jobs went."""
        deleted = 0
        with self.db.transaction() as conn:
            for job_id in job_ids:
                cur = conn.execute("DELETE FROM jobs WHERE id = ? AND status = ?", (job_id, Status.COMPLETED))
                if cur.rowcount != 1:
                    continue
                deleted += 1
                conn.execute("DELETE FROM logs WHERE job_id = ?", (job_id,))
                conn.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))
                conn.execute("DELETE FROM webhook_deliveries WHERE job_id = ?", (job_id,))
                conn.execute("DELETE FROM job_progress WHERE job_id = ?", (job_id,))
        return deleted

    def references(self, text: str) -> bool:
        """Whether any remaining job mentions `text` in its input or output (e.g. a file token)."""
        row = self.db.conn().execute(
            "SELECT 1 FROM job_inputs WHERE instr(input, ?) > 0 UNION ALL"
            " SELECT 1 FROM jobs WHERE instr(input, ?) > 0 OR instr(output, ?) > 0 LIMIT 1",
            (text, text, text),
        ).fetchone()
        return row is not None

    def is_active(self, job_id: str) -> bool:
        row = self.db.conn().execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is not None and row["status"] != Status.COMPLETED
