"""The sync run route when the server starts shutting down while it waits on its job.

The app runs in-process with its real SQLite store and no workers; the test plays the worker through the
store (claim, complete, fail) so each ordering of "shutdown" and "job ends" is exact. The live SIGTERM
path is in test_shutdown.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.api.app import create_app
from server.contract.errors import cancelled_error
from server.jobs.factory import open_job_store
from server.jobs.model import Status
from server.jobs.store import JobStore
from server.settings import Settings

APP = "fal-ai/wan-vace-14b"
OUTPUT = {"video": {"url": "/files/t/out.mp4"}, "seed": 1}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, JobStore, object]]:
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0)
    app = create_app(settings, run_workers=False)
    with TestClient(app) as client:
        yield client, open_job_store(settings.db_path), app


def start_run(client: TestClient) -> tuple[threading.Thread, dict[str, httpx.Response]]:
    answer: dict[str, httpx.Response] = {}

    def run() -> None:
        answer["response"] = client.post(f"/run/{APP}/depth",
                                         json={"prompt": "x", "video_url": "https://example.com/v.mp4"})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answer


def claimed_job(store: JobStore) -> str:
    deadline = time.monotonic() + 10
    while (job := store.claim("w1")) is None:
        assert time.monotonic() < deadline, "the run route queued nothing"
        time.sleep(0.05)
    return job.id


def test_a_job_that_completes_after_the_shutdown_began_is_returned(served) -> None:
    """Encoding had begun when SIGTERM came: the cancel flag is too late, and the caller gets its video."""
    client, store, app = served
    thread, answer = start_run(client)
    job_id = claimed_job(store)
    app.state.begin_shutdown()
    time.sleep(0.6)  # the route has seen the shutdown and flagged the job
    assert store.get(job_id).cancel_requested  # type: ignore[union-attr]
    assert store.complete(job_id, "w1", OUTPUT)
    thread.join(10)
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert response.json()["video"]["url"].endswith("/files/t/out.mp4")


def test_a_job_cancelled_by_the_shutdown_answers_503(served) -> None:
    client, store, app = served
    thread, answer = start_run(client)
    job_id = claimed_job(store)
    app.state.begin_shutdown()
    time.sleep(0.6)
    store.fail(job_id, "w1", cancelled_error())  # the worker honoured the cancel at its next step
    thread.join(10)
    response = answer["response"]
    assert response.status_code == 503 and response.json()["error_type"] == "server_shutting_down"
    assert response.headers["retry-after"] == "30"


def test_no_job_is_created_once_the_shutdown_began(served) -> None:
    client, store, app = served
    app.state.begin_shutdown()
    response = client.post(f"/run/{APP}/depth", json={"prompt": "x", "video_url": "https://example.com/v.mp4"})
    assert response.status_code == 503
    assert store.count_queued() == 0 and store.claim("w1") is None
    queued = client.post(f"/queue/{APP}/depth", json={"prompt": "x", "video_url": "https://example.com/v.mp4"})
    assert queued.status_code == 200  # queue submits are kept: they run after the restart
    assert store.get(queued.json()["request_id"]).status is Status.IN_QUEUE  # type: ignore[union-attr]
