"""Background threads survive errors, and a worker that stops beating is replaced (issue 11 item 7).

Before: one SQLite error ended the worker's heartbeat thread for good (`/health` then said "starting"
forever while jobs still ran), and a SIGSTOPped worker was never restarted, its job stuck IN_PROGRESS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from server.jobs.factory import open_job_store
from server.jobs.model import Status
from server.settings import Settings
from server.worker.loop import Worker
from tests.server.conftest import start_server

APP = "fal-ai/wan-vace-14b"


def heartbeat_of(db: Path, worker_id: str) -> float | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT heartbeat FROM workers WHERE id = ?", (worker_id,)).fetchone()
    return None if row is None else float(row[0])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not seen within {timeout}s")


def test_the_heartbeat_survives_a_sqlite_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(data_dir=tmp_path / "data", model="tiny", worker_stall_timeout_s=0.4)
    worker = Worker(settings, "w-beat")
    assert worker.heartbeat_s == pytest.approx(0.1)
    worker.store.set_worker_state("w-beat", os.getpid(), "ready", "tiny")
    db = settings.db_path
    caplog.set_level(logging.INFO, "vace.worker")
    worker.start_heartbeat()
    try:
        first = heartbeat_of(db, "w-beat")
        assert first is not None
        wait_until(lambda: (heartbeat_of(db, "w-beat") or 0) > first, 30, "a first beat")
        # A real SQLite error on every beat for a while: the table is gone.
        with sqlite3.connect(db) as conn:
            conn.execute("ALTER TABLE workers RENAME TO workers_away")
        wait_until(lambda: "heartbeat failed" in caplog.text, 30, "the failure logged")
        time.sleep(0.3)  # several failed beats
        with sqlite3.connect(db) as conn:
            conn.execute("ALTER TABLE workers_away RENAME TO workers")
        back = heartbeat_of(db, "w-beat")
        assert back is not None
        wait_until(lambda: (heartbeat_of(db, "w-beat") or 0) > back, 30, "a beat after the error")
        assert "heartbeat recovered" in caplog.text
        assert caplog.text.count("heartbeat failed") == 1  # once per episode, not every beat
    finally:
        worker.stopping.set()


def test_a_stopped_worker_is_killed_restarted_and_its_job_requeued(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("VACE_WORKER_STALL_TIMEOUT_S", "3")  # or --worker-stall-timeout 3
    server = start_server(data_dir, workers=1, timeout=300, extra_args=("--max-attempts", "3"))
    store = open_job_store(data_dir / "jobs.sqlite3")
    stopped_pid = None
    try:
        [worker] = [w for w in store.workers() if w["state"] == "ready"]
        stopped_pid = int(worker["pid"])
        os.kill(stopped_pid, signal.SIGSTOP)  # alive, silent
        # The job it was running when it stopped (it can claim nothing now, so the test claims in its name).
        with server.client() as client:
            submitted = client.post(f"/queue/{APP}/depth", json={"prompt": "p", "video_url": "https://e.com/v"})
        job = store.claim(worker["id"])
        assert job is not None and job.id == submitted.json()["request_id"]

        def replaced() -> bool:
            return any(w["state"] == "ready" and w["id"] != worker["id"] for w in store.workers())

        wait_until(replaced, 240, "a new ready worker")
        with pytest.raises(ProcessLookupError):
            os.kill(stopped_pid, 0)  # killed and reaped
        after = store.get(job.id)
        assert after is not None and after.worker_id != worker["id"], after
        if after.status is Status.COMPLETED:
            # The replacement already ran it again: its input's host does not resolve here, so it fails as a
            # download, never as the lost attempt of a dead worker.
            assert after.error is not None and after.error.error_type == "file_download_error", after.error
        else:
            assert after.status in (Status.IN_QUEUE, Status.IN_PROGRESS) and after.error is None
        assert httpx.get(server.base + "/health", timeout=5).status_code == 200
        assert f"{worker['id']} (pid {stopped_pid}) has sent no heartbeat" in server.log_text()
    finally:
        if stopped_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped_pid, signal.SIGCONT)
        server.stop()


def test_a_locked_database_does_not_get_a_healthy_worker_killed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the database beat was the only evidence of life, so a database locked for longer than the
    stall timeout (the worker's beat blocked in its busy timeout, readers still served in WAL mode) got the
    healthy worker SIGKILLed. Its local beat file (server/local_beat.py) keeps it alive now."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("VACE_WORKER_STALL_TIMEOUT_S", "2")
    server = start_server(data_dir, workers=1, timeout=300)
    store = open_job_store(data_dir / "jobs.sqlite3")
    try:
        [worker] = [w for w in store.workers() if w["state"] == "ready"]
        lock = sqlite3.connect(data_dir / "jobs.sqlite3", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # writers wait; WAL readers (the supervisor) still read
        try:
            time.sleep(6.0)  # three stall timeouts, several supervisor checks
            assert heartbeat_of(data_dir / "jobs.sqlite3", worker["id"]) is not None
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        time.sleep(1.0)
        os.kill(int(worker["pid"]), 0)  # still the same, living process
        assert "has sent no heartbeat" not in server.log_text()
        assert [w["id"] for w in store.workers()] == [worker["id"]]
    finally:
        server.stop()
