"""A second `vace serve` on a data dir in use refuses to start (issue 11 item 6), with real processes.

Without the lock the second server took the first one's running job for an orphan and requeued it (the
job ran twice) and wiped the first one's worker list.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.jobs.factory import open_job_store
from server.jobs.model import Status
from tests.server.conftest import REPO, free_port, start_server

APP = "fal-ai/wan-vace-14b"


def serve(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "server.cli", "serve", "--model", "tiny", "--data-dir", str(data_dir),
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def exit_or_serving(proc: subprocess.Popen[str], port: int, timeout: float = 120.0) -> int | None:
    """The exit code, or None once it answers HTTP (it started: the lock did not hold)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
            return None
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the second server neither exited nor served")


def test_a_second_server_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir, workers=0)
    second: subprocess.Popen[str] | None = None
    try:
        # The first server's running job and its worker, as a worker process would have left them.
        with first.client() as client:
            submitted = client.post(f"/queue/{APP}/depth", json={"prompt": "p", "video_url": "https://e.com/v"})
        store = open_job_store(data_dir / "jobs.sqlite3")
        job = store.claim("first-worker")
        assert job is not None and job.id == submitted.json()["request_id"]
        store.set_worker_state("first-worker", os.getpid(), "ready", "tiny")

        for workers in ("0", "1"):  # an API-only server must not take the data dir either
            port = free_port()
            second = serve(data_dir, port, "--workers", workers)
            code = exit_or_serving(second, port)
            output = second.communicate(timeout=30)[0]
            assert code == 2, output
            assert f"another `vace serve` (pid {first.proc.pid}) is using the data dir {data_dir}" in output
            assert "--data-dir" in output

        after = store.get(job.id)
        assert after is not None and (after.status, after.worker_id, after.attempts) == (
            Status.IN_PROGRESS, "first-worker", 1)
        assert [w["id"] for w in store.workers()] == ["first-worker"]
    finally:
        if second is not None and second.poll() is None:
            second.kill()
        first.stop()


def test_the_lock_is_released_when_the_server_is_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir, workers=0)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = start_server(data_dir, workers=0)  # the kernel dropped the dead server's lock
    second.stop()
