"""Other clients' latency while many clients poll the result of a job with a large input (issue 11 item 10).

Starts a server with the test harness (no worker, so the job stays queued and every result poll is read in
full), submits one job whose `video_url` is a data: URI of `--body-mib` MiB and one small job, then for
`--duration` seconds runs `--pollers` clients polling the large job's result back to back and
`--others` clients polling the small job's status at 10 Hz. Prints both groups' latency and the API
process's peak memory.

    python -m benchmarks.result_poll_latency [--pollers 40] [--others 4] [--body-mib 60] [--duration 20]
                                             [--inline]

`--inline` sends the input as many data: URIs of under 4 KiB each in `ref_image_urls` (inpainting), which
stay in the job's row (server/files/data_uris.py moves only larger ones to files): it measures the polls'
narrow reads alone, with a row as large as before.

Runs against whatever checkout it is started from, so the same command measures before and after. The
load generator shares the machine with the server: figures are pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

APP = "fal-ai/wan-vace-14b"
MiB = 1024**2


async def poll(url: str, until: float, latencies: list[float], errors: list[str],
               interval: float = 0.0) -> None:
    async with httpx.AsyncClient(timeout=120.0) as client:
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                response = await client.get(url)
                if response.status_code >= 500:
                    errors.append(f"HTTP {response.status_code}")
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
            latencies.append(time.perf_counter() - started)
            if interval:
                await asyncio.sleep(max(interval - (time.perf_counter() - started), 0.0))


def summary(name: str, latencies: list[float], errors: list[str]) -> str:
    if not latencies:
        return f"{name}: no requests"
    ordered = sorted(latencies)
    p99 = ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)]
    return (f"{name}: {len(ordered)} requests, p50 {statistics.median(ordered) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms, {len(errors)} errors")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(base: str, pid: int | None, args: argparse.Namespace) -> None:
    raw = os.urandom(int(args.body_mib * MiB * 3 / 4))
    if args.inline:
        piece = 2800  # bytes: a 3.7 KiB data: URI each
        refs = ["data:image/png;base64," + base64.b64encode(raw[i:i + piece]).decode()
                for i in range(0, len(raw), piece)]
        big = {"prompt": "p", "video_url": "https://example.com/v.mp4", "mask_video_url":
               "https://example.com/m.mp4", "ref_image_urls": refs}
        endpoint = f"/queue/{APP}/inpainting"
    else:
        big = {"prompt": "p", "video_url": "data:video/mp4;base64," + base64.b64encode(raw).decode()}
        endpoint = f"/queue/{APP}/depth"
    async with httpx.AsyncClient(base_url=base, timeout=120.0) as client:
        submitted = await client.post(endpoint, json=big)
        assert submitted.status_code == 200, submitted.text[:300]
        large = submitted.json()
        small = (await client.post(f"/queue/{APP}/depth", json={
            "prompt": "p", "video_url": "https://example.com/v.mp4"})).json()
    if pid is not None:
        print(f"API peak RSS after submitting: {peak_rss_mib(pid):.0f} MiB")
    until = time.perf_counter() + args.duration
    result_latency: list[float] = []
    result_errors: list[str] = []
    other_latency: list[float] = []
    other_errors: list[str] = []
    await asyncio.gather(
        *(poll(large["response_url"], until, result_latency, result_errors) for _ in range(args.pollers)),
        *(poll(small["status_url"], until, other_latency, other_errors, 0.1) for _ in range(args.others)),
    )
    print(summary(f"{args.pollers} clients polling the large job's result", result_latency, result_errors))
    print(summary(f"{args.others} other clients polling a status at 10 Hz", other_latency, other_errors))
    if pid is not None:
        print(f"API peak RSS: {peak_rss_mib(pid):.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pollers", type=int, default=40)
    parser.add_argument("--others", type=int, default=4)
    parser.add_argument("--body-mib", type=float, default=60.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--inline", action="store_true", help="many small data: URIs that stay in the row")
    args = parser.parse_args()

    from tests.server.conftest import start_server

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data", workers=0)
        try:
            print(f"server on {server.base} (no worker); {args.body_mib:.0f} MiB input")
            asyncio.run(run(server.base, server.proc.pid, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
