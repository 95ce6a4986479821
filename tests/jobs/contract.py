"""The JobStore contract (server/jobs/store.py), as tests every backend runs.

A backend's test module subclasses `JobStoreContract` and implements `make_store` (huey's pattern: one
suite, many storages). Each test names the guarantee it checks; nothing here may depend on a backend.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from server.contract.errors import internal_error
from server.jobs.model import PRIORITIES, CancelOutcome, Job, Status
from server.jobs.store import JobStore

ENDPOINT = "fal-ai/wan-vace-14b/depth"


def submit(store: JobStore, priority: str = "normal", **kwargs: Any) -> Job:
    return store.submit(ENDPOINT, {"prompt": "p"}, public_base="http://h", priority=PRIORITIES[priority],
                        **kwargs)


def claimed(store: JobStore, worker_id: str) -> Job:
    job = store.claim(worker_id)
    assert job is not None
    return job


def got(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id)
    assert job is not None
    return job


def finished(store: JobStore, output: dict[str, Any] | None = None, **kwargs: Any) -> Job:
    job = store.submit(ENDPOINT, {"prompt": "p"}, public_base="http://h", **kwargs)
    assert claimed(store, "w1").id == job.id
    assert store.complete(job.id, "w1", output or {})
    return got(store, job.id)


class JobStoreContract:
    """Behaviour every JobStore backend must show."""

    def make_store(self, tmp_path: Path) -> JobStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> JobStore:
        return self.make_store(tmp_path)

    # -- submit, read, queue order ---------------------------------------------------------------------

    def test_submitted_job_is_queued_with_its_input(self, store: JobStore) -> None:
        job = store.submit(ENDPOINT, {"prompt": "p", "n": [1, 2]}, public_base="http://h",
                           webhook_url="http://hook.test/")
        again = got(store, job.id)
        assert again.status is Status.IN_QUEUE and again.attempts == 0 and again.worker_id is None
        assert again.input == {"prompt": "p", "n": [1, 2]} and again.endpoint == ENDPOINT
        assert again.webhook_url == "http://hook.test/" and again.public_base == "http://h"
        assert again.output is None and again.error is None and not again.cancel_requested
        status = store.get_status(job.id)
        assert status is not None and status.status is Status.IN_QUEUE and status.id == job.id
        assert store.get("nope") is None and store.get_status("nope") is None

    def test_claim_order_is_priority_then_arrival(self, store: JobStore) -> None:
        low = submit(store, "low")
        first = submit(store)
        second = submit(store)
        high = submit(store, "high")
        assert [store.queue_position(j) for j in (high, first, second, low)] == [0, 1, 2, 3]
        assert store.count_queued() == 4
        assert [claimed(store, "w").id for _ in range(4)] == [high.id, first.id, second.id, low.id]
        assert store.claim("w") is None
        assert store.count_queued() == 0

    def test_queue_positions_move_up_as_jobs_are_claimed(self, store: JobStore) -> None:
        jobs = [submit(store) for _ in range(3)]
        claimed(store, "w")
        status = store.get_status(jobs[2].id)
        assert status is not None and store.queue_position(status) == 1

    def test_concurrent_claims_never_share_a_job(self, store: JobStore) -> None:
        ids = {submit(store).id for _ in range(40)}
        taken: list[str] = []
        lock = threading.Lock()

        def claimer(name: str) -> None:
            while (job := store.claim(name)) is not None:
                with lock:
                    taken.append(job.id)

        threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(taken) == sorted(ids)

    # -- ownership and completion ----------------------------------------------------------------------

    def test_only_the_owning_worker_can_finish_a_job(self, store: JobStore) -> None:
        job = submit(store)
        assert claimed(store, "w1").id == job.id
        assert got(store, job.id).worker_id == "w1" and got(store, job.id).attempts == 1
        assert not store.complete(job.id, "w2", {"video": {}})
        assert not store.fail(job.id, "w2", internal_error("x"))
        assert not store.requeue(job.id, "w2", count_attempt=True)
        assert store.complete(job.id, "w1", {"seed": 1})
        assert not store.complete(job.id, "w1", {"seed": 2}), "a result is written once"
        done = got(store, job.id)
        assert done.status is Status.COMPLETED and done.output == {"seed": 1} and done.error is None
        assert done.inference_time is not None and done.inference_time >= 0

    def test_a_completed_job_is_never_failed_or_requeued(self, store: JobStore) -> None:
        job = finished(store, {"seed": 1})
        assert not store.fail(job.id, None, internal_error("late"))
        assert not store.fail(job.id, "w1", internal_error("late"))
        assert not store.requeue(job.id, "w1", count_attempt=False)
        assert store.recover_orphans(set(), max_attempts=1) == []
        assert got(store, job.id).output == {"seed": 1} and got(store, job.id).error is None

    def test_a_failed_job_carries_its_error(self, store: JobStore) -> None:
        job = submit(store)
        claimed(store, "w1")
        assert store.fail(job.id, "w1", internal_error("boom"))
        failed = got(store, job.id)
        assert failed.status is Status.COMPLETED and failed.output is None
        assert failed.error is not None and failed.error.message == internal_error("boom").message
        status = store.get_status(job.id)
        assert status is not None and status.error_type == failed.error.error_type
        assert not store.complete(job.id, "w1", {}), "a job completes once"

    def test_the_server_can_fail_a_queued_job(self, store: JobStore) -> None:
        job = submit(store)
        assert store.fail(job.id, None, internal_error("shutting down"))
        assert got(store, job.id).status is Status.COMPLETED and store.claim("w") is None

    # -- cancel ----------------------------------------------------------------------------------------

    # -- what a finished job keeps; what polls read --------------------------------------------------

    def test_every_way_of_completing_drops_the_input(self, store: JobStore) -> None:
        """Completed, failed by its worker or the server, cancelled queued or running, expired unstarted,
        failed out of attempts: no finished job keeps its input (a client that submits and cancels large
        inputs must not grow the store)."""
        big = {"prompt": "p", "video_url": "data:video/mp4;base64," + "A" * 4096}

        def queued() -> Job:
            return store.submit(ENDPOINT, big, public_base="http://h")

        def running(worker: str) -> Job:
            job = queued()
            assert claimed(store, worker).id == job.id
            return job

        done = running("w1")
        assert got(store, done.id).input == big, "a running job keeps its input"
        assert store.complete(done.id, "w1", {"seed": 3})
        failed = running("w2")
        assert store.fail(failed.id, "w2", internal_error("boom"))
        server_failed = queued()
        assert store.fail(server_failed.id, None, internal_error("stop"))
        cancelled_queued = queued()
        assert store.request_cancel(cancelled_queued.id) is CancelOutcome.OK
        cancelled_running = running("w3")
        assert store.request_cancel(cancelled_running.id) is CancelOutcome.CANCELLATION_REQUESTED
        assert got(store, cancelled_running.id).input == big
        lost = running("w4")
        assert sorted(store.recover_orphans(set(), max_attempts=1)) == sorted([cancelled_running.id, lost.id])
        expired = store.submit(ENDPOINT, big, public_base="http://h", start_deadline=time.time() - 1)
        assert store.claim("w5") is None
        for job in (done, failed, server_failed, cancelled_queued, cancelled_running, lost, expired):
            after = got(store, job.id)
            assert after.status is Status.COMPLETED and after.input == {}, job.id
        assert got(store, done.id).output == {"seed": 3}, "the output is kept"
        assert got(store, expired.id).error is not None

    def test_get_result_answers_without_the_input(self, store: JobStore) -> None:
        done = finished(store, {"video": {"url": "/files/t/v.mp4"}, "seed": 5})
        queued = submit(store)
        waiting = store.get_result(queued.id)
        assert waiting is not None and waiting.status is Status.IN_QUEUE
        assert waiting.output is None and waiting.error is None and waiting.id == queued.id
        assert not hasattr(waiting, "input")
        assert claimed(store, "w8").id == queued.id
        result = store.get_result(done.id)
        assert result is not None and result == got(store, done.id).result
        assert result.status is Status.COMPLETED and result.output == {"video": {"url": "/files/t/v.mp4"},
                                                                       "seed": 5}
        failed = submit(store)
        claimed(store, "w9")
        assert store.fail(failed.id, "w9", internal_error("boom"))
        failed_result = store.get_result(failed.id)
        assert failed_result is not None and failed_result.error == got(store, failed.id).error
        assert failed_result.output is None
        assert store.get_result("nope") is None

    def test_cancel_outcomes(self, store: JobStore) -> None:
        done = finished(store)
        running = submit(store)
        assert claimed(store, "w").id == running.id
        queued = submit(store)

        assert store.request_cancel(queued.id) is CancelOutcome.OK
        cancelled = got(store, queued.id)
        assert cancelled.status is Status.COMPLETED and cancelled.error is not None
        assert cancelled.error.error_type == "client_cancelled" and cancelled.error.status_code == 499
        assert store.claim("w") is None, "a cancelled queued job is never started"

        assert store.request_cancel(running.id) is CancelOutcome.CANCELLATION_REQUESTED
        assert store.is_cancel_requested(running.id)
        assert got(store, running.id).status is Status.IN_PROGRESS
        assert store.request_cancel(done.id) is CancelOutcome.ALREADY_COMPLETED
        assert got(store, done.id).error is None
        assert store.request_cancel("nope") is CancelOutcome.NOT_FOUND
        assert not store.is_cancel_requested("nope")

    def test_cancel_requested_orphan_ends_cancelled(self, store: JobStore) -> None:
        job = submit(store)
        claimed(store, "w")
        store.request_cancel(job.id)
        store.recover_orphans(set(), max_attempts=5)
        error = got(store, job.id).error
        assert error is not None and error.error_type == "client_cancelled"

    def test_release_leaves_cancel_requested_jobs_to_recovery(self, store: JobStore) -> None:
        keep, cancel = submit(store), submit(store)
        claimed(store, "w")
        claimed(store, "w")
        store.request_cancel(cancel.id)
        assert store.release("w") == [keep.id]
        assert got(store, keep.id).status is Status.IN_QUEUE and got(store, keep.id).attempts == 0
        assert got(store, cancel.id).status is Status.IN_PROGRESS

    # -- attempts and requeue --------------------------------------------------------------------------

    def test_graceful_requeue_does_not_spend_an_attempt(self, store: JobStore) -> None:
        job = submit(store)
        claimed(store, "w")
        assert store.requeue(job.id, "w", count_attempt=False)
        again = got(store, job.id)
        assert again.status is Status.IN_QUEUE and again.attempts == 0 and again.worker_id is None
        assert again.started_at is None
        assert claimed(store, "w2").attempts == 1

    def test_counted_requeue_keeps_the_attempt(self, store: JobStore) -> None:
        job = submit(store)
        claimed(store, "w")
        assert store.requeue(job.id, "w", count_attempt=True)
        assert got(store, job.id).attempts == 1 and claimed(store, "w2").attempts == 2
        assert not store.complete(job.id, "w", {}), "the old worker lost the job"

    def test_orphans_are_retried_then_failed(self, store: JobStore) -> None:
        job = submit(store)
        claimed(store, "dead-1")
        assert store.recover_orphans(live_worker_ids=set(), max_attempts=2) == [job.id]
        assert got(store, job.id).status is Status.IN_QUEUE
        claimed(store, "dead-2")
        assert got(store, job.id).attempts == 2
        store.recover_orphans(set(), max_attempts=2)
        failed = got(store, job.id)
        assert failed.status is Status.COMPLETED and failed.error is not None
        assert failed.error.error_type == "runner_disconnected" and failed.error.status_code == 503
        # The dead worker's late answer is ignored: the job is not reported twice.
        assert not store.complete(job.id, "dead-2", {"late": True})

    def test_live_workers_keep_their_jobs(self, store: JobStore) -> None:
        job = submit(store)
        claimed(store, "alive")
        assert store.recover_orphans({"alive"}, max_attempts=2) == []
        assert got(store, job.id).status is Status.IN_PROGRESS

    # -- start deadlines -------------------------------------------------------------------------------

    def test_start_deadline_expires_unstarted_jobs(self, store: JobStore) -> None:
        late = submit(store, start_deadline=time.time() - 1)
        on_time = submit(store, start_deadline=time.time() + 60)
        assert claimed(store, "w").id == on_time.id
        expired = got(store, late.id)
        assert expired.status is Status.COMPLETED and expired.error is not None
        assert expired.error.error_type == "request_timeout" and expired.error.status_code == 504

    def test_expire_start_deadlines_fails_only_late_queued_jobs(self, store: JobStore) -> None:
        running = submit(store, start_deadline=time.time() + 0.5)
        assert claimed(store, "w").id == running.id
        late = submit(store, start_deadline=time.time() - 1)
        later = submit(store, start_deadline=time.time() + 60)
        assert store.expire_start_deadlines() == [late.id]
        assert store.expire_start_deadlines() == []  # once
        assert store.expire_start_deadlines(now=time.time() + 120) == [later.id]  # a running job never
        assert got(store, running.id).status is Status.IN_PROGRESS
        error = got(store, late.id).error
        assert error is not None and (error.error_type, error.status_code) == ("request_timeout", 504)

    # -- logs ------------------------------------------------------------------------------------------

    def test_logs_are_ordered_and_incremental(self, store: JobStore) -> None:
        job, other = submit(store), submit(store)
        for i in range(3):
            store.add_log(job.id, f"line {i}")
            store.add_log(other.id, f"other {i}", level="WARNING")
        entries = store.logs(job.id)
        assert [e.message for e in entries] == ["line 0", "line 1", "line 2"]
        assert {e.level for e in entries} == {"INFO"}
        assert [e.message for e in store.logs(job.id, after_id=entries[0].id)] == ["line 1", "line 2"]
        assert store.logs(job.id, after_id=entries[-1].id) == []

    # -- worker registry -------------------------------------------------------------------------------

    def test_worker_registry(self, store: JobStore) -> None:
        store.set_worker_state("w2", 20, "loading", "tiny")
        store.set_worker_state("w1", 10, "loading")
        store.set_worker_state("w1", 11, "ready", "tiny", "detail")
        rows = store.workers()
        assert [(w["id"], w["pid"], w["state"], w["model"], w["detail"]) for w in rows] == [
            ("w1", 11, "ready", "tiny", "detail"), ("w2", 20, "loading", "tiny", None)]
        before = rows[0]["heartbeat"]
        store.heartbeat("w1")
        assert store.workers()[0]["heartbeat"] >= before
        store.remove_worker("w2")
        assert [w["id"] for w in store.workers()] == ["w1"]
        store.clear_workers()
        assert store.workers() == []

    def test_worker_capacity_is_published_with_its_state(self, store: JobStore) -> None:
        """server/contract/capacity.py's table round-trips; every registration replaces it (a restarted
        worker's old table never lingers), and heartbeats keep it."""
        table = {"720p": {"16:9": 121, "9:16": 121, "1:1": 201, "auto": 125}, "480p": {"16:9": 0}}
        store.set_worker_state("w1", 10, "loading", "tiny")
        assert store.workers()[0]["capacity"] is None
        store.set_worker_state("w1", 10, "ready", "tiny", capacity=table)
        store.heartbeat("w1")
        assert store.workers()[0]["capacity"] == table
        store.workers()[0]["capacity"]["720p"]["16:9"] = 1  # a caller's copy: the store is unchanged
        assert store.workers()[0]["capacity"] == table
        store.set_worker_state("w1", 11, "loading", "tiny")
        assert store.workers()[0]["capacity"] is None

    # -- webhook outbox --------------------------------------------------------------------------------

    def test_outbox_enqueues_each_completed_webhook_job_once(self, store: JobStore) -> None:
        hooked = finished(store, webhook_url="http://hook.test/")
        finished(store)  # no webhook: no delivery
        pending = submit(store, webhook_url="http://hook.test/")  # not completed yet
        outbox = store.webhooks
        assert outbox.enqueue_completed(3600) == 1
        assert outbox.enqueue_completed(3600) == 0
        assert outbox.get(pending.id) is None
        delivery = outbox.get(hooked.id)
        assert delivery is not None and delivery.state == "pending" and delivery.attempts == 0
        assert [d.job_id for d in outbox.due()] == [hooked.id]

    def test_outbox_skips_jobs_completed_too_long_ago(self, store: JobStore) -> None:
        finished(store, webhook_url="http://hook.test/")
        time.sleep(0.05)
        assert store.webhooks.enqueue_completed(0.01) == 0

    def test_outbox_delivers_and_retries(self, store: JobStore) -> None:
        ok = finished(store, webhook_url="http://hook.test/ok")
        retry = finished(store, webhook_url="http://hook.test/retry")
        dead = finished(store, webhook_url="http://hook.test/dead")
        outbox = store.webhooks
        outbox.enqueue_completed(3600)
        outbox.mark_delivered(ok.id, 200)
        outbox.mark_failed_attempt(retry.id, 500, "server error", next_at=time.time() + 3600)
        outbox.mark_failed_attempt(dead.id, None, "x" * 1000, next_at=None)
        delivered, later, failed = outbox.get(ok.id), outbox.get(retry.id), outbox.get(dead.id)
        assert delivered is not None and delivered.state == "delivered" and delivered.attempts == 1
        assert delivered.last_status == 200 and delivered.last_error is None
        assert later is not None and later.state == "pending" and later.attempts == 1
        assert later.last_status == 500 and later.last_error == "server error"
        assert failed is not None and failed.state == "failed" and failed.last_error == "x" * 500
        assert outbox.due() == [], "neither delivered, failed nor not-yet-due deliveries are due"
        outbox.mark_failed_attempt(retry.id, 502, "again", next_at=time.time() - 1)
        due = outbox.due()
        assert [d.job_id for d in due] == [retry.id] and due[0].attempts == 2

    def test_outbox_due_is_soonest_first_and_limited(self, store: JobStore) -> None:
        jobs = [finished(store, webhook_url=f"http://hook.test/{i}") for i in range(3)]
        outbox = store.webhooks
        outbox.enqueue_completed(3600)
        now = time.time()
        for offset, job in zip((3, 1, 2), jobs, strict=True):
            outbox.mark_failed_attempt(job.id, 500, "e", next_at=now - 10 + offset)
        assert [d.job_id for d in outbox.due(limit=2)] == [jobs[1].id, jobs[2].id]

    # -- retention -------------------------------------------------------------------------------------

    def test_retention_finds_completed_jobs_past_the_cutoff_oldest_first(self, store: JobStore) -> None:
        first, second = finished(store), finished(store)
        running = submit(store)
        claimed(store, "w")
        queued = submit(store)
        expired = store.retention.expired(time.time() + 1)
        assert [j.id for j in expired] == [first.id, second.id]
        assert [j.id for j in store.retention.expired(time.time() + 1, limit=1)] == [first.id]
        assert store.retention.expired(time.time() - 3600) == []
        assert store.retention.is_active(running.id) and store.retention.is_active(queued.id)
        assert not store.retention.is_active(first.id) and not store.retention.is_active("nope")

    def test_retention_deletes_only_completed_jobs_with_their_logs_and_delivery(self,
                                                                               store: JobStore) -> None:
        done = finished(store, webhook_url="http://hook.test/")
        store.add_log(done.id, "line")
        store.webhooks.enqueue_completed(3600)
        queued = submit(store)
        assert store.retention.delete_completed([done.id, queued.id, "nope"]) == 1
        assert store.get(done.id) is None and store.logs(done.id) == []
        assert store.webhooks.get(done.id) is None
        assert got(store, queued.id).status is Status.IN_QUEUE

    def test_retention_references_search_inputs_and_outputs(self, store: JobStore) -> None:
        finished(store, {"video": {"url": "/files/tokenB/out.mp4"}})
        store.submit(ENDPOINT, {"video_url": "http://h/files/tokenA/in.mp4"}, public_base="http://h")
        assert store.retention.references("/files/tokenA/")
        assert store.retention.references("/files/tokenB/")
        assert not store.retention.references("/files/tokenC/")
