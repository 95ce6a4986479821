"""The API process's background threads outlive a SQLite error, log it, and carry on (issue 11 item 7).

The error is real: a table the thread needs is renamed away for a while, then back. (The worker's
heartbeat and the supervisor are covered in test_worker_stall.py.)
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from server.api.background.retention import RetentionSweeper
from server.api.background.webhook_signing import load_or_create_signing_key
from server.api.background.webhooks import WebhookDispatcher
from server.files.local import LocalFileStore
from server.jobs.factory import open_job_store
from server.jobs.store import JobStore
from tests.server.test_webhooks_ssrf import Receiver, completed_job


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not seen within {timeout}s")


def rename(db: Path, old: str, new: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"ALTER TABLE {old} RENAME TO {new}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


@pytest.fixture
def store(db: Path) -> JobStore:
    return open_job_store(db)


def test_webhook_delivery_survives_a_sqlite_error(store: JobStore, db: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver("127.0.0.1")
    key = load_or_create_signing_key(tmp_path / "webhook_ed25519.pem")
    dispatcher = WebhookDispatcher(store, key, max_attempts=3, retry_base_s=60.0, retry_max_s=60.0,
                                   timeout_s=5.0, allow_hosts=("127.0.0.1",))
    rename(db, "webhook_deliveries", "deliveries_away")
    dispatcher.start()
    try:
        wait_until(lambda: "webhook delivery pass failed" in caplog.text, 30, "the failed pass logged")
        job = completed_job(store, f"{receiver.base}/after-the-error")
        rename(db, "deliveries_away", "webhook_deliveries")
        wait_until(lambda: [p for _, p, _, _ in receiver.requests] == ["/after-the-error"], 30, "delivery")
    finally:
        dispatcher.stop()
        receiver.close()
    row = store.webhooks.get(job.id)
    assert row is not None and row.state == "delivered"
    assert "no such table: webhook_deliveries" in caplog.text


def test_retention_survives_a_sqlite_error(store: JobStore, db: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    job = completed_job(store, "http://127.0.0.1/unused")
    sweeper = RetentionSweeper(store, LocalFileStore(tmp_path / "files"), tmp_path / "work", retention_s=1e-3,
                               interval_s=0.05)
    rename(db, "jobs", "jobs_away")
    sweeper.start()
    try:
        wait_until(lambda: "retention sweep failed" in caplog.text, 30, "the failed sweep logged")
        rename(db, "jobs_away", "jobs")
        wait_until(lambda: store.get(job.id) is None, 30, "the expired job deleted")
    finally:
        sweeper.stop()
    assert "no such table: jobs" in caplog.text


@pytest.fixture(autouse=True)
def _errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
