"""Bytes on disk under submit-and-cancel of large data: URI jobs (issue 11 item 9).

Starts a server with the test harness (no worker: every job stays queued until it is cancelled), then
submits `--jobs` requests whose `video_url` is a data: URI of `--body-mib` MiB and cancels each at once,
as a hostile client would to dodge the queue cap. Prints the data dir's size (job database with its WAL,
files/, inputs/, uploads/) as it grows, and again `--settle` seconds after the last cancel.

    python -m benchmarks.submit_cancel_disk [--jobs 40] [--body-mib 60] [--settle 6]
                                            [--url URL --data-dir DIR]

Runs against whatever checkout it is started from, so the same command measures before and after.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

APP = "fal-ai/wan-vace-14b"
MiB = 1024**2


def disk_bytes(data_dir: Path) -> int:
    """Bytes the data dir's files occupy on disk (allocated blocks, as `du` counts them)."""
    total = 0
    for root, _dirs, names in os.walk(data_dir):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def run(base: str, data_dir: Path, jobs: int, body_mib: float, settle: float) -> None:
    # A data: URI of body_mib MiB (base64 of 3/4 as many bytes), random so nothing compresses it away.
    raw = os.urandom(int(body_mib * MiB * 3 / 4))
    payload = {"prompt": "p", "video_url": "data:video/mp4;base64," + base64.b64encode(raw).decode()}
    before = disk_bytes(data_dir)
    print(f"data dir before: {before / MiB:.1f} MiB; {jobs} jobs of a {body_mib:.0f} MiB data: URI each")
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=120.0) as client:
        for i in range(1, jobs + 1):
            submitted = client.post(f"/queue/{APP}/depth", json=payload)
            if submitted.status_code != 200:
                print(f"job {i}: submit answered {submitted.status_code} {submitted.text[:200]}")
                continue
            cancelled = client.put(submitted.json()["cancel_url"])
            assert cancelled.json()["status"] == "OK", cancelled.text
            if i % max(jobs // 8, 1) == 0 or i == jobs:
                elapsed = time.perf_counter() - started
                grown = disk_bytes(data_dir) - before
                print(f"after {i:4d} jobs ({elapsed:6.1f} s): +{grown / MiB:8.1f} MiB on disk, "
                      f"{grown / MiB / elapsed:6.1f} MiB/s")
    elapsed = time.perf_counter() - started
    time.sleep(settle)
    grown = disk_bytes(data_dir) - before
    print(f"{settle:.0f} s after the last cancel: +{grown / MiB:.1f} MiB on disk "
          f"({jobs * body_mib / elapsed:.0f} MiB/s submitted over {elapsed:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--body-mib", type=float, default=60.0, help="size of each data: URI (under the "
                        "64 MiB request cap)")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds to wait after the last cancel")
    parser.add_argument("--url", default=None, help="an already running server (default: start one)")
    parser.add_argument("--data-dir", type=Path, default=None, help="that server's --data-dir")
    args = parser.parse_args()
    if args.url:
        run(args.url, args.data_dir, args.jobs, args.body_mib, args.settle)
        return

    from tests.server.conftest import start_server

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data", workers=0)
        try:
            print(f"server on {server.base} (no worker)")
            run(server.base, server.data_dir, args.jobs, args.body_mib, args.settle)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
