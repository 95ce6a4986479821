"""Slow and silent webhook receivers never hold up another's webhook (issue 11 item 5).

Real receivers on loopback sockets: four that read the POST and never answer, one that trickles its status
line and headers a byte at a time (no per-read timeout ever fires), and a well-behaved one whose job
completed last. The real dispatcher thread delivers from a real SQLite store.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from server.api.background.webhook_signing import load_or_create_signing_key
from server.api.background.webhooks import WebhookDispatcher
from server.jobs.factory import open_job_store
from server.jobs.model import WebhookDelivery
from server.jobs.store import JobStore
from tests.server.test_webhooks_ssrf import Receiver, completed_job

DEADLINE_S = 6.0


class BadReceiver:
    """Accepts connections and reads each request; then says nothing (`trickle=False`) or sends a status
    line and headers one byte every 0.2 s, forever."""

    def __init__(self, trickle: bool) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.trickle = trickle
        self.requests = 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            self.requests += 1
            head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(10_000))
            for byte in head if self.trickle else ():
                if self.stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
            self.stop.wait()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return open_job_store(tmp_path / "jobs.sqlite3")


@pytest.fixture
def bad_receivers() -> Iterator[list[BadReceiver]]:
    receivers = [BadReceiver(trickle=False) for _ in range(4)] + [BadReceiver(trickle=True)]
    yield receivers
    for r in receivers:
        r.close()


def test_silent_and_trickling_receivers_do_not_delay_another_webhook(
        store: JobStore, bad_receivers: list[BadReceiver], tmp_path: Path) -> None:
    good = Receiver("127.0.0.1")
    key = load_or_create_signing_key(tmp_path / "webhook_ed25519.pem")
    bad_jobs = [completed_job(store, f"{r.base}/hook") for r in bad_receivers]
    good_job = completed_job(store, f"{good.base}/hook")  # completed last: first in no queue
    dispatcher = WebhookDispatcher(store, key, max_attempts=3, retry_base_s=600.0, retry_max_s=600.0,
                                   timeout_s=DEADLINE_S, allow_hosts=("127.0.0.1",))
    deliveries = store.webhooks
    started = time.monotonic()
    dispatcher.start()
    try:
        good_at = wait_for(partial(deliveries.get, good_job.id), lambda d: d.state == "delivered", 30)
        bad_rows = {job.id: wait_for(partial(deliveries.get, job.id), lambda d: d.attempts >= 1, 30)
                    for job in bad_jobs}
        ended_at = time.monotonic() - started
    finally:
        dispatcher.stop()
        good.close()
    # Delivered while every bad receiver still held its connection (each holds one for DEADLINE_S).
    assert good_at[1] - started < DEADLINE_S - 0.5, good_at[1] - started
    assert [path for _, path, _, _ in good.requests] == ["/hook"]
    assert all(r.requests == 1 for r in bad_receivers)
    # Every bad attempt, the trickling one included, ended at the deadline, not at a per-read timeout.
    for row, _ in bad_rows.values():
        assert (row.state, row.attempts, row.last_status) == ("pending", 1, None), row
        assert row.last_error == f"no answer within {DEADLINE_S:g} s (the deadline of one attempt)", row
    assert ended_at < DEADLINE_S + 5, ended_at


def wait_for(get: Callable[[], WebhookDelivery | None], done: Callable[[WebhookDelivery], bool],
             timeout: float) -> tuple[WebhookDelivery, float]:
    """Poll `get()` until `done(row)`; the row and the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = get()
        if row is not None and done(row):
            return row, time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"not settled after {timeout}s: {get()}")
