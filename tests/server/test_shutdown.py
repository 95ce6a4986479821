"""SIGTERM to the server mid-generation: the job goes back to the queue without spending an attempt, the
server exits within its grace period, and after a restart on the same data directory the job completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from preprocessors.video_io import read_video
from server.api.background.supervisor import STOP_GRACE_S, Supervisor
from server.jobs.factory import open_job_store
from server.jobs.model import Status
from server.jobs.store import JobStore
from server.settings import Settings
from tests.server.conftest import Media, data_uri, start_server, wait_completed, wait_for_step

APP = "fal-ai/wan-vace-14b"
STEPS = 30  # ~0.25 s each for the tiny model: SIGTERM must land mid-denoise, even on a loaded machine


def ready_workers(store: JobStore) -> list[dict[str, object]]:
    return [w for w in store.workers() if w["state"] == "ready"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class WaitingRequests:
    """A status stream and a sync run, each in its own thread, open until the server ends them."""

    def __init__(self, base: str, status_url: str, video_url: str) -> None:
        self.streaming = threading.Event()
        self.stream_ended_at: float | None = None  # time.monotonic()
        self.run_response: httpx.Response | None = None
        self.threads = [threading.Thread(target=self._stream, args=(status_url,), daemon=True),
                        threading.Thread(target=self._run, args=(base, video_url), daemon=True)]
        for thread in self.threads:
            thread.start()

    def _stream(self, status_url: str) -> None:
        with httpx.stream("GET", status_url + "/stream", timeout=120) as response:
            for _ in response.iter_lines():
                self.streaming.set()
        self.stream_ended_at = time.monotonic()

    def _run(self, base: str, video_url: str) -> None:
        self.run_response = httpx.post(f"{base}/run/{APP}/depth", timeout=120,
                                       json={"prompt": "x", "video_url": video_url})

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)


def test_sigterm_requeues_the_running_job_and_a_restart_completes_it(tmp_path: Path, media: Media) -> None:
    data_dir = tmp_path / "data"
    store = open_job_store(data_dir / "jobs.sqlite3")
    first = start_server(data_dir)
    try:
        # Make the worker one the supervisor restarted (a respawn, not the first start): shutdown must
        # reach it as gracefully as the first one.
        [original] = ready_workers(store)
        os.kill(int(original["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        deadline = time.monotonic() + 120
        while not [w for w in ready_workers(store) if w["pid"] != original["pid"]]:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.2)
        [worker] = ready_workers(store)

        with first.client() as client:
            submit = client.post(f"/queue/{APP}/depth", json={
                "prompt": "a bar moving over a gradient", "video_url": data_uri(media.control),
                "resolution": "240p", "num_inference_steps": STEPS, "seed": 11,
                "match_input_num_frames": True,
            }).json()
            wait_for_step(client, submit["status_url"])
            assert client.get(submit["status_url"]).json()["status"] == "IN_PROGRESS"
        # Requests that wait on a job must not hold the shutdown open: a status stream and a sync run
        # (queued behind the running job) are open when SIGTERM arrives.
        waiting = WaitingRequests(first.base, submit["status_url"], data_uri(media.not_a_video))
        deadline = time.monotonic() + 30
        while store.count_queued() < 1 or not waiting.streaming.is_set():
            assert time.monotonic() < deadline, "the sync run or the stream did not start"
            time.sleep(0.1)
        started = time.monotonic()
        code = first.stop(signal.SIGTERM, timeout=STOP_GRACE_S + 60)
        took = time.monotonic() - started
        waiting.join(timeout=10)
    finally:
        first.stop(signal.SIGKILL)
    assert waiting.run_response is not None and waiting.run_response.status_code == 503
    assert waiting.run_response.json()["error_type"] == "server_shutting_down"
    assert waiting.stream_ended_at is not None and waiting.stream_ended_at - started < STOP_GRACE_S
    run_job = store.get(waiting.run_response.headers["x-fal-request-id"])
    assert run_job is not None and run_job.status is Status.COMPLETED  # cancelled: its caller will retry
    assert run_job.error is not None and run_job.error.status_code == 499
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM is a clean exit too.
    assert code in (0, -signal.SIGTERM), first.log_text()
    assert took < STOP_GRACE_S, f"shutdown took {took:.1f}s: the worker was not stopped gracefully"
    assert not alive(int(worker["pid"])), "a worker outlived the server"  # type: ignore[call-overload]

    job = store.get(submit["request_id"])
    assert job is not None
    assert (job.status, job.worker_id, job.attempts, job.error) == (Status.IN_QUEUE, None, 0, None)
    messages = [entry.message for entry in store.logs(job.id)]
    assert "Worker shutting down; request returned to the queue" in messages
    interrupted_at = sum(m.startswith("Denoising step") for m in messages)
    assert 1 <= interrupted_at < STEPS

    second = start_server(data_dir, port=first.port)
    try:
        with second.client() as client:
            status = wait_completed(client, submit["status_url"])
            assert "error" not in status, status
            result = client.get(submit["response_url"]).json()
            video = httpx.get(result["video"]["url"], timeout=60)
            assert video.status_code == 200
    finally:
        second.stop()
    messages = [entry.message for entry in store.logs(job.id)]
    started_lines = [m for m in messages if m.startswith("Started on")]
    # The graceful requeue spent no attempt: both runs are attempt 1, and the counter says one.
    assert len(started_lines) == 2 and all(m.endswith("(attempt 1)") for m in started_lines), started_lines
    assert store.get(job.id).attempts == 1  # type: ignore[union-attr]
    assert sum(m.startswith("Denoising step") for m in messages) == interrupted_at + STEPS
    assert messages[-1] == "Completed" and messages.count("Completed") == 1
    assert result["seed"] == 11
    (tmp_path / "out.mp4").write_bytes(video.content)
    frames, _ = read_video(tmp_path / "out.mp4")
    # match_input_num_frames: the control video's 2 s (48 frames at 24 fps) at the default 16 fps.
    assert frames.shape == (32, 272, 352, 3) and frames.std() > 0  # 240p at the input's 4:3


def test_a_worker_killed_after_the_grace_period_spends_no_attempt(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that does not stop in time (e.g. mid-way through a long VAE decode) is killed by the
    supervisor; its job goes back to the queue as if it had stopped itself. A cancel request still wins."""
    monkeypatch.setattr("server.api.background.supervisor.STOP_GRACE_S", 1.0)
    settings = Settings(data_dir=tmp_path, model="tiny", num_workers=1)
    store = open_job_store(settings.db_path)
    supervisor = Supervisor(settings, store)
    [slot] = supervisor.slots
    slot.worker_id = "stubborn-worker"
    slot.process = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(120)"], stdout=subprocess.PIPE)
    assert slot.process.stdout is not None and slot.process.stdout.readline() == b"ready\n"
    running = store.submit(APP, {"prompt": "p"}, public_base="http://h")
    cancelled = store.submit(APP, {"prompt": "p"}, public_base="http://h")
    other = store.submit(APP, {"prompt": "p"}, public_base="http://h")
    assert [store.claim(w) for w in ("stubborn-worker", "stubborn-worker", "other-worker")] != [None] * 3
    store.request_cancel(cancelled.id)

    started = time.monotonic()
    supervisor._terminate()
    assert time.monotonic() - started < 10
    assert slot.process.returncode == -signal.SIGKILL
    after = {job.id: store.get(job.id) for job in (running, cancelled, other)}
    assert (after[running.id].status, after[running.id].attempts) == (Status.IN_QUEUE, 0)  # type: ignore[union-attr]
    assert after[cancelled.id].error.error_type == "client_cancelled"  # type: ignore[union-attr]
    # A job whose worker vanished for another reason (a crash) is recovered as before: the attempt counts.
    assert (after[other.id].status, after[other.id].attempts) == (Status.IN_QUEUE, 1)  # type: ignore[union-attr]
