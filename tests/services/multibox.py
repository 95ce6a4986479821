"""Several machines on one: two API replicas and two `vace worker` boxes, each with its own data folder
(no shared disk), sharing only a PostgreSQL database and an S3 bucket (tests/services/). One box is
SIGKILLed mid-job, as a lost machine. Used by tests/services/test_multibox.py (which asserts) and
benchmarks/multibox.py (which prints the figures)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from preprocessors.video_io import write_mp4
from server.jobs.factory import open_job_store
from tests.server.conftest import REPO, LiveServer, moving_bar_frames, start_server, wait_completed
from tests.services.postgres import PostgresServer
from tests.services.s3 import S3Server

APP = "fal-ai/wan-vace-14b"
LEASE_S = 4.0


@dataclass
class Figures:
    jobs: int = 0
    kills: int = 0
    killed_job: str = ""
    lost_node: str = ""
    requeued_s: float = 0.0  # SIGKILL -> the killed job taken from the lost box (lease ran out)
    restarted_s: float = 0.0  # SIGKILL -> the killed job started again on the other box
    total_s: float = 0.0
    completed_once: int = 0
    downloadable: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)
    health: dict[str, str] = field(default_factory=dict)  # node -> worker state, from one replica

    @property
    def duplicate_deliveries(self) -> int:
        return sum(n - 1 for n in self.deliveries.values() if n > 1)


class HookReceiver:
    """A webhook target on loopback that counts POSTs per request id."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.counts[body["request_id"]] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def close(self) -> None:
        self.httpd.shutdown()


@dataclass
class WorkerBox:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    @property
    def node(self) -> str:
        return f"{os.uname().nodename}:{self.data_dir}"

    def kill(self) -> None:
        """The machine is lost: the `vace worker` process and its worker die at once, nothing cleans up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_worker_box(data_dir: Path, shared: tuple[str, ...]) -> WorkerBox:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-worker.log"
    cmd = [sys.executable, "-m", "server.cli", "worker", "--model", "tiny", "--data-dir", str(data_dir),
           "--workers", "1", *shared]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VACE_FETCH_ALLOW_HOSTS": "127.0.0.1"}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group, killed as one machine
    return WorkerBox(proc, data_dir, log_path)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_scenario(root: Path, pg: PostgresServer, s3: S3Server, *, jobs: int = 2, steps: int = 2,
                 timeout: float = 1200.0) -> Figures:
    """Start everything, submit `jobs` jobs through both replicas, SIGKILL the box running the first one
    mid-job, wait for every job; the figures say what happened (the caller asserts)."""
    saved_env = dict(os.environ)
    os.environ.update(s3.environment())  # boto3 in every process started below reads these
    db_url = pg.new_database()
    shared = ("--database-url", db_url, "--storage", f"s3://{s3.new_bucket()}/vace",
              "--worker-lease-seconds", str(LEASE_S))
    hooks = HookReceiver()
    figures = Figures(jobs=jobs)
    apis: list[LiveServer] = []
    boxes: list[WorkerBox] = []
    store = open_job_store(db_url)  # the test's own view of the database (reads only)
    started = time.monotonic()
    try:
        apis = [start_server(root / f"api-{n}", workers=0, extra_args=shared) for n in "ab"]
        boxes = [start_worker_box(root / f"box-{n}", shared) for n in (1, 2)]
        wait_for(lambda: len([w for w in store.workers() if w["state"] == "ready"]) == 2, timeout,
                 "both worker boxes ready")
        clients = [api.client() for api in apis]
        # The input goes up to replica B and lands in the bucket; workers read it from there.
        write_mp4(moving_bar_frames(48, 320, 240), 24, root / "bar.mp4")
        video = _upload(clients[1], root / "bar.mp4")
        submitted = []
        for i in range(jobs):
            client = clients[i % 2]
            response = client.post(f"/queue/{APP}/depth", params={"fal_webhook": hooks.url}, json={
                "prompt": f"job {i}", "video_url": video, "resolution": "240p",
                "num_inference_steps": steps, "seed": i})
            assert response.status_code == 200, response.text
            submitted.append(response.json())

        # The box running the first job is lost while it denoises.
        first = submitted[0]["request_id"]
        wait_for(lambda: any(e.message.startswith("Denoising step") for e in store.logs(first)), timeout,
                 "the first job's first step")
        job = store.get(first)
        assert job is not None and job.worker_id is not None
        holder = {w["id"]: w["node"] for w in store.workers()}[job.worker_id]
        [victim] = [box for box in boxes if box.node == holder]
        victim.kill()
        killed_at = time.time()
        figures.lost_node = victim.node
        figures.kills, figures.killed_job = 1, first
        lost_worker = job.worker_id

        def taken_back() -> bool:
            again = store.get(first)
            return again is not None and again.worker_id != lost_worker

        wait_for(taken_back, timeout, "the lost box's job to be requeued")
        figures.requeued_s = round(time.time() - killed_at, 2)

        for i, sub in enumerate(submitted):
            status = wait_completed(clients[(i + 1) % 2], sub["status_url"], timeout=timeout)
            assert "error" not in status, status
        restart = [e.ts for e in store.logs(first) if e.message.startswith("Started on")][-1]
        figures.restarted_s = round(restart - killed_at, 2)

        for i, sub in enumerate(submitted):
            logs = [e.message for e in store.logs(sub["request_id"])]
            figures.completed_once += sum(m == "Completed" for m in logs) == 1
            result = clients[i % 2].get(sub["response_url"]).json()
            download = httpx.get(result["video"]["url"], timeout=60)
            ok = download.status_code == 200 and download.content[4:8] == b"ftyp"
            figures.downloadable += ok and len(download.content) == result["video"]["file_size"]
        wait_for(lambda: len(hooks.counts) == jobs, 60, "a webhook for every job")
        time.sleep(2 * 0.5 + 1.0)  # two more dispatcher polls on each replica: a duplicate would show
        figures.deliveries = dict(hooks.counts)
        health = clients[0].get("/health").json()
        figures.health = {w["node"]: w["state"] for w in health["workers"]}
        figures.total_s = round(time.monotonic() - started, 1)
        for client in clients:
            client.close()
        return figures
    finally:
        for box in boxes:
            box.stop()
        for api in apis:
            api.stop()
        hooks.close()
        store.close()
        os.environ.clear()
        os.environ.update(saved_env)


def _upload(client: httpx.Client, path: Path) -> str:
    """fal's storage flow (docs/fal-protocol.md §4): initiate, then PUT the bytes to the upload URL."""
    initiate = client.post("/storage/upload/initiate", params={"storage_type": "fal-cdn-v3"},
                           json={"content_type": "video/mp4", "file_name": path.name})
    assert initiate.status_code == 200, initiate.text
    body = initiate.json()
    put = httpx.put(body["upload_url"], content=path.read_bytes(), headers={"Content-Type": "video/mp4"})
    assert put.status_code in (200, 201, 204), put.text
    return str(body["file_url"])
