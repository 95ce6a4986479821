"""Webhook targets pass the same SSRF guard as input URLs (server/outbound.py's AddressPolicy).

Real receivers listen on loopback (IPv4 and IPv6); the dispatcher runs its own delivery thread against a
real SQLite store. A refused target must never see a request, must fail without retries, and must leave
the job alone; the operator's allowlist lets it through.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.api.background.webhook_signing import jwks, load_or_create_signing_key, public_keys, verify
from server.api.background.webhooks import WebhookDispatcher
from server.jobs.factory import open_job_store
from server.jobs.model import Job, Status, WebhookDelivery
from server.jobs.store import JobStore
from tests.server.conftest import start_server

APP = "fal-ai/wan-vace-14b"


class Receiver:
    """Records every request it gets; `redirect[path]` answers 302 to that location instead of 200."""

    def __init__(self, host: str) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.redirect: dict[str, str] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.requests.append((self.command, self.path, dict(self.headers.items()), body))
                location = receiver.redirect.get(self.path)
                self.send_response(302 if location else 200)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = _record  # noqa: N815 - stdlib naming

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver("127.0.0.1")
    yield r
    r.close()


@pytest.fixture
def receiver6() -> Iterator[Receiver]:
    r = Receiver("::1")
    yield r
    r.close()


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return open_job_store(tmp_path / "jobs.sqlite3")


def completed_job(store: JobStore, webhook_url: str) -> Job:
    job = store.submit(APP, {"prompt": "p"}, public_base="http://h:1", webhook_url=webhook_url)
    claimed = store.claim("w1")
    assert claimed is not None and claimed.id == job.id
    assert store.complete(job.id, "w1", {"video": {"url": "/files/t/out.mp4"}, "seed": 7})
    return job


def deliver_all(store: JobStore, key: Ed25519PrivateKey, jobs: list[Job], allow_hosts: tuple[str, ...],
                timeout: float = 30.0) -> dict[str, WebhookDelivery]:
    """Run the real dispatcher thread until every job's delivery is settled (delivered or failed)."""
    dispatcher = WebhookDispatcher(store, key, max_attempts=3, retry_base_s=60.0, retry_max_s=60.0,
                                   timeout_s=5.0, allow_hosts=allow_hosts)
    deliveries = store.webhooks
    dispatcher.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = {job.id: deliveries.get(job.id) for job in jobs}
            if all(row is not None and (row.state != "pending" or row.attempts) for row in rows.values()):
                return rows  # type: ignore[return-value]
            time.sleep(0.05)
        raise AssertionError(f"deliveries not settled after {timeout}s: {rows}")
    finally:
        dispatcher.stop()


def test_private_targets_are_refused_without_a_request_or_retry(
        store: JobStore, receiver: Receiver, receiver6: Receiver, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_getaddrinfo = socket.getaddrinfo

    def dns(host: str, *args: Any, **kwargs: Any) -> Any:
        # A public-looking name whose DNS answer is private (split-horizon DNS or a rebinding attack).
        if host == "hooks.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", 80))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    key = load_or_create_signing_key(tmp_path / "webhook_ed25519.pem")
    urls = [
        f"{receiver.base}/v4",
        f"{receiver6.base}/v6",
        f"http://localhost:{receiver.port}/by-name",  # resolved for real, to loopback
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::ffff:127.0.0.1]:1/mapped",  # loopback hidden in an IPv4-mapped IPv6 address
        "http://hooks.example.com/private",
        "ftp://example.com/hook",
    ]
    jobs = [completed_job(store, url) for url in urls]
    rows = deliver_all(store, key, jobs, allow_hosts=())

    assert receiver.requests == [] and receiver6.requests == []
    for job, url in zip(jobs, urls, strict=True):
        row = rows[job.id]
        assert (row.state, row.attempts, row.last_status) == ("failed", 1, None), (url, row)
        assert row.last_error is not None and row.last_error.startswith("refused, not retried"), row
        assert "--fetch-allow" in row.last_error
        after = store.get(job.id)  # the job keeps its result
        assert after is not None and after.status is Status.COMPLETED and after.error is None
        assert after.output == {"video": {"url": "/files/t/out.mp4"}, "seed": 7}
    assert "10.20.30.40" in rows[jobs[5].id].last_error  # type: ignore[operator]
    assert "not an http(s) URL" in rows[jobs[6].id].last_error  # type: ignore[operator]


