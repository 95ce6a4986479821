"""`vace serve --gpus-per-job 2` on the CPU: one worker that is a group of two ranks (torchrun, gloo) running
the tiny model with context parallelism, through the real API. Frame equality with a single process is
tests/pipelines/test_context_parallel.py's; here: jobs run across the group or, when their tokens do not
split, on rank 0 alone; a cancel stops both ranks after the same step; SIGTERM stops the group cleanly."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from preprocessors.video_io import read_video, write_mp4
from server.api.background.supervisor import _worker_envs
from server.jobs.factory import open_job_store
from server.jobs.model import Status
from server.settings import Settings
from server.worker.group import rank_settings
from tests.server.conftest import data_uri, moving_bar_frames, start_server, wait_completed, wait_for_step

APP = "fal-ai/wan-vace-14b"
ACROSS = "Generating across 2 GPUs (context parallel)"


def messages(status: dict) -> list[str]:
    return [e["message"] for e in status["logs"]]


def test_a_two_rank_group_runs_splits_falls_back_cancels_and_stops(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_mp4(moving_bar_frames(9, 320, 240), 16, clip)  # 9 frames: 3 latent frames
    body = {"prompt": "x", "video_url": data_uri(clip), "resolution": "240p", "aspect_ratio": "16:9",
            "match_input_num_frames": True, "match_input_frames_per_second": True, "num_inference_steps": 2,
            "seed": 5}
    long = {**body, "num_inference_steps": 40}
    data_dir = tmp_path / "data"
    server = start_server(data_dir, timeout=300, extra_args=("--gpus-per-job", "2", "--device", "cpu"))
    try:
        with server.client() as client:
            running = client.post(f"/queue/{APP}/depth", json=long).json()
            wait_for_step(client, running["status_url"])
            assert client.put(running["cancel_url"]).status_code == 202
            # 416x240: 3 x 15 x 26 = 1170 tokens split over 2 ranks; 240x240: 3 x 15 x 15 = 675 do not.
            split = client.post(f"/queue/{APP}/depth", json=body).json()
            alone = client.post(f"/queue/{APP}/depth", json={**body, "aspect_ratio": "1:1"}).json()

            cancelled = wait_completed(client, running["status_url"])
            assert cancelled["error_type"] == "client_cancelled"
            assert ACROSS in messages(cancelled)
            cancelled_at = sum(m.startswith("Denoising step") for m in messages(cancelled))
            assert 1 <= cancelled_at < 40

            done = wait_completed(client, split["status_url"])
            assert "error" not in done, done
            assert ACROSS in messages(done)
            fallback = wait_completed(client, alone["status_url"])
            assert "error" not in fallback, fallback
            assert ("Generating on one GPU of the group: 675 tokens do not divide by the group's 2 ranks"
                    in messages(fallback))
            for job, size in ((split, (240, 416)), (alone, (240, 240))):
                result = client.get(job["response_url"]).json()
                video = tmp_path / f"{job['request_id']}.mp4"
                video.write_bytes(httpx.get(result["video"]["url"], timeout=60).content)
                frames, _ = read_video(video)
                assert frames.shape == (9, *size, 3) and frames.std() > 0

            # Shutdown mid-job: both ranks stop after the same step and the job waits in the queue.
            interrupted = client.post(f"/queue/{APP}/depth", json=long).json()
            wait_for_step(client, interrupted["status_url"])
        code = server.stop(timeout=90)
    finally:
        server.stop(signal.SIGKILL)
    assert code in (0, -signal.SIGTERM), server.log_text()[-3000:]  # uvicorn re-raises the SIGTERM
    store = open_job_store(data_dir / "jobs.sqlite3")
    job = store.get(interrupted["request_id"])
    assert job is not None and (job.status, job.attempts, job.error) == (Status.IN_QUEUE, 0, None)
    logged = [entry.message for entry in store.logs(job.id)]
    assert "Worker shutting down; request returned to the queue" in logged
    interrupted_at = sum(m.startswith("Denoising step") for m in logged)
    log = server.log_text()
    assert "group stopped by SIGTERM" in log
    # Rank 1 joined the three runs that split, stopped after the steps rank 0 logged last, and left when
    # rank 0 told it to; the fallback run never reached it.
    assert re.findall(r"rank 1: (.+)", log) == [
        f"cancelled after step {cancelled_at}", "done", f"cancelled after step {interrupted_at}",
        "stopping after 3 runs"], log[-3000:]


def test_gpus_form_groups_and_each_rank_takes_its_own(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, model="tiny", gpus="0,1,2,3", gpus_per_job=2)
    assert _worker_envs(settings) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert _worker_envs(Settings(data_dir=tmp_path, model="tiny", gpus="0,1")) == [
        {"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    rank1 = rank_settings(Settings(data_dir=tmp_path, model="tiny", device="cuda", gpus_per_job=2), 1)
    assert (rank1.device, rank1.compile) == ("cuda:1", "off")  # auto: not measured with the hooks
    cpu = Settings(data_dir=tmp_path, model="tiny", device="cpu", compile="on", gpus_per_job=2)
    on = rank_settings(cpu, 1)
    assert (on.device, on.compile) == ("cpu", "on")


@pytest.mark.parametrize(("fields", "message"), [
    ({"gpus": "0,1,2"}, "--gpus names 3 GPUs, which do not form groups of --gpus-per-job 2"),
    ({"device": "cuda:1"}, "--device cuda:1 names one GPU"),
    ({"num_workers": 2}, "--workers 2 groups of --gpus-per-job 2 would share the same GPUs"),
    ({"attention": "flash3"}, "--attention flash3 has no context parallelism"),
])
def test_settings_a_group_cannot_use_are_refused_at_start(tmp_path: Path, fields: dict[str, object],
                                                          message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings(data_dir=tmp_path, model="tiny", gpus_per_job=2, **fields)
    Settings(data_dir=tmp_path, model="tiny", **fields)  # fine for one-GPU workers
