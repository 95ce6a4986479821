"""The job store's guarantees, on a real SQLite file: ordering, ownership, cancel, recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from server.contract.errors import internal_error
from server.jobs.model import PRIORITIES, CancelOutcome, Status
from server.jobs.sqlite import JobStore


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.sqlite3")


def submit(store: JobStore, priority: str = "normal", **kwargs: object):  # noqa: ANN201
    return store.submit("fal-ai/wan-vace-14b/depth", {"prompt": "p"}, public_base="http://h",
                        priority=PRIORITIES[priority], **kwargs)


def test_wal_mode_and_persistence(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = submit(store)
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    reopened = JobStore(tmp_path / "jobs.sqlite3")
    again = reopened.get(job.id)
    assert again is not None and again.status is Status.IN_QUEUE and again.input == {"prompt": "p"}


def test_claim_order_is_priority_then_arrival(store: JobStore) -> None:
    low = submit(store, "low")
    first = submit(store)
    second = submit(store)
    high = submit(store, "high")
    assert [store.queue_position(j) for j in (high, first, second, low)] == [0, 1, 2, 3]
    claimed = [store.claim("w").id for _ in range(4)]
    assert claimed == [high.id, first.id, second.id, low.id]
    assert store.claim("w") is None


def test_concurrent_claims_never_share_a_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    ids = {submit(store).id for _ in range(40)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        local = JobStore(tmp_path / "jobs.sqlite3")
        while (job := local.claim(name)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)


def test_only_the_owning_worker_can_finish_a_job(store: JobStore) -> None:
    job = submit(store)
    assert store.claim("w1").id == job.id
    assert not store.complete(job.id, "w2", {"video": {}})
    assert not store.fail(job.id, "w2", internal_error("x"))
    assert store.complete(job.id, "w1", {"seed": 1})
    assert not store.complete(job.id, "w1", {"seed": 2}), "a result is written once"
    done = store.get(job.id)
    assert done.status is Status.COMPLETED and done.output == {"seed": 1} and done.error is None
    assert done.inference_time is not None and done.inference_time >= 0


def test_cancel_outcomes(store: JobStore) -> None:
    finished = submit(store)
    assert store.claim("w").id == finished.id
    store.complete(finished.id, "w", {})
    running = submit(store)
    assert store.claim("w").id == running.id
    queued = submit(store)

    assert store.request_cancel(queued.id) is CancelOutcome.OK
    cancelled = store.get(queued.id)
    assert cancelled.status is Status.COMPLETED and cancelled.error.error_type == "client_cancelled"
    assert cancelled.error.status_code == 499
    assert store.claim("w") is None, "a cancelled queued job is never started"

    assert store.request_cancel(running.id) is CancelOutcome.CANCELLATION_REQUESTED
    assert store.is_cancel_requested(running.id)
    assert store.get(running.id).status is Status.IN_PROGRESS
    assert store.request_cancel(finished.id) is CancelOutcome.ALREADY_COMPLETED
    assert store.request_cancel("nope") is CancelOutcome.NOT_FOUND


def test_graceful_requeue_does_not_spend_an_attempt(store: JobStore) -> None:
    job = submit(store)
    store.claim("w")
    assert store.requeue(job.id, "w", count_attempt=False)
    again = store.get(job.id)
    assert again.status is Status.IN_QUEUE and again.attempts == 0 and again.worker_id is None
    assert store.claim("w2").attempts == 1


def test_orphans_are_retried_then_failed(store: JobStore) -> None:
    job = submit(store)
    store.claim("dead-1")
    assert store.recover_orphans(live_worker_ids=set(), max_attempts=2) == [job.id]
    assert store.get(job.id).status is Status.IN_QUEUE
    store.claim("dead-2")
    assert store.get(job.id).attempts == 2
    store.recover_orphans(set(), max_attempts=2)
    failed = store.get(job.id)
    assert failed.status is Status.COMPLETED
    assert failed.error.error_type == "runner_disconnected" and failed.error.status_code == 503
    # The dead worker's late answer is ignored: the job is not reported twice.
    assert not store.complete(job.id, "dead-2", {"late": True})


def test_live_workers_keep_their_jobs(store: JobStore) -> None:
    job = submit(store)
    store.claim("alive")
    assert store.recover_orphans({"alive"}, max_attempts=2) == []
    assert store.get(job.id).status is Status.IN_PROGRESS


def test_cancel_requested_orphan_ends_cancelled(store: JobStore) -> None:
    job = submit(store)
    store.claim("w")
    store.request_cancel(job.id)
    store.recover_orphans(set(), max_attempts=5)
    assert store.get(job.id).error.error_type == "client_cancelled"


def test_start_deadline_expires_unstarted_jobs(store: JobStore) -> None:
    late = submit(store, start_deadline=time.time() - 1)
    on_time = submit(store, start_deadline=time.time() + 60)
    assert store.claim("w").id == on_time.id
    expired = store.get(late.id)
    assert expired.status is Status.COMPLETED and expired.error.error_type == "request_timeout"
    assert expired.error.status_code == 504


def test_logs_are_ordered_and_incremental(store: JobStore) -> None:
    job = submit(store)
    for i in range(3):
        store.add_log(job.id, f"line {i}")
    entries = store.logs(job.id)
    assert [e.message for e in entries] == ["line 0", "line 1", "line 2"]
    assert [e.message for e in store.logs(job.id, after_id=entries[0].id)] == ["line 1", "line 2"]
