"""The SQLite job store: one file (WAL) shared by the API process and the worker processes.

It keeps server/jobs/store.py's guarantees this way: claims, cancels and recovery run in IMMEDIATE
transactions (sqlite_db.py), so read-then-write cannot race between processes; terminal writes are
UPDATEs conditional on status and worker_id, so a stale worker's write changes no row.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from server.contract.capacity import CapacityTable, capacity_json, parse_capacity
from server.contract.errors import JobError, cancelled_error, start_timeout_error, worker_lost_error
from server.jobs.model import PRIORITIES, CancelOutcome, Job, JobResult, JobStatus, LogEntry, Status
from server.jobs.sqlite_db import (
    DROPPED_INPUT,
    RESULT_COLUMNS,
    SCHEMA,
    SELECT_JOBS,
    STATUS_COLUMNS,
    SqliteDatabase,
    row_to_job,
    row_to_result,
    row_to_status,
)
from server.jobs.sqlite_retention import SqliteRetentionQueries
from server.jobs.sqlite_telemetry import TELEMETRY_SCHEMA, SqliteTelemetry
from server.jobs.sqlite_webhooks import WEBHOOK_SCHEMA, SqliteWebhookOutbox


class SqliteJobStore:
    """server/jobs/store.py's JobStore in one SQLite file; thread-safe (one connection per thread)."""

    def __init__(self, path: Path) -> None:
        self.db = SqliteDatabase(path, SCHEMA, WEBHOOK_SCHEMA, TELEMETRY_SCHEMA)
        self.db.ensure_column("workers", "capacity", "TEXT")  # files from before capacity tables
        self.path = path
        self._webhooks = SqliteWebhookOutbox(self.db)
        self._retention = SqliteRetentionQueries(self.db)
        self._telemetry = SqliteTelemetry(self.db)

    @property
    def telemetry(self) -> SqliteTelemetry:
        return self._telemetry

    @property
    def webhooks(self) -> SqliteWebhookOutbox:
        return self._webhooks

    @property
    def retention(self) -> SqliteRetentionQueries:
        return self._retention

    def close(self) -> None:
        self.db.close()

    # -- submit and read ---------------------------------------------------------------------

    def submit(
        self,
        endpoint: str,
        payload: dict[str, Any],
        *,
        public_base: str,
        priority: int = PRIORITIES["normal"],
        webhook_url: str | None = None,
        start_deadline: float | None = None,
    ) -> Job:
        job_id = str(uuid.uuid4())
        now = time.time()
        with self.db.transaction() as conn:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            conn.execute(
                "INSERT INTO jobs (id, seq, endpoint, input, status, priority, public_base, webhook_url,"
                " start_deadline, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, seq, endpoint, DROPPED_INPUT, Status.IN_QUEUE, priority, public_base,
                 webhook_url, start_deadline, now),
            )
            conn.execute("INSERT INTO job_inputs (job_id, input) VALUES (?, ?)",
                         (job_id, json.dumps(payload)))
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        row = self.db.conn().execute(f"{SELECT_JOBS} WHERE jobs.id = ?", (job_id,)).fetchone()
        return row_to_job(row) if row else None

    def get_status(self, job_id: str) -> JobStatus | None:
        row = self.db.conn().execute(f"SELECT {STATUS_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row_to_status(row) if row else None

    def get_result(self, job_id: str) -> JobResult | None:
        row = self.db.conn().execute(f"SELECT {RESULT_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row_to_result(row) if row else None

    def queue_position(self, job: Job | JobStatus) -> int:
        """How many queued jobs will be started before this one (0 = next)."""
        row = self.db.conn().execute(
            "SELECT COUNT(*) FROM jobs WHERE status = ? AND (priority < ? OR (priority = ? AND seq < ?))",
            (Status.IN_QUEUE, job.priority, job.priority, job.seq),
        ).fetchone()
        return int(row[0])

    def count_queued(self) -> int:
        return int(self.db.conn().execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (Status.IN_QUEUE,))
                   .fetchone()[0])

    # -- logs ---------------------------------------------------------------------------------

    def add_log(self, job_id: str, message: str, level: str = "INFO") -> None:
        self.db.conn().execute(
            "INSERT INTO logs (job_id, ts, level, message) VALUES (?, ?, ?, ?)",
            (job_id, time.time(), level, message),
        )

    def logs(self, job_id: str, after_id: int = 0) -> list[LogEntry]:
        rows = self.db.conn().execute(
            "SELECT id, ts, level, message FROM logs WHERE job_id = ? AND id > ? ORDER BY id",
            (job_id, after_id),
        ).fetchall()
        return [LogEntry(r["id"], r["ts"], r["level"], r["message"]) for r in rows]

    # -- cancel --------------------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> CancelOutcome:
        """Queued jobs are cancelled at once; running ones are flagged and stop at the next step."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return CancelOutcome.NOT_FOUND
            status = Status(row["status"])
            if status is Status.COMPLETED:
                return CancelOutcome.ALREADY_COMPLETED
            if status is Status.IN_QUEUE:
                _write_error(conn, job_id, cancelled_error(), None)
                return CancelOutcome.OK
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return CancelOutcome.CANCELLATION_REQUESTED

    def is_cancel_requested(self, job_id: str) -> bool:
        row = self.db.conn().execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    # -- worker side ---------------------------------------------------------------------------

    def claim(self, worker_id: str) -> Job | None:
        """Take the next queued job (priority, then arrival order); expire jobs past their start deadline."""
        now = time.time()
        with self.db.transaction() as conn:
            _expire_start_deadlines(conn, now)
            row = conn.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY priority, seq LIMIT 1", (Status.IN_QUEUE,)
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = ?, worker_id = ?, started_at = ?, attempts = attempts + 1"
                " WHERE id = ?",
                (Status.IN_PROGRESS, worker_id, now, row["id"]),
            )
            job_id = row["id"]
        return self.get(job_id)

    def expire_start_deadlines(self, now: float | None = None) -> list[str]:
        """Fail the queued jobs past their start deadline (server/api/background/start_timeouts.py)."""
        now = time.time() if now is None else now
        if self.db.conn().execute(_EXPIRED, (Status.IN_QUEUE, now)).fetchone() is None:
            return []  # the usual answer: one read, no write lock taken
        with self.db.transaction() as conn:
            return _expire_start_deadlines(conn, now)

    def complete(self, job_id: str, worker_id: str, output: dict[str, Any]) -> bool:
        """Record success; False if this worker no longer owns the job (requeued or failed meanwhile)."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, output = ?, completed_at = ?, input = ? WHERE id = ?"
                " AND status = ? AND worker_id = ?",
                (Status.COMPLETED, json.dumps(output), time.time(), DROPPED_INPUT, job_id, Status.IN_PROGRESS,
                 worker_id),
            )
            if cur.rowcount != 1:
                return False
            conn.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))
            return True

    def fail(self, job_id: str, worker_id: str | None, error: JobError) -> bool:
        with self.db.transaction() as conn:
            return _write_error(conn, job_id, error, worker_id)

    def requeue(self, job_id: str, worker_id: str, *, count_attempt: bool) -> bool:
        """Give a running job back to the queue (graceful shutdown, or a lost worker with attempts left)."""
        with self.db.transaction() as conn:
            return self._requeue(conn, job_id, worker_id, count_attempt)

    @staticmethod
    def _requeue(conn: sqlite3.Connection, job_id: str, worker_id: str, count_attempt: bool) -> bool:
        # Attempts are counted when a job is claimed; a requeue that must not spend one gives it back.
        cur = conn.execute(
            "UPDATE jobs SET status = ?, worker_id = NULL, started_at = NULL,"
            " attempts = MAX(attempts - ?, 0) WHERE id = ? AND status = ? AND worker_id = ?",
            (Status.IN_QUEUE, 0 if count_attempt else 1, job_id, Status.IN_PROGRESS, worker_id),
        )
        return cur.rowcount == 1

    def release(self, worker_id: str) -> list[str]:
        """Requeue a worker's running jobs without spending an attempt: the server stopped that worker
        itself (shutdown), which says nothing about the job. Cancel requests are left to recover_orphans."""
        with self.db.transaction() as conn:
            ids = [row["id"] for row in conn.execute(
                "SELECT id FROM jobs WHERE status = ? AND worker_id = ? AND cancel_requested = 0",
                (Status.IN_PROGRESS, worker_id),
            ).fetchall()]
            for job_id in ids:
                self._requeue(conn, job_id, worker_id, count_attempt=False)
        return ids

    def recover_orphans(self, live_worker_ids: set[str], max_attempts: int) -> list[str]:
        """Jobs marked running by a worker that no longer exists: requeue, or fail once out of attempts."""
        touched: list[str] = []
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT id, worker_id, attempts, cancel_requested FROM jobs WHERE status = ?",
                (Status.IN_PROGRESS,),
            ).fetchall()
            for row in rows:
                if row["worker_id"] in live_worker_ids:
                    continue
                touched.append(row["id"])
                if row["cancel_requested"]:
                    _write_error(conn, row["id"], cancelled_error(), None)
                elif row["attempts"] >= max_attempts:
                    _write_error(conn, row["id"], worker_lost_error(row["attempts"]), None)
                else:
                    conn.execute(
                        "UPDATE jobs SET status = ?, worker_id = NULL, started_at = NULL WHERE id = ?",
                        (Status.IN_QUEUE, row["id"]),
                    )
        return touched

    # -- worker registry (for /health) ---------------------------------------------------------

    def set_worker_state(self, worker_id: str, pid: int, state: str, model: str | None = None,
                         detail: str | None = None, capacity: CapacityTable | None = None) -> None:
        self.db.conn().execute(
            "INSERT INTO workers (id, pid, state, model, detail, heartbeat, capacity)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET pid = excluded.pid,"
            " state = excluded.state, model = excluded.model, detail = excluded.detail,"
            " heartbeat = excluded.heartbeat, capacity = excluded.capacity",
            (worker_id, pid, state, model, detail, time.time(), capacity_json(capacity)),
        )

    def heartbeat(self, worker_id: str) -> None:
        self.db.conn().execute("UPDATE workers SET heartbeat = ? WHERE id = ?", (time.time(), worker_id))

    def workers(self) -> list[dict[str, Any]]:
        rows = self.db.conn().execute("SELECT * FROM workers ORDER BY id").fetchall()
        return [{**dict(r), "capacity": parse_capacity(r["capacity"])} for r in rows]

    def clear_workers(self) -> None:
        self.db.conn().execute("DELETE FROM workers")

    def remove_worker(self, worker_id: str) -> None:
        self.db.conn().execute("DELETE FROM workers WHERE id = ?", (worker_id,))


_EXPIRED = "SELECT id FROM jobs WHERE status = ? AND start_deadline IS NOT NULL AND start_deadline < ?"


def _expire_start_deadlines(conn: sqlite3.Connection, now: float) -> list[str]:
    expired = [row["id"] for row in conn.execute(_EXPIRED, (Status.IN_QUEUE, now)).fetchall()]
    for job_id in expired:
        _write_error(conn, job_id, start_timeout_error(), None)
    return expired


def _write_error(conn: sqlite3.Connection, job_id: str, error: JobError, worker_id: str | None) -> bool:
    """Terminal failure; only from a non-terminal state, and only by the owning worker if one is named."""
    sql = (
        "UPDATE jobs SET status = ?, error = ?, error_type = ?, error_status = ?, error_body = ?,"
        " completed_at = ?, input = ? WHERE id = ? AND status != ?"
    )
    params: list[Any] = [Status.COMPLETED, error.message, error.error_type, error.status_code,
                         json.dumps(error.body), time.time(), DROPPED_INPUT, job_id, Status.COMPLETED]
    if worker_id is not None:
        sql += " AND worker_id = ?"
        params.append(worker_id)
    if conn.execute(sql, params).rowcount != 1:
        return False
    conn.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))
    return True
