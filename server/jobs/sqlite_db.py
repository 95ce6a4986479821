"""The SQLite file behind server/jobs/sqlite.py: its schema, per-thread connections, transactions and row
conversion. Shared by the job store and its outbox and retention parts (sqlite_webhooks.py,
sqlite_retention.py), so none of them reaches into another's privates."""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server.contract.errors import JobError
from server.jobs.model import Job, JobResult, JobStatus, Status

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    seq              INTEGER NOT NULL,
    endpoint         TEXT NOT NULL,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    public_base      TEXT NOT NULL,
    webhook_url      TEXT,
    start_deadline   REAL,
    created_at       REAL NOT NULL,
    started_at       REAL,
    completed_at     REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    output           TEXT,
    error            TEXT,
    error_type       TEXT,
    error_status     INTEGER,
    error_body       TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, priority, seq);
CREATE TABLE IF NOT EXISTS logs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   TEXT NOT NULL,
    ts       REAL NOT NULL,
    level    TEXT NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_job ON logs (job_id, id);
-- A job's input, apart from its row: SQLite walks a large value's overflow pages to reach the columns stored
-- after it, so an input kept in `jobs` (where rows written before this table still hold theirs) makes every
-- status and result poll of that job read all of it. Deleted when the job completes.
CREATE TABLE IF NOT EXISTS job_inputs (
    job_id  TEXT PRIMARY KEY,
    input   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    id         TEXT PRIMARY KEY,
    pid        INTEGER NOT NULL,
    state      TEXT NOT NULL,
    model      TEXT,
    detail     TEXT,
    heartbeat  REAL NOT NULL,
    capacity   TEXT  -- JSON: server/contract/capacity.py's table, NULL for none
);
"""


STATUS_COLUMNS = "id, seq, status, priority, started_at, completed_at, error, error_type"


def row_to_status(row: sqlite3.Row) -> JobStatus:
    return JobStatus(row["id"], row["seq"], Status(row["status"]), row["priority"], row["started_at"],
                     row["completed_at"], row["error"], row["error_type"])


RESULT_COLUMNS = "id, status, output, error, error_type, error_status, error_body"
DROPPED_INPUT = "{}"  # jobs.input of new rows, and of every COMPLETED job (server/jobs/store.py)
# The whole job: its row and its input, wherever the input is kept.
SELECT_JOBS = ("SELECT jobs.*, job_inputs.input AS held_input FROM jobs"
               " LEFT JOIN job_inputs ON job_inputs.job_id = jobs.id")


def _row_error(row: sqlite3.Row) -> JobError | None:
    if row["error"] is None:
        return None
    return JobError(message=row["error"], error_type=row["error_type"], status_code=row["error_status"],
                    body=json.loads(row["error_body"]))


def _row_output(row: sqlite3.Row) -> dict[str, Any] | None:
    return json.loads(row["output"]) if row["output"] is not None else None


def row_to_result(row: sqlite3.Row) -> JobResult:
    return JobResult(row["id"], Status(row["status"]), _row_output(row), _row_error(row))


def row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        seq=row["seq"],
        endpoint=row["endpoint"],
        input=json.loads(row["held_input"] if row["held_input"] is not None else row["input"]),
        status=Status(row["status"]),
        priority=row["priority"],
        public_base=row["public_base"],
        webhook_url=row["webhook_url"],
        start_deadline=row["start_deadline"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        attempts=row["attempts"],
        worker_id=row["worker_id"],
        cancel_requested=bool(row["cancel_requested"]),
        output=_row_output(row),
        error=_row_error(row),
    )


@contextmanager
def _full_disk_as_os_error() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise OSError(errno.ENOSPC, f"the job database's disk is full ({exc})") from exc
        raise


class SqliteDatabase:
    """One SQLite file in WAL mode, one connection per thread (sqlite3 connections are not shareable)."""

    def __init__(self, path: Path, *schemas: str) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        for schema in schemas:
            self.conn().executescript(schema)  # idempotent; executescript manages its own transaction

    def ensure_column(self, table: str, column: str, declaration: str) -> None:
        """Add a column that files created by an older release lack (CREATE TABLE IF NOT EXISTS keeps their
        table as it was). Two processes opening an old file together may both try: the loser's duplicate
        is ignored."""
        conn = self.conn()
        if any(row["name"] == column for row in conn.execute(f"PRAGMA table_info({table})")):
            return
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: each statement outside `transaction()` commits alone)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode; only a power cut can lose the last commit.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock up front so read-then-write cannot race.

        A full disk is OSError(ENOSPC), as server/jobs/store.py promises, with nothing written."""
        conn = self.conn()
        with _full_disk_as_os_error():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
