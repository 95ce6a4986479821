"""The SQLite job store: the shared contract, plus what only a file shared by processes has to show."""

from __future__ import annotations

import threading
from pathlib import Path

from server.jobs.factory import open_job_store
from server.jobs.model import Status
from server.jobs.sqlite import SqliteJobStore
from server.jobs.store import JobStore
from tests.jobs.contract import JobStoreContract, submit


class TestSqliteJobStore(JobStoreContract):
    def make_store(self, tmp_path: Path) -> JobStore:
        return open_job_store(tmp_path / "jobs.sqlite3")


def test_wal_mode_and_persistence(tmp_path: Path) -> None:
    store = open_job_store(tmp_path / "jobs.sqlite3")
    assert isinstance(store, SqliteJobStore)
    job = submit(store)
    assert store.db.conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    reopened = open_job_store(tmp_path / "jobs.sqlite3")
    again = reopened.get(job.id)
    assert again is not None and again.status is Status.IN_QUEUE and again.input == {"prompt": "p"}


def test_claims_from_separate_store_objects_never_share_a_job(tmp_path: Path) -> None:
    """Each worker process opens its own store on the same file."""
    store = open_job_store(tmp_path / "jobs.sqlite3")
    ids = {submit(store).id for _ in range(40)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        local = open_job_store(tmp_path / "jobs.sqlite3")
        while (job := local.claim(name)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)


def test_webhook_deliveries_survive_reopening(tmp_path: Path) -> None:
    store = open_job_store(tmp_path / "jobs.sqlite3")
    job = store.submit("e", {}, public_base="http://h", webhook_url="http://hook.test/")
    store.claim("w")
    store.complete(job.id, "w", {})
    store.webhooks.enqueue_completed(3600)
    store.close()
    delivery = open_job_store(tmp_path / "jobs.sqlite3").webhooks.get(job.id)
    assert delivery is not None and delivery.state == "pending"
