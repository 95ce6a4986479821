"""The PostgreSQL job store: jobs shared by API replicas and worker boxes that share no disk.

psycopg 3 directly, not a queue library: the queue is server/jobs/store.py's job rows themselves (their
queue positions, cancel flags, attempts and outputs are what the API reads), and a library's own task
table would sit beside them with a second state machine to keep in step (procrastinate, tried for
issue 16, also counts an attempt on a shutdown requeue, which this store must give back). What a library
would bring is one statement: claims take the next queued row with `FOR UPDATE SKIP LOCKED`, so any
number of workers on any number of boxes claim concurrently, each row by exactly one.

Across boxes, a worker's death cannot be seen in a local process table. Each claim records the box
(`node`, one per supervisor: `vace serve` or `vace worker`) and a lease on the database's clock; the
worker's heartbeats (server/worker/loop.py, every 2 s) renew it. `recover_orphans` acts on this box's own
workers at once (its supervisor saw them exit) and on any box's job whose lease ran out; every heartbeat and
claim also recovers expired leases, so a lost box's jobs are requeued (or failed, out of attempts) by
whichever worker is still alive, `lease_s` after its last heartbeat. A worker that was only stalled past
its lease finds the job gone: its `complete` changes nothing, so a job still completes once.

Wake-ups: submit and every requeue NOTIFY `vace_jobs`; idle workers wait on it (`wait_for_jobs`) instead of
polling. Webhook deliveries are claimed as jobs are (postgres_webhooks.py); retention deletes are
idempotent, so every API replica may sweep.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any

import psycopg

from server.contract.capacity import CapacityTable, capacity_json, parse_capacity
from server.contract.errors import JobError, cancelled_error, start_timeout_error, worker_lost_error
from server.jobs.model import PRIORITIES, CancelOutcome, Job, JobResult, JobStatus, LogEntry, Status
from server.jobs.postgres_db import (
    DB_NOW,
    JOBS_CHANNEL,
    RESULT_COLUMNS,
    STATUS_COLUMNS,
    PostgresDatabase,
    Row,
    row_to_job,
    row_to_result,
    row_to_status,
)
from server.jobs.postgres_retention import PostgresRetentionQueries
from server.jobs.postgres_telemetry import PostgresTelemetry
from server.jobs.postgres_webhooks import PostgresWebhookOutbox

DEFAULT_LEASE_S = 30.0
# Worker rows whose heartbeat stopped this long ago (a box that is gone) leave /health.
FORGET_WORKER_S = 3600.0
LOST = "lost"  # a worker state: its box stopped beating (state names: server/worker/loop.py)
_NOTIFY = f"SELECT pg_notify('{JOBS_CHANNEL}', '')"


def default_node() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class PostgresJobStore:
    """server/jobs/store.py's JobStore in PostgreSQL; thread-safe (a pool of connections)."""

    def __init__(self, url: str, *, node: str | None = None, lease_s: float = DEFAULT_LEASE_S,
                 max_attempts: int = 2, pool_size: int = 16) -> None:
        self.db = PostgresDatabase(url, max_size=pool_size)
        self.node = node or default_node()
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self._webhooks = PostgresWebhookOutbox(self.db)
        self._retention = PostgresRetentionQueries(self.db)
        self._telemetry = PostgresTelemetry(self.db)
        self._listener: psycopg.Connection[Row] | None = None

    @property
    def webhooks(self) -> PostgresWebhookOutbox:
        return self._webhooks

    @property
    def retention(self) -> PostgresRetentionQueries:
        return self._retention

    @property
    def telemetry(self) -> PostgresTelemetry:
        return self._telemetry

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.db.close()

    # -- submit and read ---------------------------------------------------------------------------

    def submit(self, endpoint: str, payload: dict[str, Any], *, public_base: str,
               priority: int = PRIORITIES["normal"], webhook_url: str | None = None,
               start_deadline: float | None = None) -> Job:
        with self.db.transaction() as conn:
            row = conn.execute(
                "INSERT INTO vace_jobs (id, endpoint, input, status, priority, public_base, webhook_url,"
                " start_deadline, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (str(uuid.uuid4()), endpoint, json.dumps(payload), Status.IN_QUEUE, priority, public_base,
                 webhook_url, start_deadline, time.time()),
            ).fetchone()
            conn.execute(_NOTIFY)  # delivered at commit
        assert row is not None
        return row_to_job(row)

    def get(self, job_id: str) -> Job | None:
        row = self.db.fetchone("SELECT * FROM vace_jobs WHERE id = %s", (job_id,))
        return row_to_job(row) if row else None

    def get_status(self, job_id: str) -> JobStatus | None:
        row = self.db.fetchone(f"SELECT {STATUS_COLUMNS} FROM vace_jobs WHERE id = %s", (job_id,))
        return row_to_status(row) if row else None

    def get_result(self, job_id: str) -> JobResult | None:
        row = self.db.fetchone(f"SELECT {RESULT_COLUMNS} FROM vace_jobs WHERE id = %s", (job_id,))
        return row_to_result(row) if row else None

    def queue_position(self, job: Job | JobStatus) -> int:
        row = self.db.fetchone(
            "SELECT COUNT(*) AS n FROM vace_jobs WHERE status = %s AND (priority < %s OR"
            " (priority = %s AND seq < %s))", (Status.IN_QUEUE, job.priority, job.priority, job.seq))
        return int(row["n"]) if row else 0

    def count_queued(self) -> int:
        row = self.db.fetchone("SELECT COUNT(*) AS n FROM vace_jobs WHERE status = %s", (Status.IN_QUEUE,))
        return int(row["n"]) if row else 0

    # -- logs --------------------------------------------------------------------------------------

    def add_log(self, job_id: str, message: str, level: str = "INFO") -> None:
        self.db.execute("INSERT INTO vace_logs (job_id, ts, level, message) VALUES (%s, %s, %s, %s)",
                        (job_id, time.time(), level, message))

    def logs(self, job_id: str, after_id: int = 0) -> list[LogEntry]:
        rows = self.db.fetchall("SELECT id, ts, level, message FROM vace_logs WHERE job_id = %s AND id > %s"
                                " ORDER BY id", (job_id, after_id))
        return [LogEntry(r["id"], r["ts"], r["level"], r["message"]) for r in rows]

    # -- cancel ------------------------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> CancelOutcome:
        """Queued jobs are cancelled at once; running ones are flagged, and the worker holding them, on
        whichever box, stops at its next step (it polls `is_cancel_requested`)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT status FROM vace_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if row is None:
                return CancelOutcome.NOT_FOUND
            status = Status(row["status"])
            if status is Status.COMPLETED:
                return CancelOutcome.ALREADY_COMPLETED
            if status is Status.IN_QUEUE:
                _write_error(conn, job_id, cancelled_error(), None)
                return CancelOutcome.OK
            conn.execute("UPDATE vace_jobs SET cancel_requested = TRUE WHERE id = %s", (job_id,))
            return CancelOutcome.CANCELLATION_REQUESTED

    def is_cancel_requested(self, job_id: str) -> bool:
        row = self.db.fetchone("SELECT cancel_requested FROM vace_jobs WHERE id = %s", (job_id,))
        return bool(row and row["cancel_requested"])

    # -- worker side -------------------------------------------------------------------------------

    def claim(self, worker_id: str) -> Job | None:
        """The next queued job (priority, then arrival), locked with SKIP LOCKED so concurrent claimers on
        any box each get a different row; jobs past their start deadline are failed first."""
        self._recover_expired_leases()
        now = time.time()
        with self.db.transaction() as conn:
            _expire_start_deadlines(conn, now)
            row = conn.execute(
                "UPDATE vace_jobs SET status = %s, worker_id = %s, node = %s, started_at = %s,"
                f" attempts = attempts + 1, lease_until = {DB_NOW} + %s WHERE id = ("
                "  SELECT id FROM vace_jobs WHERE status = %s ORDER BY priority, seq LIMIT 1"
                "  FOR UPDATE SKIP LOCKED) RETURNING *",
                (Status.IN_PROGRESS, worker_id, self.node, now, self.lease_s, Status.IN_QUEUE)).fetchone()
        return row_to_job(row) if row else None

    def expire_start_deadlines(self, now: float | None = None) -> list[str]:
        """Fail the queued jobs past their start deadline (server/api/background/start_timeouts.py); rows
        another replica or a claim holds are skipped, not waited for: they are being expired or started."""
        with self.db.transaction() as conn:
            return _expire_start_deadlines(conn, time.time() if now is None else now)

    def wait_for_jobs(self, timeout_s: float) -> None:
        """Block until a job may be waiting (a NOTIFY from submit or a requeue) or `timeout_s` passes."""
        try:
            if self._listener is None:
                self._listener = self.db.listener()
                self._listener.execute(f"LISTEN {JOBS_CHANNEL}")
            for _ in self._listener.notifies(timeout=timeout_s, stop_after=1):
                pass
        except psycopg.Error:
            # The connection broke (a database restart): poll until it comes back.
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            time.sleep(timeout_s)

    def complete(self, job_id: str, worker_id: str, output: dict[str, Any]) -> bool:
        """Record success; False if this worker no longer holds the job (requeued or failed meanwhile)."""
        return self.db.execute(
            "UPDATE vace_jobs SET status = %s, output = %s, completed_at = %s, lease_until = NULL,"
            " input = '{}' WHERE id = %s AND status = %s AND worker_id = %s",
            (Status.COMPLETED, json.dumps(output), time.time(), job_id, Status.IN_PROGRESS, worker_id)) == 1

    def fail(self, job_id: str, worker_id: str | None, error: JobError) -> bool:
        with self.db.transaction() as conn:
            return _write_error(conn, job_id, error, worker_id)

    def requeue(self, job_id: str, worker_id: str, *, count_attempt: bool) -> bool:
        with self.db.transaction() as conn:
            done = _requeue(conn, job_id, worker_id, count_attempt)
            if done:
                conn.execute(_NOTIFY)
            return done

    def release(self, worker_id: str) -> list[str]:
        """Requeue a worker's running jobs without spending an attempt (the server stopped it)."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT id FROM vace_jobs WHERE status = %s AND worker_id = %s AND NOT cancel_requested"
                " FOR UPDATE", (Status.IN_PROGRESS, worker_id)).fetchall()
            for row in rows:
                _requeue(conn, row["id"], worker_id, count_attempt=False)
            if rows:
                conn.execute(_NOTIFY)
        return [row["id"] for row in rows]

    def recover_orphans(self, live_worker_ids: set[str], max_attempts: int) -> list[str]:
        """This box's jobs under a worker not in `live_worker_ids` (its supervisor knows they are gone),
        and any box's jobs whose lease ran out: cancelled, failed out of attempts, or requeued."""
        return self._recover(
            f"(worker_id <> ALL(%s) AND (node = %s OR lease_until < {DB_NOW}))",
            (sorted(live_worker_ids), self.node), max_attempts)

    def _recover_expired_leases(self) -> list[str]:
        return self._recover(f"lease_until < {DB_NOW}", (), self.max_attempts)

    def _recover(self, condition: str, params: tuple[Any, ...], max_attempts: int) -> list[str]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                f"SELECT id, attempts, cancel_requested FROM vace_jobs WHERE status = %s AND {condition}"
                " FOR UPDATE SKIP LOCKED", (Status.IN_PROGRESS, *params)).fetchall()
            requeued = False
            for row in rows:
                if row["cancel_requested"]:
                    _write_error(conn, row["id"], cancelled_error(), None)
                elif row["attempts"] >= max_attempts:
                    _write_error(conn, row["id"], worker_lost_error(row["attempts"]), None)
                else:
                    conn.execute("UPDATE vace_jobs SET status = %s, worker_id = NULL, node = NULL,"
                                 " started_at = NULL, lease_until = NULL WHERE id = %s",
                                 (Status.IN_QUEUE, row["id"]))
                    requeued = True
            if requeued:
                conn.execute(_NOTIFY)
        return [row["id"] for row in rows]

    # -- worker registry (/health) -----------------------------------------------------------------

    def set_worker_state(self, worker_id: str, pid: int, state: str, model: str | None = None,
                         detail: str | None = None, capacity: CapacityTable | None = None) -> None:
        self.db.execute(
            "INSERT INTO vace_workers (id, node, pid, state, model, detail, heartbeat, capacity)"
            f" VALUES (%s, %s, %s, %s, %s, %s, {DB_NOW}, %s) ON CONFLICT (id) DO UPDATE SET"
            " node = excluded.node, pid = excluded.pid, state = excluded.state, model = excluded.model,"
            " detail = excluded.detail, heartbeat = excluded.heartbeat, capacity = excluded.capacity",
            (worker_id, self.node, pid, state, model, detail, capacity_json(capacity)))

    def heartbeat(self, worker_id: str) -> None:
        """Renew the worker's row and the lease on its running job, then requeue other boxes' jobs
        whose lease ran out (this is how a lost box's work comes back). Ready workers silent for a lease
        show as `lost` in /health (until they beat again), and leave it after FORGET_WORKER_S."""
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE vace_workers SET heartbeat = {DB_NOW}, state = CASE WHEN state = %s"
                         " THEN %s ELSE state END WHERE id = %s", (LOST, "ready", worker_id))
            conn.execute(f"UPDATE vace_jobs SET lease_until = {DB_NOW} + %s WHERE worker_id = %s"
                         " AND status = %s", (self.lease_s, worker_id, Status.IN_PROGRESS))
            conn.execute(f"UPDATE vace_workers SET state = %s WHERE state = 'ready' AND heartbeat < {DB_NOW}"
                         " - %s", (LOST, self.lease_s))
            conn.execute(f"DELETE FROM vace_workers WHERE heartbeat < {DB_NOW} - %s", (FORGET_WORKER_S,))
        self._recover_expired_leases()

    def workers(self) -> list[dict[str, Any]]:
        """Every box's workers, each with its `node`."""
        rows = self.db.fetchall("SELECT id, pid, state, model, detail, heartbeat, node, capacity"
                                " FROM vace_workers ORDER BY id")
        return [{**row, "capacity": parse_capacity(row["capacity"])} for row in rows]

    def clear_workers(self) -> None:
        """This box's rows only: a supervisor starting on one box must not hide another box's workers."""
        self.db.execute("DELETE FROM vace_workers WHERE node = %s", (self.node,))

    def remove_worker(self, worker_id: str) -> None:
        self.db.execute("DELETE FROM vace_workers WHERE id = %s", (worker_id,))


