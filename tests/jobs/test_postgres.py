"""The PostgreSQL job store: the shared contract against a real server (tests/services/postgres.py), plus
what only a store shared by boxes has to show: leases instead of process exits, per-box registries,
claimed webhook deliveries and NOTIFY wake-ups."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.jobs.factory import open_job_store
from server.jobs.model import Status
from server.jobs.postgres import PostgresJobStore
from server.jobs.store import JobStore, WakesWorkers
from tests.jobs.contract import JobStoreContract, claimed, finished, got, submit
from tests.services.postgres import PostgresServer

_opened: list[PostgresJobStore] = []


def open_store(url: str, node: str, lease_s: float = 30.0, max_attempts: int = 2) -> PostgresJobStore:
    store = open_job_store(url, node=node, lease_s=lease_s, max_attempts=max_attempts)
    assert isinstance(store, PostgresJobStore)
    _opened.append(store)
    return store


@pytest.fixture
def db_url(postgres_server: PostgresServer) -> Iterator[str]:
    yield postgres_server.new_database()
    while _opened:  # each store's pool has threads of its own
        _opened.pop().close()


class TestPostgresJobStore(JobStoreContract):
    @pytest.fixture
    def store(self, postgres_server: PostgresServer, tmp_path: Path) -> Iterator[JobStore]:
        store = open_job_store(postgres_server.new_database(), node="box-a")
        yield store
        store.close()


def test_claims_from_separate_boxes_never_share_a_job(db_url: str) -> None:
    stores = [open_store(db_url, f"box-{i}") for i in range(4)]
    ids = {submit(stores[0]).id for _ in range(60)}
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(store: PostgresJobStore, name: str) -> None:
        while (job := store.claim(name)) is not None:
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=claimer, args=(s, f"w{i}")) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(ids)


def test_another_box_never_recovers_a_job_whose_lease_is_alive(db_url: str) -> None:
    """A supervisor starting on box B (recover_orphans with no live workers) must not take box A's job."""
    box_a, box_b = open_store(db_url, "a"), open_store(db_url, "b")
    job = submit(box_a)
    claimed(box_a, "a-w1")
    assert box_b.recover_orphans(set(), max_attempts=2) == []
    box_b.clear_workers()
    assert got(box_b, job.id).status is Status.IN_PROGRESS and got(box_b, job.id).worker_id == "a-w1"
    # Box A's own supervisor saw its worker exit: recovered at once.
    assert box_a.recover_orphans(set(), max_attempts=2) == [job.id]
    assert got(box_a, job.id).status is Status.IN_QUEUE


def test_a_lost_box_is_recovered_after_its_lease_by_another_boxs_heartbeat(db_url: str) -> None:
    box_a, box_b = open_store(db_url, "a", lease_s=0.5), open_store(db_url, "b", lease_s=0.5)
    job = submit(box_a)
    claimed(box_a, "a-w1")
    for _ in range(3):  # heartbeats keep the lease alive past its length
        time.sleep(0.3)
        box_a.heartbeat("a-w1")
        box_b.heartbeat("b-w1")
        assert got(box_b, job.id).status is Status.IN_PROGRESS
    time.sleep(0.7)  # box A goes silent
    box_b.heartbeat("b-w1")
    again = got(box_b, job.id)
    assert again.status is Status.IN_QUEUE and again.attempts == 1 and again.worker_id is None
    taken = claimed(box_b, "b-w1")
    assert taken.id == job.id and taken.attempts == 2
    assert not box_a.complete(job.id, "a-w1", {"late": True}), "the stalled box lost the job"
    assert box_b.complete(job.id, "b-w1", {"ok": True}) and got(box_a, job.id).output == {"ok": True}


def test_an_expired_lease_out_of_attempts_fails_the_job_at_the_next_claim(db_url: str) -> None:
    box_a, box_b = open_store(db_url, "a", lease_s=0.2, max_attempts=1), open_store(db_url, "b", lease_s=0.2,
                                                                                   max_attempts=1)
    job = submit(box_a)
    claimed(box_a, "a-w1")
    time.sleep(0.4)
    assert box_b.claim("b-w1") is None
    error = got(box_b, job.id).error
    assert error is not None and error.error_type == "runner_disconnected"


def test_a_silent_box_shows_as_lost_until_it_beats_again(db_url: str) -> None:
    box_a, box_b = open_store(db_url, "a", lease_s=0.3), open_store(db_url, "b", lease_s=0.3)
    box_a.set_worker_state("a-w1", 1, "ready", "tiny")
    box_b.set_worker_state("b-w1", 2, "ready", "tiny")
    time.sleep(0.5)
    box_b.heartbeat("b-w1")
    assert {w["id"]: w["state"] for w in box_b.workers()} == {"a-w1": "lost", "b-w1": "ready"}
    box_a.heartbeat("a-w1")
    assert {w["id"]: w["state"] for w in box_b.workers()} == {"a-w1": "ready", "b-w1": "ready"}


def test_each_box_clears_only_its_own_workers(db_url: str) -> None:
    box_a, box_b = open_store(db_url, "a"), open_store(db_url, "b")
    box_a.set_worker_state("a-w1", 1, "ready", "tiny")
    box_b.set_worker_state("b-w1", 2, "ready", "tiny")
    box_b.clear_workers()
    assert [(w["id"], w["node"]) for w in box_b.workers()] == [("a-w1", "a")]


