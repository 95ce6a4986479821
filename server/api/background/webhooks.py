"""Webhook delivery (docs/fal-protocol.md §3): POST fal's payload to `?fal_webhook=URL` once a job completes.

A daemon thread in the API process polls the job store, so delivery never holds up a job or a worker,
and pending deliveries (attempt count, next time) live in SQLite and resume after a restart. Deliveries run
concurrently on that thread's event loop (up to `concurrency`, at most PER_ORIGIN_LIMIT to one receiver),
and each attempt has one deadline, `timeout_s`, for everything: DNS, connect, sending, and the status line
and headers of the answer. A receiver that never answers, or trickles its headers a byte at a time, costs
one slot for that long and never holds up another receiver's webhook (issue 11: four silent receivers
delayed another user's webhook by 104 s when deliveries ran one at a time with only per-read timeouts).

Each POST is signed as fal signs it (Ed25519, public key at /.well-known/jwks.json): see
server/api/background/webhook_signing.py and docs/clients.md.

Webhook URLs come from callers, so delivery is guarded like input downloads (server/outbound.py's
AddressPolicy, one shared check): the host is resolved at delivery time and refused if any of its
addresses is loopback, private, link-local/metadata or otherwise not public, unless the operator allowlisted
it (`--fetch-allow` / VACE_FETCH_ALLOW_HOSTS); the POST goes to the vetted address (Host header and TLS SNI
keep the name) so a changing DNS answer cannot redirect it; proxy variables are ignored. Redirects are not
followed (fal documents none for webhooks): a 3xx is a failed attempt like any other non-2xx answer.
A refused target fails the delivery at once, without retries (it would not get better), with the reason in
the log and in the delivery row; the job itself is unaffected. Submit accepts any `fal_webhook`, as fal
does: the check needs the allowlist and DNS as they are when the job completes, so it is made only then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.api.background.webhook_signing import signature_headers
from server.api.urls import absolute_urls
from server.jobs.model import Job, WebhookDelivery
from server.jobs.store import JobStore
from server.outbound import AddressNotAllowed, AddressPolicy, tls_verify

log = logging.getLogger("vace.webhooks")

POLL_S = 0.5
MAX_AGE_S = 24 * 3600.0  # jobs completed longer ago than this (e.g. while the server was down) are skipped
USER_AGENT = "vace-server-webhooks/1"
DEFAULT_CONCURRENCY = 32
# One receiver (scheme, host and port) gets at most this many of the slots, so a slow or silent one leaves
# the others to everyone else's receivers.
PER_ORIGIN_LIMIT = 4


def webhook_payload(job: Job) -> dict[str, Any]:
    """fal's body: status OK with the result, or ERROR with the error body the result route replays."""
    base = {"request_id": job.id, "gateway_request_id": job.id}
    if job.error is None:
        return {**base, "status": "OK", "payload": absolute_urls(job.output, job.public_base), "error": None}
    return {**base, "status": "ERROR", "payload": job.error.body,
            "error": f"Invalid status code: {job.error.status_code}"}


