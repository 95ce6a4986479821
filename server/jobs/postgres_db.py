"""The PostgreSQL database behind server/jobs/postgres.py: schema, connection pool, clock and row conversion.

Shared by the job store and its outbox and retention parts (postgres_webhooks.py, postgres_retention.py).
Tables carry a `vace_` prefix so the store can live in a database shared with other applications.
Lease times (job leases, worker heartbeats) are taken from the database server's clock (`DB_NOW`), so
boxes whose clocks disagree still agree on when a lease ran out.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from server.contract.errors import JobError
from server.jobs.model import Job, JobResult, JobStatus, Status

# The database's clock, in time.time() seconds.
DB_NOW = "extract(epoch from clock_timestamp())::double precision"
# The channel submit and requeue notify, and idle workers LISTEN on (server/worker/loop.py).
JOBS_CHANNEL = "vace_jobs"
# Any fixed number: serialises the schema's CREATE ... IF NOT EXISTS between processes starting together
# (concurrent CREATEs of one table can fail with a unique violation in the catalog).
_SCHEMA_LOCK = 0x7661_6365

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS vace_jobs (
    id               TEXT PRIMARY KEY,
    seq              BIGINT GENERATED ALWAYS AS IDENTITY,
    endpoint         TEXT NOT NULL,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    public_base      TEXT NOT NULL,
    webhook_url      TEXT,
    start_deadline   DOUBLE PRECISION,
    created_at       DOUBLE PRECISION NOT NULL,
    started_at       DOUBLE PRECISION,
    completed_at     DOUBLE PRECISION,
    attempts         INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    node             TEXT,              -- the box (supervisor) whose worker holds the job
    lease_until      DOUBLE PRECISION,  -- DB clock; renewed by the holder's heartbeats
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    output           TEXT,
    error            TEXT,
    error_type       TEXT,
    error_status     INTEGER,
    error_body       TEXT
);
CREATE INDEX IF NOT EXISTS vace_jobs_queue ON vace_jobs (priority, seq) WHERE status = '{Status.IN_QUEUE}';
CREATE INDEX IF NOT EXISTS vace_jobs_running ON vace_jobs (worker_id) WHERE status = '{Status.IN_PROGRESS}';
CREATE INDEX IF NOT EXISTS vace_jobs_done ON vace_jobs (completed_at) WHERE status = '{Status.COMPLETED}';
CREATE TABLE IF NOT EXISTS vace_logs (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id   TEXT NOT NULL,
    ts       DOUBLE PRECISION NOT NULL,
    level    TEXT NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS vace_logs_job ON vace_logs (job_id, id);
CREATE TABLE IF NOT EXISTS vace_workers (
    id         TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    state      TEXT NOT NULL,
    model      TEXT,
    detail     TEXT,
    heartbeat  DOUBLE PRECISION NOT NULL,  -- DB clock
    capacity   TEXT  -- JSON: server/contract/capacity.py's table, NULL for none
);
-- Added after the first release: tables created before it gain the column here.
ALTER TABLE vace_workers ADD COLUMN IF NOT EXISTS capacity TEXT;
CREATE TABLE IF NOT EXISTS vace_webhook_deliveries (
    job_id        TEXT PRIMARY KEY,
    state         TEXT NOT NULL,          -- pending | delivered | failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       DOUBLE PRECISION NOT NULL,
    last_status   INTEGER,
    last_error    TEXT,
    delivered_at  DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS vace_webhook_due ON vace_webhook_deliveries (next_at) WHERE state = 'pending';
-- server/jobs/postgres_telemetry.py. resolution: the request's, copied from its input at the first progress
-- write (a job's input is cleared when it completes), for /metrics' labels.
CREATE TABLE IF NOT EXISTS vace_job_progress (
    job_id      TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    resolution  TEXT,
    updated_at  DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS vace_worker_stats (
    worker_id   TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS vace_jobs_created_at ON vace_jobs (created_at);
"""

STATUS_COLUMNS = "id, seq, status, priority, started_at, completed_at, error, error_type"
RESULT_COLUMNS = "id, status, output, error, error_type, error_status, error_body"
Row = dict[str, Any]


def _error(row: Row) -> JobError | None:
    if row["error"] is None:
        return None
    return JobError(message=row["error"], error_type=row["error_type"], status_code=row["error_status"],
                    body=json.loads(row["error_body"]))


def row_to_result(row: Row) -> JobResult:
    output = json.loads(row["output"]) if row["output"] is not None else None
    return JobResult(row["id"], Status(row["status"]), output, _error(row))


def row_to_status(row: Row) -> JobStatus:
    return JobStatus(row["id"], row["seq"], Status(row["status"]), row["priority"], row["started_at"],
                     row["completed_at"], row["error"], row["error_type"])


def row_to_job(row: Row) -> Job:
    error = _error(row)
    return Job(
        id=row["id"], seq=row["seq"], endpoint=row["endpoint"], input=json.loads(row["input"]),
        status=Status(row["status"]), priority=row["priority"], public_base=row["public_base"],
        webhook_url=row["webhook_url"], start_deadline=row["start_deadline"], created_at=row["created_at"],
        started_at=row["started_at"], completed_at=row["completed_at"], attempts=row["attempts"],
        worker_id=row["worker_id"], cancel_requested=row["cancel_requested"],
        output=json.loads(row["output"]) if row["output"] is not None else None, error=error,
    )


@contextmanager
def _disk_full_as_oserror() -> Iterator[None]:
    """PostgreSQL's disk_full (SQLSTATE 53100) as OSError(ENOSPC), as server/jobs/store.py promises (the API
    answers it 507); the statement or transaction was rolled back, so nothing changed."""
    try:
        yield
    except psycopg.errors.DiskFull as exc:
        raise OSError(errno.ENOSPC, f"the job database is out of disk space: {exc}") from exc


class PostgresDatabase:
    """A small connection pool (psycopg_pool) shared by the threads of one process.

    Connections are in autocommit mode: a statement outside `transaction()` commits alone. A pool rather
    than a connection per thread: the API's thread pool has dozens of threads, and every API replica and
    worker box connects to the same server.
    """

    def __init__(self, url: str, max_size: int = 8) -> None:
        self.url = url
        self.pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url, min_size=1, max_size=max_size, open=True, name="vace-jobs",
            kwargs={"autocommit": True, "row_factory": dict_row},
        )
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(SCHEMA)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Row]]:
        with _disk_full_as_oserror(), self.pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Row]]:
        """One transaction (READ COMMITTED); rows are locked with FOR UPDATE where read-then-write races."""
        with _disk_full_as_oserror(), self.pool.connection() as conn, conn.transaction():
            yield conn

    def fetchone(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Row | None:
        with self.connection() as conn:
            return conn.execute(sql, params).fetchone()

    def fetchall(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Row]:
        with self.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""
        with self.connection() as conn:
            return conn.execute(sql, params).rowcount

    def listener(self) -> psycopg.Connection[Row]:
        """A connection of its own (outside the pool) for LISTEN: notifications arrive on one session."""
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    def close(self) -> None:
        self.pool.close()
