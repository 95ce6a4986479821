"""Status polling under load: N clients polling at R Hz (and a few submitting) while a job is running.

Starts a server with the test harness (tiny model, one worker), submits one long job so the worker keeps
the CPU busy, then runs the clients for a fixed time and prints throughput, latency percentiles and errors.
Each poller keeps its own connection and a fixed schedule; a late request is sent at once, not skipped,
so a slow server shows up as lower throughput as well as higher latency.

    python -m benchmarks.load [--clients 200] [--rate 10] [--duration 20] [--submitters 4] [--url URL]
                              [--api-key KEY]

Target from the issue: 200 clients at 10 Hz, zero errors, p99 < 100 ms. The load generator shares the
machine with the server (and on the project's box with other engineers): figures are pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import httpx
import uvloop

os.environ.setdefault("HF_HUB_OFFLINE", "1")

APP = "fal-ai/wan-vace-14b"


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    submits: int = 0

    def record(self, started: float, status_code: int | None, error: str | None,
               ok: frozenset[int] | set[int] = frozenset()) -> None:
        self.latencies.append(time.perf_counter() - started)
        if error is not None:
            self.errors[error] += 1
        elif status_code is not None and status_code not in ok:
            self.errors[f"HTTP {status_code}"] += 1


async def timed(client: httpx.AsyncClient, stats: Stats, ok: set[int], method: str, url: str,
                **kwargs: object) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        stats.record(started, None, type(exc).__name__)
        return None
    stats.record(started, response.status_code, None, ok)
    return response


class PollConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending one GET at a time, parsed by httptools.

    httpx costs about as much CPU per request as the server does, and the generator shares the machine with
    the server: a lean client keeps the measurement about the server. uvicorn[standard] brings httptools.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._finish(exc or ConnectionResetError("connection closed by the server"))

    def on_message_complete(self) -> None:
        self._finish(self.parser.get_status_code())

    def _finish(self, outcome: int | BaseException) -> None:
        if self.done is not None and not self.done.done():
            if isinstance(outcome, BaseException):
                self.done.set_exception(outcome)
            else:
                self.done.set_result(outcome)

    async def get(self) -> int:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(self.request)
        return await asyncio.wait_for(self.done, timeout=10.0)


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Key {api_key}"} if api_key else {}


async def poller(status_url: str, rate: float, until: float, stats: Stats,
                 api_key: str | None = None) -> None:
    url = urllib.parse.urlsplit(status_url)
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    target = url.path + (f"?{url.query}" if url.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {url.netloc}", "Accept: application/json",
             *(f"{k}: {v}" for k, v in auth_headers(api_key).items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    connection: PollConnection | None = None
    interval = 1.0 / rate
    next_at = time.perf_counter() + interval * random.random()  # spread the clients' phases
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        started = time.perf_counter()
        try:
            if connection is None or connection.transport is None:
                _, connection = await loop.create_connection(lambda: PollConnection(request), url.hostname,
                                                             port, ssl=https or None)
            code = await connection.get()
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            stats.record(started, None, type(exc).__name__)
            if connection is not None and connection.transport is not None:
                connection.transport.close()  # a timed-out connection must not leak its socket
            connection = None
        else:
            stats.record(started, code, None, {200, 202})
        # Behind schedule: go on at once, but never queue up a backlog of missed polls.
        next_at = max(next_at + interval, time.perf_counter())
    if connection is not None and connection.transport is not None:
        connection.transport.close()


async def submitter(base: str, payload: dict[str, object], every_s: float, until: float, stats: Stats,
                    submitted: list[str], api_key: str | None = None) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10.0, headers=auth_headers(api_key)) as client:
        while time.perf_counter() + every_s < until:
            await asyncio.sleep(every_s)
            response = await timed(client, stats, {200}, "POST", f"/queue/{APP}/depth", json=payload)
            if response is not None and response.status_code == 200:
                submitted.append(response.json()["request_id"])
                stats.submits += 1


def long_job(control: Path, steps: int) -> dict[str, object]:
    from tests.server.conftest import data_uri

    return {"prompt": "load test", "video_url": data_uri(control), "resolution": "240p", "num_frames": 81,
            "num_inference_steps": steps, "seed": 1}


async def run_load(base: str, args: argparse.Namespace, payload: dict[str, object]) -> Stats:
    stats = Stats()
    submitted: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=30.0, headers=auth_headers(args.api_key)) as client:
        job = (await client.post(f"/queue/{APP}/depth", json=payload)).json()
        # Wait until the worker is busy with it: that is the situation being measured.
        while (await client.get(job["status_url"])).json()["status"] == "IN_QUEUE":
            await asyncio.sleep(0.2)
        until = time.perf_counter() + args.duration
        tasks = [poller(job["status_url"], args.rate, until, stats, args.api_key)
                 for _ in range(args.clients)]
        tasks += [submitter(base, payload, args.submit_every, until, stats, submitted, args.api_key)
                  for _ in range(args.submitters)]
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        still_running = (await client.get(job["status_url"])).json()["status"] == "IN_PROGRESS"
        for request_id in [job["request_id"], *submitted]:
            await client.put(f"/queue/{APP}/requests/{request_id}/cancel")
    report(stats, args, elapsed, still_running)
    return stats


def report(stats: Stats, args: argparse.Namespace, elapsed: float, still_running: bool) -> None:
    lat = sorted(stats.latencies)
    pct = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else lat * 99

    def ms(x: float) -> str:
        return f"{x * 1000:.1f} ms"

    target = args.clients * args.rate + args.submitters / args.submit_every
    print(f"clients {args.clients} at {args.rate} Hz + {args.submitters} submitters (one POST every "
          f"{args.submit_every}s each), {elapsed:.1f}s, job running throughout: {still_running}")
    print(f"requests {len(lat)}  throughput {len(lat) / elapsed:.0f} req/s (target {target:.0f} req/s)  "
          f"submitted {stats.submits}")
    print(f"latency p50 {ms(pct[49])}  p90 {ms(pct[89])}  p99 {ms(pct[98])}  max {ms(lat[-1])}")
    errors = sum(stats.errors.values())
    print(f"errors {errors}" + (f"  {dict(stats.errors)}" if errors else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="polls per second per client")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--submitters", type=int, default=4)
    parser.add_argument("--submit-every", type=float, default=2.0, help="seconds between POSTs")
    parser.add_argument("--steps", type=int, default=30, help="steps of the running job")
    parser.add_argument("--url", default=None, help="an already running server (default: start one)")
    parser.add_argument("--api-key", default=None, help="sent as `Authorization: Key ...` (keys on)")
    args = parser.parse_args()

    from preprocessors.video_io import write_mp4
    from tests.server.conftest import moving_bar_frames, start_server

    with tempfile.TemporaryDirectory() as tmp:
        control = Path(tmp) / "control.mp4"
        write_mp4(moving_bar_frames(48, 320, 240), 24, control)
        payload = long_job(control, args.steps)
        if args.url:
            uvloop.run(run_load(args.url, args, payload))
            return
        keys = ("--api-key", args.api_key) if args.api_key else ()
        server = start_server(Path(tmp) / "data", workers=1, extra_args=keys)
        try:
            print(f"server on {server.base} (tiny model, 1 worker)")
            uvloop.run(run_load(server.base, args, payload))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
