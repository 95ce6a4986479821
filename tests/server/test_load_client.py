"""The load benchmark's poller (benchmarks/load.py) counts what it measures: requests, codes, errors."""

from __future__ import annotations

import asyncio
import time

from benchmarks.load import Stats, poller
from tests.server.conftest import LiveServer, Media, data_uri, wait_completed

APP = "fal-ai/wan-vace-14b"


def poll_for(url: str, clients: int, rate: float, seconds: float) -> Stats:
    stats = Stats()

    async def run() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(poller(url, rate, until, stats) for _ in range(clients)))

    asyncio.run(run())
    return stats


def test_poller_keeps_its_rate_and_counts_http_errors(live_server: LiveServer) -> None:
    missing = f"{live_server.base}/queue/{APP}/requests/no-such-id/status"
    stats = poll_for(missing, clients=3, rate=20.0, seconds=1.0)
    assert 45 <= len(stats.latencies) <= 63  # 3 clients x 20 Hz x 1 s, phases spread over the first poll
    assert stats.errors == {"HTTP 404": len(stats.latencies)}


def test_poller_counts_refused_connections(live_server: LiveServer) -> None:
    stats = poll_for("http://127.0.0.1:9/queue/x/requests/y/status", clients=1, rate=10.0, seconds=0.5)
    assert stats.latencies and sum(stats.errors.values()) == len(stats.latencies)
    assert set(stats.errors) == {"ConnectionRefusedError"}


def test_poller_counts_answered_polls_as_successes(live_server: LiveServer, media: Media) -> None:
    with live_server.client() as client:
        body = {"prompt": "x", "video_url": data_uri(media.not_a_video)}
        job = client.post(f"/queue/{APP}/depth", json=body)
        wait_completed(client, job.json()["status_url"])
    stats = poll_for(job.json()["status_url"], clients=2, rate=10.0, seconds=1.0)
    assert len(stats.latencies) >= 18 and not stats.errors
