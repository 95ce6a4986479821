"""The webhook outbox in the job store's SQLite file (server/jobs/sqlite.py)."""

from __future__ import annotations

import sqlite3
import time

from server.jobs.model import Status, WebhookDelivery
from server.jobs.sqlite_db import SqliteDatabase

# ------------------------------------------------------------------------------------------------------------
# Webhook deliveries (server/api/background/webhooks.py). Same SQLite file, own table: one row per job with
# a webhook, created once the job is COMPLETED, so pending deliveries survive restarts of the API process.
# ------------------------------------------------------------------------------------------------------------

WEBHOOK_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    job_id        TEXT PRIMARY KEY,
    state         TEXT NOT NULL,          -- pending | delivered | failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       REAL NOT NULL,
    last_status   INTEGER,
    last_error    TEXT,
    delivered_at  REAL
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_deliveries (state, next_at);
"""


class SqliteWebhookOutbox:
    """server/jobs/store.py's WebhookOutbox, next to the jobs in the same file (tables created by
    SqliteJobStore)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def enqueue_completed(self, max_age_s: float) -> int:
        """Create a pending delivery for every recently completed job with a webhook and none yet."""
        now = time.time()
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO webhook_deliveries (job_id, state, next_at)"
                " SELECT id, 'pending', ? FROM jobs WHERE status = ? AND webhook_url IS NOT NULL"
                " AND completed_at >= ? AND NOT EXISTS"
                " (SELECT 1 FROM webhook_deliveries d WHERE d.job_id = jobs.id)",
                (now, Status.COMPLETED, now - max_age_s),
            )
            return cur.rowcount

    def due(self, limit: int = 20) -> list[WebhookDelivery]:
        rows = self.db.conn().execute(
            "SELECT * FROM webhook_deliveries WHERE state = 'pending' AND next_at <= ? ORDER BY next_at"
            " LIMIT ?", (time.time(), limit),
        ).fetchall()
        return [_row_to_delivery(r) for r in rows]

    def get(self, job_id: str) -> WebhookDelivery | None:
        row = self.db.conn().execute("SELECT * FROM webhook_deliveries WHERE job_id = ?",
                                        (job_id,)).fetchone()
        return _row_to_delivery(row) if row else None

    def mark_delivered(self, job_id: str, status_code: int) -> None:
        self.db.conn().execute(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, last_status = ?,"
            " last_error = NULL, delivered_at = ? WHERE job_id = ?", (status_code, time.time(), job_id),
        )

    def mark_failed_attempt(self, job_id: str, status_code: int | None, error: str,
                            next_at: float | None) -> None:
        """Record a failed attempt; `next_at=None` gives up for good."""
        self.db.conn().execute(
            "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, last_status = ?,"
            " last_error = ?, next_at = COALESCE(?, next_at) WHERE job_id = ?",
            ("pending" if next_at is not None else "failed", status_code, error[:500], next_at, job_id),
        )


def _row_to_delivery(row: sqlite3.Row) -> WebhookDelivery:
    return WebhookDelivery(row["job_id"], row["state"], row["attempts"], row["next_at"], row["last_status"],
                           row["last_error"])
