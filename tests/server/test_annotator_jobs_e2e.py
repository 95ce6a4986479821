"""preprocess, reframe's temporal factors, the safety checker and prompt expansion through the live API.

The server runs `--model tiny`, so its worker builds tiny random annotators on first use (no downloads).
Inputs are 9 frames sent with match_input_num_frames, so each job generates 9 frames (240p, 2 steps): the
schema's minimum of 81 frames applies only when not matching the input.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocessors.video_io import write_mp4
from tests.server.conftest import LiveServer, data_uri, moving_bar_frames, start_server, wait_completed
from tests.server.test_generation_e2e import assert_output

APP = "fal-ai/wan-vace-14b"
FRAMES, FPS = 9, 16


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("short") / "short.mp4"
    write_mp4(moving_bar_frames(FRAMES, 320, 240), FPS, path)
    return data_uri(path)


def cheap(video: str, **extra: object) -> dict[str, object]:
    return {"prompt": "a person walking past a wall", "video_url": video, "match_input_num_frames": True,
            "match_input_frames_per_second": True, "resolution": "240p", "num_inference_steps": 2, "seed": 5,
            **extra}


def run_job(server: LiveServer, path: str, payload: dict[str, object]) -> tuple[dict, list[str], object]:
    with server.client() as client:
        submit = client.post(f"/queue/{APP}/{path}".rstrip("/"), json=payload)
        assert submit.status_code == 200, submit.text
        status = wait_completed(client, submit.json()["status_url"])
        result = client.get(submit.json()["response_url"])
    return status, [e["message"] for e in status["logs"] or []], result


@pytest.mark.parametrize("task", ["depth", "pose"])
def test_preprocess_job_with_checker_and_prompt_expansion(live_server: LiveServer, short_video: str,
                                                          task: str, tmp_path: Path) -> None:
    payload = cheap(short_video, preprocess=True, enable_prompt_expansion=(task == "depth"),
                    enable_safety_checker=True)  # off by default, as on fal
    status, logs, result = run_job(live_server, task, payload)
    assert "error" not in status, status
    assert f"Annotated {FRAMES} frames ({task})" in " ".join(logs)
    assert any(m.startswith("Safety check of the input video") for m in logs)
    assert any(m.startswith("Safety check of the generated video") for m in logs)
    body = result.json()
    if task == "depth":  # the output's prompt is the expanded one, as logged
        assert body["prompt"] != payload["prompt"]
        assert f"Expanded prompt: {body['prompt']}" in logs
    else:
        assert body["prompt"] == payload["prompt"]
    assert_output(body, tmp_path / f"{task}.mp4", frames=FRAMES, fps=FPS, width=352, height=272)


def test_reframe_with_temporal_downsampling(live_server: LiveServer, short_video: str,
                                            tmp_path: Path) -> None:
    payload = {"video_url": short_video, "aspect_ratio": "9:16", "resolution": "240p",
               "num_inference_steps": 2, "temporal_downsample_factor": 1}
    status, logs, result = run_job(live_server, "reframe", payload)
    assert "error" not in status, status
    # Frames 0, 2, 4, 6, 8 are generated and FILM (fal's default) fills one frame into each gap: 9 frames at
    # 16 fps again.
    assert any(m.startswith("Generating every 2 frame(s): 5 frames at 8 fps") for m in logs)
    assert_output(result.json(), tmp_path / "reframe.mp4", frames=FRAMES, fps=FPS, width=240, height=416)


def test_flagged_request_completes_with_a_content_policy_error(tmp_path: Path, short_video: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """VACE_SAFETY_THRESHOLD=0 makes the real (tiny) checker flag every video: the job ends unrendered."""
    monkeypatch.setenv("VACE_SAFETY_THRESHOLD", "0")
    server = start_server(tmp_path / "data")
    try:
        status, logs, result = run_job(server, "depth", cheap(short_video, enable_safety_checker=True))
        unchecked, _, allowed = run_job(server, "depth", cheap(short_video))  # fal's default now: off
    finally:
        server.stop()
    assert status["status"] == "COMPLETED" and status["error_type"] == "content_policy_violation"
    assert not any(m.startswith("Denoising") for m in logs)
    assert result.status_code == 422
    (detail,) = result.json()["detail"]
    assert detail["type"] == "content_policy_violation" and detail["loc"] == ["body", "video_url"]
    assert detail["url"].endswith("#content_policy_violation")
    # The checker is the user's to turn off (fal's `enable_safety_checker`).
    assert "error" not in unchecked and allowed.status_code == 200