def _requeue(conn: psycopg.Connection[Row], job_id: str, worker_id: str, count_attempt: bool) -> bool:
    # Attempts are counted when a job is claimed; a requeue that must not spend one gives it back.
    cur = conn.execute(
        "UPDATE vace_jobs SET status = %s, worker_id = NULL, node = NULL, started_at = NULL,"
        " lease_until = NULL, attempts = GREATEST(attempts - %s, 0) WHERE id = %s AND status = %s"
        " AND worker_id = %s",
        (Status.IN_QUEUE, 0 if count_attempt else 1, job_id, Status.IN_PROGRESS, worker_id))
    return cur.rowcount == 1


def _write_error(conn: psycopg.Connection[Row], job_id: str, error: JobError, worker_id: str | None) -> bool:
    """Terminal failure; only from a non-terminal state, and only by the owning worker if one is named."""
    sql = ("UPDATE vace_jobs SET status = %s, error = %s, error_type = %s, error_status = %s,"
           " error_body = %s, completed_at = %s, lease_until = NULL, input = '{}'"
           " WHERE id = %s AND status <> %s")
    params: list[Any] = [Status.COMPLETED, error.message, error.error_type, error.status_code,
                         json.dumps(error.body), time.time(), job_id, Status.COMPLETED]
    if worker_id is not None:
        sql += " AND worker_id = %s"
        params.append(worker_id)
    return conn.execute(sql, params).rowcount == 1


def _expire_start_deadlines(conn: psycopg.Connection[Row], now: float) -> list[str]:
    expired = conn.execute(
        "SELECT id FROM vace_jobs WHERE status = %s AND start_deadline < %s FOR UPDATE SKIP LOCKED",
        (Status.IN_QUEUE, now)).fetchall()
    for late in expired:
        _write_error(conn, late["id"], start_timeout_error(), None)
    return [late["id"] for late in expired]
