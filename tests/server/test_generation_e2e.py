"""End to end through the API with the real tiny WanVACE pipeline: submit -> status -> result -> MP4.

Each generation costs ~30 s here (the tiny VAE at 240p dominates), so there is one per implemented task.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from preprocessors.video_io import probe_video, read_video
from tests.server.conftest import LiveServer, Media, data_uri, start_server, wait_completed, wait_for_step

APP = "fal-ai/wan-vace-14b"


def download_video(url: str, dest: Path) -> Path:
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    dest.write_bytes(response.content)
    return dest


def assert_output(result: dict, dest: Path, *, frames: int, fps: float, width: int, height: int) -> None:
    video = result["video"]
    assert video["content_type"] == "video/mp4"
    path = download_video(video["url"], dest)
    assert video["file_size"] == path.stat().st_size
    info = probe_video(path)
    decoded, decoded_fps = read_video(path)
    assert (info.width, info.height) == (width, height)
    assert decoded.shape == (frames, height, width, 3)
    assert decoded_fps == fps
    assert decoded.std() > 0  # a real decoded picture, not an empty container


def test_queued_job_survives_restart_and_depth_runs(tmp_path: Path, media: Media) -> None:
    """Jobs queued on a server with no worker survive a SIGKILL and run after the restart."""
    data_dir = tmp_path / "data"
    api_only = start_server(data_dir, workers=0)
    port = api_only.port
    with api_only.client() as client:
        depth = client.post(f"/queue/{APP}/depth", json={
            "prompt": "a bar moving over a gradient", "video_url": data_uri(media.control),
            "resolution": "240p", "num_inference_steps": 2, "seed": 7,
        }).json()
        second = client.post(f"/queue/{APP}", json={
            "prompt": "x", "task": "pose", "video_url": data_uri(media.control), "resolution": "240p",
        }).json()
        assert (depth["queue_position"], second["queue_position"]) == (0, 1)
        assert client.put(second["cancel_url"]).json() == {"status": "OK"}
        queued = client.get(depth["status_url"])
        assert queued.status_code == 202 and queued.json()["status"] == "IN_QUEUE"
    api_only.stop(signal.SIGKILL)

    server = start_server(data_dir, port=port, workers=1)
    try:
        with server.client() as client:
            status = wait_completed(client, depth["status_url"])
            assert "error" not in status, status
            steps = [e["message"] for e in status["logs"] if e["message"].startswith("Denoising step")]
            assert len(steps) == 2
            result = client.get(depth["response_url"])
            assert result.status_code == 200
            body = result.json()
            assert body["seed"] == 7 and body["prompt"] == "a bar moving over a gradient"
            assert_output(body, tmp_path / "depth.mp4", frames=81, fps=16.0, width=352, height=272)
            cancelled = client.get(second["status_url"]).json()
            assert cancelled["error_type"] == "client_cancelled"
            assert client.get(second["response_url"]).status_code == 499
    finally:
        server.stop()


def test_pose_from_http_url_with_status_stream(live_server: LiveServer, media_server: str,
                                               tmp_path: Path) -> None:
    """9:16 at 24 fps, 83 frames (not 4k+1: generated as 85 and trimmed), progress over SSE."""
    with live_server.client() as client:
        submit = client.post(f"/queue/{APP}/pose", json={
            "prompt": "a dancer", "video_url": f"{media_server}/control.mp4", "resolution": "240p",
            "aspect_ratio": "9:16", "frames_per_second": 24, "num_frames": 83, "num_inference_steps": 3,
        }).json()
        events = []
        with client.stream("GET", submit["status_url"] + "/stream", params={"logs": "1"},
                           timeout=httpx.Timeout(60, read=240)) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[-1]["status"] == "COMPLETED" and "error" not in events[-1], events[-1]
        logs = [e["message"] for event in events for e in (event.get("logs") or [])]
        assert [m.split(" (")[0] for m in logs if m.startswith("Denoising step")] == [
            "Denoising step 1/3", "Denoising step 2/3", "Denoising step 3/3"]
        # fal's default acceleration; 3 steps are 2 warm-up steps and the last, so none is reused.
        summary = "step cache: 3 of 3 steps computed (6 of 6 transformer forwards) (acceleration regular)"
        assert summary in logs
        result = client.get(submit["response_url"]).json()
    assert isinstance(result["seed"], int)  # chosen by the server when not given
    assert_output(result, tmp_path / "pose.mp4", frames=83, fps=24.0, width=240, height=416)


def test_inpainting_with_mask_video(live_server: LiveServer, media: Media, media_server: str,
                                    tmp_path: Path) -> None:
    with live_server.client() as client:
        submit = client.post(f"/queue/{APP}/inpainting", json={
            "prompt": "a red ball", "video_url": data_uri(media.control),
            "mask_video_url": f"{media_server}/mask.mp4", "resolution": "240p", "num_inference_steps": 2,
            "seed": 1234,
        }).json()
        status = wait_completed(client, submit["status_url"])
        assert "error" not in status, status
        result = client.get(submit["response_url"]).json()
    assert result["seed"] == 1234
    assert_output(result, tmp_path / "inpaint.mp4", frames=81, fps=16.0, width=352, height=272)


def test_cancel_queued_and_running_jobs(live_server: LiveServer, media: Media) -> None:
    """A queued job is dropped at once; a running one stops within a denoising step."""
    body = {"prompt": "x", "video_url": data_uri(media.control), "resolution": "240p",
            "num_inference_steps": 50}
    with live_server.client() as client:
        running = client.post(f"/queue/{APP}/depth", json=body).json()
        queued = client.post(f"/queue/{APP}/depth", json=body).json()
        seen_steps = wait_for_step(client, running["status_url"])
        waiting = client.get(queued["status_url"])
        assert waiting.status_code == 202 and waiting.json()["queue_position"] == 0

        assert client.put(queued["cancel_url"]).json() == {"status": "OK"}
        response = client.put(running["cancel_url"])
        assert response.status_code == 202
        assert response.json() == {"status": "CANCELLATION_REQUESTED"}
        cancelled_at = seen_steps

        final = wait_completed(client, running["status_url"], timeout=60)
        assert final["error_type"] == "client_cancelled"
        steps = sum(e["message"].startswith("Denoising step") for e in final["logs"])
        # Polling lag allows a step or two to finish before the flag is read; never the remaining ~48.
        assert steps <= cancelled_at + 3, steps
        result = client.get(running["response_url"])
        assert result.status_code == 499
        assert result.headers["x-fal-error-type"] == "client_cancelled"
        assert client.get(queued["status_url"]).json()["error_type"] == "client_cancelled"
