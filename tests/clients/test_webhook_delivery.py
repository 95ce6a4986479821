"""Webhook bookkeeping without a server: retries are persisted and resume in a new dispatcher (a restart)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.api.background.webhook_signing import jwks, load_or_create_signing_key, public_keys, verify
from server.api.background.webhooks import WebhookDispatcher
from server.contract.errors import InputError
from server.jobs.factory import open_job_store
from server.jobs.store import JobStore


def dispatcher(store: JobStore, key: Ed25519PrivateKey) -> WebhookDispatcher:
    # The mock transport answers for "127.0.0.1", which the SSRF guard refuses unless allowlisted.
    return WebhookDispatcher(store, key, max_attempts=3, retry_base_s=0.2, retry_max_s=1.0, timeout_s=5.0,
                             allow_hosts=("127.0.0.1",))


def test_retry_state_survives_a_restart_and_gives_up(tmp_path: Path) -> None:
    store = open_job_store(tmp_path / "jobs.sqlite3")
    key = load_or_create_signing_key(tmp_path / "webhook_ed25519.pem")
    reloaded = load_or_create_signing_key(tmp_path / "webhook_ed25519.pem")
    assert jwks(reloaded.public_key()) == jwks(key.public_key())  # created once, then kept
    assert (tmp_path / "webhook_ed25519.pem").stat().st_mode & 0o077 == 0

    ok = store.submit("fal-ai/wan-vace-14b", {"prompt": "x"}, public_base="http://h:1",
                      webhook_url="http://127.0.0.1/ok")
    bad = store.submit("fal-ai/wan-vace-14b", {"prompt": "x"}, public_base="http://h:1",
                       webhook_url="http://127.0.0.1/bad")
    plain = store.submit("fal-ai/wan-vace-14b", {"prompt": "x"}, public_base="http://h:1")
    for _ in (ok, bad, plain):
        assert store.claim("w1") is not None
    store.complete(ok.id, "w1", {"video": {"url": "/files/t/out.mp4"}, "seed": 1})
    error = InputError("video_url", "not a video", "unsupported_video_format").to_job_error()
    store.fail(bad.id, "w1", error)
    store.complete(plain.id, "w1", {"seed": 2})

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/ok" and sum(r.url.path == "/ok" for r in seen) == 1:
            return httpx.Response(503)  # the first attempt fails; the retry succeeds
        return httpx.Response(200 if request.url.path == "/ok" else 500)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    asyncio.run(dispatcher(store, key).run_once(client))
    deliveries = store.webhooks
    first = deliveries.get(ok.id)
    assert first is not None and (first.state, first.attempts, first.last_status) == ("pending", 1, 503)
    assert deliveries.get(plain.id) is None

    time.sleep(0.25)
    restarted = dispatcher(open_job_store(tmp_path / "jobs.sqlite3"), reloaded)  # a fresh process, same file
    asyncio.run(restarted.run_once(client))
    assert deliveries.get(ok.id).state == "delivered"  # type: ignore[union-attr]
    ok_posts = [r for r in seen if r.url.path == "/ok"]
    assert len(ok_posts) == 2
    body = json.loads(ok_posts[-1].content)
    assert body == {"request_id": ok.id, "gateway_request_id": ok.id, "status": "OK", "error": None,
                    "payload": {"video": {"url": "http://h:1/files/t/out.mp4"}, "seed": 1}}
    assert verify(public_keys(jwks(key.public_key())), ok_posts[-1].headers, ok_posts[-1].content)

    time.sleep(0.5)
    asyncio.run(restarted.run_once(client))
    failed = deliveries.get(bad.id)
    assert failed is not None and (failed.state, failed.attempts) == ("failed", 3)
    assert json.loads(seen[-1].content)["status"] == "ERROR"