def test_allowlisted_hosts_are_delivered(store: JobStore, receiver: Receiver, receiver6: Receiver,
                                         tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "webhook_ed25519.pem")
    by_ip = completed_job(store, f"{receiver.base}/by-ip")
    by_name = completed_job(store, f"http://localhost:{receiver.port}/by-name")
    by_cidr = completed_job(store, f"{receiver6.base}/by-cidr")
    rows = deliver_all(store, key, [by_ip, by_name, by_cidr],
                       allow_hosts=("127.0.0.1", "localhost", "::1/128"))
    assert {job_id: row.state for job_id, row in rows.items()} == dict.fromkeys(rows, "delivered")
    assert sorted(path for _, path, _, _ in receiver.requests) == ["/by-ip", "/by-name"]
    assert [path for _, path, _, _ in receiver6.requests] == ["/by-cidr"]
    for method, path, headers, body in receiver.requests + receiver6.requests:
        lowered = {k.lower(): v for k, v in headers.items()}
        assert method == "POST" and verify(public_keys(jwks(key.public_key())), lowered, body)
        expected = {"/by-ip": by_ip, "/by-name": by_name, "/by-cidr": by_cidr}[path]
        assert json.loads(body)["request_id"] == expected.id
    # The connection is pinned to the checked address, but the receiver still sees the name it was given.
    host_of = {path: headers["Host"] for _, path, headers, _ in receiver.requests}
    assert host_of == {"/by-ip": f"127.0.0.1:{receiver.port}", "/by-name": f"localhost:{receiver.port}"}


def test_redirects_are_not_followed(store: JobStore, receiver: Receiver, tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "webhook_ed25519.pem")
    receiver.redirect["/moved"] = "http://169.254.169.254/latest/meta-data/"
    job = completed_job(store, f"{receiver.base}/moved")
    row = deliver_all(store, key, [job], allow_hosts=("127.0.0.1",))[job.id]
    assert [path for _, path, _, _ in receiver.requests] == ["/moved"]
    assert (row.state, row.attempts, row.last_status) == ("pending", 1, 302)  # retried later, as any non-2xx
    assert row.last_error == "HTTP 302 (redirects are not followed for webhooks)"


def test_live_server_refuses_a_loopback_webhook_at_submit_and_delivers_an_allowlisted_one(
        tmp_path: Path, receiver: Receiver, receiver6: Receiver) -> None:
    """Through the server: start_server allowlists 127.0.0.1 (for its media server), not ::1."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir, workers=0)
    try:
        body = {"prompt": "p", "video_url": "https://example.com/v.mp4"}
        with server.client() as client:
            refused = client.post(f"/queue/{APP}/depth", params={"fal_webhook": f"{receiver6.base}/hook"},
                                  json=body)
            allowed = client.post(f"/queue/{APP}/depth", params={"fal_webhook": f"{receiver.base}/hook"},
                                  json=body)
            # The submit checks the webhook with the deliveries' own policy: the refused one never queues.
            assert refused.status_code == 422 and allowed.status_code == 200
            (item,) = refused.json()["detail"]
            assert item["loc"] == ["query", "fal_webhook"] and "::1" in item["msg"]
            # Stand in for a worker on the same database: finish the queued job.
            store = open_job_store(data_dir / "jobs.sqlite3")
            job = store.claim("test-worker")
            assert job is not None and store.claim("test-worker") is None
            store.complete(job.id, "test-worker", {"seed": 1})
            deliveries = store.webhooks
            deadline = time.monotonic() + 30
            row = None
            while time.monotonic() < deadline:
                row = deliveries.get(allowed.json()["request_id"])
                if row is not None and row.state != "pending":
                    break
                time.sleep(0.1)
            assert row is not None and row.state == "delivered"
            assert receiver6.requests == []
            assert [path for _, path, _, _ in receiver.requests] == ["/hook"]
    finally:
        server.stop()


def test_malformed_urls_fail_alone_and_do_not_hold_up_the_others(store: JobStore, receiver: Receiver,
                                                                 tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "webhook_ed25519.pem")
    bad = [completed_job(store, url) for url in ("http://h:99999/hook", "http://[::1/hook", "http://h:x/")]
    good = completed_job(store, f"{receiver.base}/after-the-bad-ones")
    rows = deliver_all(store, key, [*bad, good], allow_hosts=("127.0.0.1",))
    for job in bad:
        row = rows[job.id]
        assert (row.state, row.attempts) == ("failed", 1) and "not a valid URL" in str(row.last_error), row
    assert rows[good.id].state == "delivered"
    assert [path for _, path, _, _ in receiver.requests] == ["/after-the-bad-ones"]


def test_a_receiver_answering_with_an_endless_body_does_not_hold_the_dispatcher(store: JobStore,
                                                                                 tmp_path: Path) -> None:
    """200 with a 1 GB Content-Length, then a trickle: the status is all that is read."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"x" * 1024)
                except OSError:
                    return
                time.sleep(0.05)

    threading.Thread(target=serve, daemon=True).start()
    key = load_or_create_signing_key(tmp_path / "webhook_ed25519.pem")
    job = completed_job(store, f"http://127.0.0.1:{listener.getsockname()[1]}/hook")
    started = time.monotonic()
    try:
        rows = deliver_all(store, key, [job], allow_hosts=("127.0.0.1",), timeout=10.0)
    finally:
        stop.set()
        listener.close()
    assert rows[job.id].state == "delivered" and rows[job.id].last_status == 200
    assert time.monotonic() - started < 5.0
