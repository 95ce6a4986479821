"""Seconds from cancel to a finished job while its worker is stuck in a slow download (issue 11 item 2).

Starts a server with the test harness (tiny model, one worker), and a loopback source that answers at once
with headers and then trickles one body byte every `--every` seconds for `--trickle` seconds (so no idle
timeout ever fires). A job whose video_url is that source is submitted; once the worker is reading it, the job
is cancelled, and the script prints how long the job took to end and how it ended. Then, without a cancel,
how long a job is held by the same source under a `--deadline` (the server's --download-deadline).

    python -m benchmarks.download_cancel [--trickle 40] [--every 0.5] [--deadline 5]
    # the same against another checkout (e.g. main before the fix), from that checkout's root:
    cd /work/main && PYTHONPATH=$PWD python /path/to/benchmarks/download_cancel.py
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

APP = "fal-ai/wan-vace-14b"


class TrickleSource:
    """Headers at once, then one byte every `every` s for `seconds` s; counts requests."""

    def __init__(self, seconds: float, every: float) -> None:
        self.count = int(seconds / every)
        self.every = every
        self.requests = 0
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/clip.mp4"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        self.requests += 1
        try:
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.count)
                for _ in range(self.count):
                    if self.stop.wait(self.every):
                        return
                    conn.sendall(b"x")
        except OSError:
            return  # the worker hung up

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


def _wait_done(client: httpx.Client, status_url: str, limit_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = client.get(status_url).json()
        if status["status"] == "COMPLETED":
            break
        time.sleep(0.05)
    return status


def run_job(client: httpx.Client, source: TrickleSource, cancel: bool, limit_s: float) -> tuple[float, str]:
    """Submit, wait for the download to start; seconds from then (or the cancel) to the end, and how."""
    before = source.requests
    payload = {"prompt": "x", "video_url": source.url, "resolution": "240p", "num_inference_steps": 2}
    submitted = client.post(f"/queue/{APP}/depth", json=payload).json()
    while source.requests == before:
        time.sleep(0.02)
    if cancel:
        time.sleep(1.0)
        client.put(submitted["cancel_url"])
    started = time.monotonic()
    status = _wait_done(client, submitted["status_url"], limit_s)
    took = time.monotonic() - started
    return took, status.get("error_type") or status["status"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trickle", type=float, default=40.0, help="seconds the source keeps sending")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between body bytes")
    parser.add_argument("--deadline", type=float, default=5.0, help="--download-deadline for the server")
    args = parser.parse_args()

    import server
    from server.settings import Settings
    from tests.server.conftest import start_server

    print(f"code under test: {Path(server.__file__).resolve().parent.parent}")
    source = TrickleSource(args.trickle, args.every)
    with tempfile.TemporaryDirectory() as tmp:
        extra: tuple[str, ...] = ()
        if "download_deadline_s" in Settings.model_fields:
            extra = ("--download-deadline", str(args.deadline))
        srv = start_server(Path(tmp) / "data", extra_args=extra)
        try:
            with httpx.Client(base_url=srv.base, timeout=10.0) as client:
                took, how = run_job(client, source, cancel=True, limit_s=args.trickle + 60)
                print(f"cancelled 1 s into a trickling download: job ended {took:.2f} s after the cancel, "
                      f"as {how}")
                took, how = run_job(client, source, cancel=False, limit_s=args.trickle + 60)
                flag = f"--download-deadline {args.deadline:g}" if extra else "no deadline flag"
                print(f"not cancelled ({flag}, the source trickles {args.trickle:g} s): the worker was held "
                      f"{took:.2f} s, job ended as {how}")
        finally:
            srv.stop()
            source.close()


if __name__ == "__main__":
    main()