class WebhookDispatcher:
    """Finds completed jobs with a webhook, delivers them concurrently, and retries with exponential
    backoff."""

    def __init__(self, jobs: JobStore, signing_key: Ed25519PrivateKey, *, max_attempts: int,
                 retry_base_s: float, retry_max_s: float, timeout_s: float,
                 allow_hosts: Sequence[str] | None = None, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        """`timeout_s`: the deadline of one attempt, start to answer. `allow_hosts`: the operator's SSRF
        allowlist (Settings.fetch_allow_hosts); None reads VACE_FETCH_ALLOW_HOSTS, as the input fetcher
        does."""
        self.jobs = jobs
        self.policy = AddressPolicy.for_operator(allow_hosts)
        self.deliveries = jobs.webhooks
        self.signing_key = signing_key
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self._in_flight: dict[str, tuple[str, asyncio.Task[None]]] = {}  # job id -> (origin, attempt)
        # getaddrinfo blocks, and a name server that never answers holds its thread for a while: a thread
        # per slot, so a slow lookup holds up only its own delivery (asyncio's default pool is cores + 4).
        self._resolver = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="webhook-dns")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._loop()), name="webhooks",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Attempts under way are abandoned uncounted: they are due again after a restart."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=POLL_S + 10)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False,
                                 verify=tls_verify(), headers={"User-Agent": USER_AGENT}, limits=limits,
                                 **kwargs)

    async def _loop(self) -> None:
        async with self.client() as client:
            try:
                while not self._stop.is_set():
                    try:
                        self.dispatch_due(client)
                    except Exception:  # a bad row or a locked database must not kill delivery for good
                        log.exception("webhook delivery pass failed")
                    await asyncio.sleep(POLL_S)
            finally:
                attempts = [task for _, task in self._in_flight.values()]
                for task in attempts:
                    task.cancel()
                await asyncio.gather(*attempts, return_exceptions=True)
                self._resolver.shutdown(wait=False, cancel_futures=True)

    async def run_once(self, client: httpx.AsyncClient) -> None:
        """One pass: start every due delivery there is room for, and wait for those attempts to end."""
        self.dispatch_due(client)
        await asyncio.gather(*(task for _, task in list(self._in_flight.values())))

    def dispatch_due(self, client: httpx.AsyncClient) -> None:
        """Start an attempt for each due delivery, within the total and per-receiver limits."""
        self.deliveries.enqueue_completed(MAX_AGE_S)
        free = self.concurrency - len(self._in_flight)
        if free <= 0:
            return
        per_origin: dict[str, int] = {}
        for origin, _ in self._in_flight.values():
            per_origin[origin] = per_origin.get(origin, 0) + 1
        for delivery in self.deliveries.due(limit=len(self._in_flight) + 4 * free):
            if free <= 0 or self._stop.is_set():
                return
            if delivery.job_id in self._in_flight:
                continue
            job = self.jobs.get(delivery.job_id)
            if job is None or job.webhook_url is None:
                self.deliveries.mark_failed_attempt(delivery.job_id, None, "job is gone", None)
                continue
            origin = _origin(job.webhook_url)
            if per_origin.get(origin, 0) >= PER_ORIGIN_LIMIT:
                continue  # this receiver has its share; its turn comes when one of its attempts ends
            per_origin[origin] = per_origin.get(origin, 0) + 1
            free -= 1
            task = asyncio.get_running_loop().create_task(self._attempt(client, job, delivery))
            self._in_flight[job.id] = (origin, task)
            task.add_done_callback(functools.partial(self._finished, job.id))

    def _finished(self, job_id: str, _: asyncio.Task[None]) -> None:
        self._in_flight.pop(job_id, None)

    async def _attempt(self, client: httpx.AsyncClient, job: Job, delivery: WebhookDelivery) -> None:
        try:
            await self._deliver(client, job, delivery.attempts)
        except asyncio.CancelledError:
            raise  # stopping: uncounted
        except Exception as exc:  # one bad row must not hold up the deliveries behind it
            # (At least once: if recording a 2xx failed, the receiver gets the payload again.)
            log.exception("webhook for %s: unexpected error", job.id)
            self._failed_attempt(job, delivery.attempts, None, f"internal error: {exc!r}")

    async def _deliver(self, client: httpx.AsyncClient, job: Job, attempts_before: int) -> None:
        assert job.webhook_url is not None
        body = json.dumps(webhook_payload(job)).encode()
        headers = {"Content-Type": "application/json", **signature_headers(self.signing_key, job.id, body)}
        status: int | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                target = await asyncio.get_running_loop().run_in_executor(
                    self._resolver, self.policy.target, job.webhook_url)
                # Streamed and closed unread: only the status matters, and a receiver that answers with an
                # endless body must not fill this process's memory or hold a slot.
                response = await client.send(target.build_request(client, "POST", headers, body), stream=True)
                await response.aclose()
            status = response.status_code
            if 200 <= status < 300:
                self.deliveries.mark_delivered(job.id, status)
                return
            error = f"HTTP {status}"
            if response.is_redirect:
                error += " (redirects are not followed for webhooks)"
        except AddressNotAllowed as exc:
            error = (f"refused, not retried: {exc} (an operator may allow it with --fetch-allow or "
                     "VACE_FETCH_ALLOW_HOSTS)")
            log.warning("webhook for %s %s", job.id, error)
            self.deliveries.mark_failed_attempt(job.id, None, error, None)
            return
        except TimeoutError:
            error = f"no answer within {self.timeout_s:g} s (the deadline of one attempt)"
        except LookupError as exc:  # DNS may come back: retried like a connection error
            error = f"the host name {exc} could not be resolved"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._failed_attempt(job, attempts_before, status, error)

    def _failed_attempt(self, job: Job, attempts_before: int, status: int | None, error: str) -> None:
        """Count the attempt; retry later with exponential backoff, or give up after max_attempts."""
        attempts = attempts_before + 1
        next_at = None
        if attempts < self.max_attempts:
            next_at = time.time() + min(self.retry_base_s * 2 ** (attempts - 1), self.retry_max_s)
        log.warning("webhook for %s failed (attempt %d/%d): %s", job.id, attempts, self.max_attempts, error)
        self.deliveries.mark_failed_attempt(job.id, status, error, next_at)


def _origin(url: str) -> str:
    """The receiver a URL names, for the per-receiver limit (a malformed URL is its own origin: it fails
    at once in _deliver)."""
    try:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port}"
    except ValueError:
        return url
