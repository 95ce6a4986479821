"""Start timeouts expire on time, with no worker to claim anything (`--workers 0`): the API's sweeper fails
the job with fal's 504 `request_timeout` and `X-Fal-Request-Timeout-Type: user` (without that header
@fal-ai/client retries result())."""

from __future__ import annotations

import time
from pathlib import Path

from server.api.background.start_timeouts import StartTimeoutSweeper
from server.jobs.factory import MEMORY, open_job_store
from tests.server.conftest import start_server

APP = "fal-ai/wan-vace-14b"


def test_a_start_timeout_expires_on_time_without_any_worker(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", workers=0)
    try:
        with server.client() as client:
            submitted = client.post(f"/queue/{APP}/depth", headers={"X-Fal-Request-Timeout": "0.5"},
                                    json={"prompt": "p", "video_url": "https://example.com/v.mp4"})
            assert submitted.status_code == 200
            started = time.monotonic()
            while client.get(submitted.json()["status_url"]).json()["status"] != "COMPLETED":
                assert time.monotonic() - started < 5, "the start timeout did not expire"
                time.sleep(0.05)
            took = time.monotonic() - started
            result = client.get(submitted.json()["response_url"])
    finally:
        server.stop()
    assert took < 2.0  # 0.5 s deadline + the sweeper's 0.25 s tick, with margin for a busy machine
    assert result.status_code == 504
    assert result.headers["X-Fal-Request-Timeout-Type"] == "user"
    assert result.headers["X-Fal-Error-Type"] == "request_timeout"
    assert result.json()["error_type"] == "request_timeout"


def test_one_sweep_expires_only_what_is_late() -> None:
    store = open_job_store(MEMORY)
    late = store.submit(f"{APP}/depth", {"prompt": "p"}, public_base="http://x",
                        start_deadline=time.time() - 0.01)
    store.submit(f"{APP}/depth", {"prompt": "p"}, public_base="http://x", start_deadline=time.time() + 60)
    sweeper = StartTimeoutSweeper(store)
    assert sweeper.sweep_once() == [late.id]
    assert sweeper.sweep_once() == [] and store.count_queued() == 1
