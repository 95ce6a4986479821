"""server/jobs/telemetry.py's guarantees, checked against every backend (PostgreSQL: a real throwaway server,
tests/services/postgres.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.contract.errors import internal_error
from server.jobs.factory import open_job_store
from server.jobs.memory import MemoryJobStore
from server.jobs.model import PRIORITIES
from server.jobs.postgres import PostgresJobStore
from server.jobs.store import JobStore

Factory = Callable[[Path], JobStore]
BACKENDS: dict[str, Factory] = {
    "memory": lambda _: MemoryJobStore(),
    "sqlite": lambda tmp: open_job_store(tmp / "jobs.sqlite3"),
}


@pytest.fixture(params=[*sorted(BACKENDS), "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param != "postgres":
        yield BACKENDS[request.param](tmp_path)
        return
    server = request.getfixturevalue("postgres_server")
    opened = PostgresJobStore(server.new_database(), node="box-a")
    try:
        yield opened
    finally:
        opened.close()


def test_progress_is_the_last_write_and_goes_with_the_job(store: JobStore) -> None:
    job = store.submit("depth", {"prompt": "p", "resolution": "480p"}, public_base="http://x")
    assert store.telemetry.progress(job.id) is None
    store.telemetry.set_progress(job.id, {"phase": "fetch", "fraction": 0.1})
    store.telemetry.set_progress(job.id, {"phase": "denoise", "fraction": 0.5})
    assert store.telemetry.progress(job.id) == {"phase": "denoise", "fraction": 0.5}
    claimed = store.claim("w1")
    assert claimed is not None and store.complete(job.id, "w1", {"video": {}})
    assert store.retention.delete_completed([job.id]) == 1
    assert store.telemetry.progress(job.id) is None


def test_worker_stats_by_worker(store: JobStore) -> None:
    store.telemetry.set_worker_stats("w1", {"gpu_memory_bytes": 5})
    store.telemetry.set_worker_stats("w2", {"gpu_memory_bytes": 7})
    store.telemetry.set_worker_stats("w1", {"gpu_memory_bytes": 6})
    assert store.telemetry.worker_stats() == {"w1": {"gpu_memory_bytes": 6}, "w2": {"gpu_memory_bytes": 7}}


def test_queue_depth_by_priority(store: JobStore) -> None:
    for priority in ("high", "normal", "normal", "low"):
        store.submit("root", {"prompt": "p"}, public_base="http://x", priority=PRIORITIES[priority])
    assert store.telemetry.queued_by_priority() == {0: 1, 1: 2, 2: 1}
    store.claim("w1")  # the high one
    assert store.telemetry.queued_by_priority() == {1: 2, 2: 1}


def test_finished_and_submitted_since(store: JobStore) -> None:
    before = time.time()
    ok = store.submit("depth", {"prompt": "p", "resolution": "720p"}, public_base="http://x")
    bad = store.submit("pose", {"prompt": "p"}, public_base="http://x")
    assert [j.id for j in store.telemetry.submitted_since(before)] == [ok.id, bad.id]
    assert store.claim("w1") is not None and store.claim("w1") is not None
    store.telemetry.set_progress(ok.id, {"step_seconds": [0.5, 0.25]})
    store.complete(ok.id, "w1", {"video": {}})
    store.fail(bad.id, "w1", internal_error("boom"))
    finished = {f.id: f for f in store.telemetry.finished_since(before)}
    # The resolution survives the input, which completion drops (server/jobs/store.py).
    done = store.get(ok.id)
    assert done is not None and done.input == {}
    assert finished[ok.id].error_type is None and finished[ok.id].resolution == "720p"
    assert finished[ok.id].progress == {"step_seconds": [0.5, 0.25]}
    assert finished[ok.id].started_at is not None and finished[ok.id].endpoint == "depth"
    assert finished[bad.id].error_type == "runner_server_error" and finished[bad.id].resolution is None
    assert store.telemetry.finished_since(time.time() + 1) == []
