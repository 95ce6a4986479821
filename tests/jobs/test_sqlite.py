"""The SQLite job store: the shared contract, plus what only a file shared by processes has to show."""

from __future__ import annotations

import sqlite3
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


def test_a_large_input_is_kept_out_of_the_row_that_polls_read(tmp_path: Path) -> None:
    """SQLite walks a large value's overflow pages to reach the columns after it: an input kept in `jobs`
    made every status and result poll of its job read all of it."""
    store = open_job_store(tmp_path / "jobs.sqlite3")
    assert isinstance(store, SqliteJobStore)
    big = {"prompt": "p" * 2_000_000}
    job = store.submit("fal-ai/wan-vace-14b/depth", big, public_base="http://h")
    conn = store.db.conn()
    assert conn.execute("SELECT length(input) FROM jobs WHERE id = ?", (job.id,)).fetchone()[0] < 10
    assert store.get(job.id).input == big  # type: ignore[union-attr]
    claimed = store.claim("w1")
    assert claimed is not None and claimed.input == big
    assert store.complete(job.id, "w1", {"seed": 1})
    assert conn.execute("SELECT COUNT(*) FROM job_inputs").fetchone()[0] == 0


def test_rows_written_before_inputs_had_their_own_table_still_run(tmp_path: Path) -> None:
    """An upgraded data dir: a queued job whose input is still in its `jobs` row."""
    store = open_job_store(tmp_path / "jobs.sqlite3")
    assert isinstance(store, SqliteJobStore)
    job = submit(store)
    conn = store.db.conn()
    conn.execute("DELETE FROM job_inputs")
    conn.execute("UPDATE jobs SET input = ? WHERE id = ?", ('{"prompt": "old"}', job.id))
    assert store.get(job.id).input == {"prompt": "old"}  # type: ignore[union-attr]
    assert store.retention.references('"old"')
    claimed = store.claim("w1")
    assert claimed is not None and claimed.input == {"prompt": "old"}
    assert store.complete(job.id, "w1", {})
    assert store.get(job.id).input == {}  # type: ignore[union-attr]
    assert not store.retention.references('"old"')


def test_a_file_from_before_capacity_tables_gains_the_column(tmp_path: Path) -> None:
    """A jobs file written by an older release (workers without `capacity`) opens, and publishes."""
    path = tmp_path / "jobs.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE workers (id TEXT PRIMARY KEY, pid INTEGER NOT NULL, state TEXT NOT NULL,"
                " model TEXT, detail TEXT, heartbeat REAL NOT NULL)")
    old.execute("INSERT INTO workers VALUES ('w0', 1, 'ready', 'tiny', NULL, 0)")
    old.commit()
    old.close()
    store = open_job_store(path)
    assert [(w["id"], w["capacity"]) for w in store.workers()] == [("w0", None)]
    store.set_worker_state("w1", 2, "ready", capacity={"720p": {"16:9": 81}})
    assert open_job_store(path).workers()[1]["capacity"] == {"720p": {"16:9": 81}}