def test_two_replicas_never_get_the_same_webhook_delivery(db_url: str) -> None:
    """Each API replica's dispatcher polls `due`; a delivery handed to one is not due for the other."""
    replica_a, replica_b = open_store(db_url, "api-a"), open_store(db_url, "api-b")
    ids = {finished(replica_a, webhook_url=f"http://hook.test/{i}").id for i in range(30)}
    replica_a.webhooks.enqueue_completed(3600)
    replica_b.webhooks.enqueue_completed(3600)
    seen: list[list[str]] = [[], []]

    def poll(store: PostgresJobStore, into: list[str]) -> None:
        while batch := store.webhooks.due(limit=3):
            into.extend(d.job_id for d in batch)

    threads = [threading.Thread(target=poll, args=(s, seen[i])) for i, s in enumerate((replica_a, replica_b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen[0] + seen[1]) == sorted(ids), "every delivery handed out exactly once"


def test_submit_wakes_an_idle_worker(db_url: str) -> None:
    worker, api = open_store(db_url, "w"), open_store(db_url, "api")
    assert isinstance(worker, WakesWorkers)
    worker.wait_for_jobs(0.01)  # LISTEN is in place from here on
    threading.Timer(0.3, lambda: submit(api)).start()
    started = time.monotonic()
    worker.wait_for_jobs(10.0)
    waited = time.monotonic() - started
    assert 0.2 < waited < 5.0, waited
    assert worker.claim("w1") is not None


def test_jobs_outlive_the_connection(db_url: str) -> None:
    store = open_store(db_url, "a")
    job = submit(store)
    store.close()
    again = open_store(db_url, "b").get(job.id)
    assert again is not None and again.status is Status.IN_QUEUE and again.input == {"prompt": "p"}


def test_a_full_disk_is_enospc_and_changes_nothing(db_url: str) -> None:
    """PostgreSQL reports a full disk as SQLSTATE 53100 (disk_full); the store raises it as OSError(ENOSPC),
    which the API answers 507. Filling the server's disk for real would need a file system of its own: a
    trigger raises the same SQLSTATE from inside the INSERT instead."""
    import errno

    store = open_store(db_url, "box-a")
    kept = submit(store)
    store.db.execute("CREATE FUNCTION vace_test_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     " RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$")
    store.db.execute("CREATE TRIGGER vace_test_full BEFORE INSERT OR UPDATE ON vace_jobs"
                     " FOR EACH ROW EXECUTE FUNCTION vace_test_full()")
    with pytest.raises(OSError) as raised:
        submit(store)
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as raised:
        store.request_cancel(kept.id)  # inside a transaction
    assert raised.value.errno == errno.ENOSPC
    assert store.count_queued() == 1 and got(store, kept.id).status is Status.IN_QUEUE


def test_the_input_reaper_keeps_files_of_active_jobs_only(db_url: str, tmp_path: Path) -> None:
    """server/api/background/input_reaper.py over this store: large data: URIs of queued and running jobs
    stay, a finished job's go; the finished job's input is gone from its row too."""
    import base64

    from server.api.background.input_reaper import InputReaper
    from server.files.data_uris import DataUriFiles
    from server.files.local import LocalFileStore

    store = open_store(db_url, "box-a")
    inputs = DataUriFiles(LocalFileStore(tmp_path / "files"), tmp_path / "inputs", 2**20)
    uri = "data:video/mp4;base64," + base64.b64encode(b"v" * 8000).decode()
    jobs = []
    for _ in range(2):
        payload, token = inputs.spill({"prompt": "p", "video_url": uri}, "http://api")
        assert token is not None and payload["video_url"].startswith("http://api/files/")
        job = store.submit("depth", payload, public_base="http://api")
        inputs.bind(token, job.id)
        jobs.append((job, token))
    reaper = InputReaper(store, inputs)
    running = store.claim("w1")
    assert running is not None and running.id == jobs[0][0].id
    assert reaper.reap() == 0
    assert store.complete(running.id, "w1", {"seed": 1})
    assert got(store, running.id).input == {}
    assert reaper.reap() == 1
    assert not (tmp_path / "files" / jobs[0][1]).exists() and (tmp_path / "files" / jobs[1][1]).is_dir()


def test_a_database_from_before_capacity_tables_gains_the_column(db_url: str) -> None:
    """vace_workers created by an older release (no `capacity`) is altered when a store opens it."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE vace_workers (id TEXT PRIMARY KEY, node TEXT NOT NULL,"
                     " pid INTEGER NOT NULL, state TEXT NOT NULL, model TEXT, detail TEXT,"
                     " heartbeat DOUBLE PRECISION NOT NULL)")
        conn.execute("INSERT INTO vace_workers VALUES ('w0', 'box-a', 1, 'loading', NULL, NULL, 0)")
    store = open_store(db_url, "box-a")
    assert [(w["id"], w["capacity"]) for w in store.workers()] == [("w0", None)]
    store.set_worker_state("w0", 1, "ready", capacity={"720p": {"auto": 125}})
    assert open_store(db_url, "box-b").workers()[0]["capacity"] == {"720p": {"auto": 125}}
