"""The whole server SIGKILLed with jobs in every state, then started again on the same data directory."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from server.contract.inputs import WanVACEPoseRequest
from server.jobs.factory import open_job_store
from tests.server.conftest import Media, data_uri, start_server, wait_completed, wait_for_step

APP = "fal-ai/wan-vace-14b"


def test_sigkill_loses_no_job(tmp_path: Path, media: Media) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    good = {"prompt": "x", "video_url": data_uri(media.control), "resolution": "240p", "seed": 5,
            "num_inference_steps": 4}
    bad = {"prompt": "x", "video_url": data_uri(media.not_a_video), "resolution": "240p"}
    with first.client() as client:
        failed = client.post(f"/queue/{APP}/depth", json=bad).json()
        wait_completed(client, failed["status_url"])
        running = client.post(f"/queue/{APP}/depth", json=good).json()
        queued = client.post(f"/queue/{APP}/pose", json=bad).json()
        cancelled = client.post(f"/queue/{APP}/pose", json=bad).json()
        assert client.put(cancelled["cancel_url"]).json() == {"status": "OK"}
        wait_for_step(client, running["status_url"])
        assert client.get(queued["status_url"]).json()["status"] == "IN_QUEUE"
    first.stop(signal.SIGKILL)  # the worker goes with it (parent-death signal), mid-generation

    states = {job: open_job_store(data_dir / "jobs.sqlite3").get(ids["request_id"]).status.value
              for job, ids in (("failed", failed), ("running", running), ("queued", queued))}
    assert states == {"failed": "COMPLETED", "running": "IN_PROGRESS", "queued": "IN_QUEUE"}

    second = start_server(data_dir, port=first.port)
    try:
        with second.client() as client:
            done = wait_completed(client, running["status_url"])
            assert "error" not in done, done
            messages = [e["message"] for e in done["logs"]]
            assert any("attempt 2" in m for m in messages), "the interrupted job ran again"
            result = client.get(running["response_url"]).json()
            assert result["seed"] == 5 and httpx.get(result["video"]["url"]).status_code == 200
            assert wait_completed(client, queued["status_url"])["error_type"] == "unsupported_video_format"
            assert client.get(failed["response_url"]).status_code == 422  # finished before: replayed as is
            assert client.get(cancelled["status_url"]).json()["error_type"] == "client_cancelled"
            assert client.get("/health").status_code == 200
    finally:
        second.stop()


def test_a_job_queued_by_the_previous_release_runs_after_the_upgrade(tmp_path: Path, media: Media) -> None:
    # The previous release stored the endpoint model's own dump and the seed (no `task`, no root fields);
    # server/contract/endpoints.py's canonical_input still reads such rows.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    old_row = WanVACEPoseRequest.model_validate(
        {"prompt": "x", "video_url": data_uri(media.control), "resolution": "240p", "num_inference_steps": 4}
    ).model_dump(mode="json") | {"seed": 9}
    queued = open_job_store(data_dir / "jobs.sqlite3").submit(f"{APP}/pose", old_row, public_base="http://x")
    server = start_server(data_dir)
    try:
        with server.client() as client:
            done = wait_completed(client, f"/queue/{APP}/requests/{queued.id}/status")
            assert "error" not in done, done
            result = client.get(f"/queue/{APP}/requests/{queued.id}").json()
            assert result["seed"] == 9 and result["video"]["file_name"].startswith("pose-")
    finally:
        server.stop()
