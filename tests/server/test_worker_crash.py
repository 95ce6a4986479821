"""A worker SIGKILLed mid-job: the supervisor starts a new one, the job is retried and completes once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from server.jobs.factory import open_job_store
from tests.server.conftest import Media, data_uri, start_server, wait_completed, wait_for_step

APP = "fal-ai/wan-vace-14b"


def worker_pids(data_dir: Path) -> list[int]:
    return [w["pid"] for w in open_job_store(data_dir / "jobs.sqlite3").workers() if w["state"] == "ready"]


def test_killed_worker_is_replaced_and_job_retried(tmp_path: Path, media: Media) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        with server.client() as client:
            submit = client.post(f"/queue/{APP}/depth", json={
                "prompt": "x", "video_url": data_uri(media.control), "resolution": "240p",
                "num_inference_steps": 4, "seed": 3,
            }).json()
            wait_for_step(client, submit["status_url"])
            [pid] = worker_pids(data_dir)
            os.kill(pid, signal.SIGKILL)

            # The API keeps answering while the worker is down and being replaced.
            assert client.get(submit["status_url"]).status_code in (200, 202)
            status = wait_completed(client, submit["status_url"])
            assert "error" not in status, status
            messages = [e["message"] for e in status["logs"]]
            assert any("attempt 2" in m for m in messages), messages
            assert sum(m.startswith("Completed") for m in messages) == 1
            result = client.get(submit["response_url"]).json()
            assert result["seed"] == 3
            assert httpx.get(result["video"]["url"]).status_code == 200
            [new_pid] = worker_pids(data_dir)
            assert new_pid != pid
            assert client.get("/health").status_code == 200
    finally:
        server.stop()
