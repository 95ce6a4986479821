"""The webhook outbox in the job store's PostgreSQL database (server/jobs/postgres.py).

Every API replica runs a dispatcher (server/api/background/webhooks.py) that polls `due`; here `due` also
claims what it returns: the rows are locked with SKIP LOCKED and pushed CLAIM_S into the future in one
transaction, so a second replica polling at the same moment gets other rows, and each delivery is made by
one replica. A replica that dies mid-delivery leaves its rows due again CLAIM_S later (at least once).
"""

from __future__ import annotations

import time

from server.jobs.model import Status, WebhookDelivery
from server.jobs.postgres_db import PostgresDatabase, Row

# Longer than a delivery's POST may take (Settings.webhook_timeout_s, 15 s by default) times a batch.
CLAIM_S = 300.0


class PostgresWebhookOutbox:
    """server/jobs/store.py's WebhookOutbox, next to the jobs (tables created by PostgresDatabase)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def enqueue_completed(self, max_age_s: float) -> int:
        now = time.time()
        return self.db.execute(
            "INSERT INTO vace_webhook_deliveries (job_id, state, next_at) SELECT id, 'pending', %s"
            " FROM vace_jobs WHERE status = %s AND webhook_url IS NOT NULL AND completed_at >= %s"
            " AND NOT EXISTS (SELECT 1 FROM vace_webhook_deliveries d WHERE d.job_id = vace_jobs.id)"
            " ON CONFLICT (job_id) DO NOTHING", (now, Status.COMPLETED, now - max_age_s))

    def due(self, limit: int = 20) -> list[WebhookDelivery]:
        """Pending deliveries whose time has come, soonest first, claimed for this caller (see above)."""
        now = time.time()
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM vace_webhook_deliveries WHERE state = 'pending' AND next_at <= %s"
                " ORDER BY next_at LIMIT %s FOR UPDATE SKIP LOCKED", (now, limit)).fetchall()
            if rows:
                conn.execute("UPDATE vace_webhook_deliveries SET next_at = %s WHERE job_id = ANY(%s)",
                             (now + CLAIM_S, [r["job_id"] for r in rows]))
        return [_row_to_delivery(r) for r in rows]

    def get(self, job_id: str) -> WebhookDelivery | None:
        row = self.db.fetchone("SELECT * FROM vace_webhook_deliveries WHERE job_id = %s", (job_id,))
        return _row_to_delivery(row) if row else None

    def mark_delivered(self, job_id: str, status_code: int) -> None:
        self.db.execute(
            "UPDATE vace_webhook_deliveries SET state = 'delivered', attempts = attempts + 1,"
            " last_status = %s, last_error = NULL, delivered_at = %s WHERE job_id = %s",
            (status_code, time.time(), job_id))

    def mark_failed_attempt(self, job_id: str, status_code: int | None, error: str,
                            next_at: float | None) -> None:
        """Record a failed attempt; `next_at=None` gives up for good."""
        self.db.execute(
            "UPDATE vace_webhook_deliveries SET state = %s, attempts = attempts + 1, last_status = %s,"
            " last_error = %s, next_at = COALESCE(%s, next_at) WHERE job_id = %s",
            ("pending" if next_at is not None else "failed", status_code, error[:500], next_at, job_id))


def _row_to_delivery(row: Row) -> WebhookDelivery:
    return WebhookDelivery(row["job_id"], row["state"], row["attempts"], row["next_at"], row["last_status"],
                           row["last_error"])
