"""An httpx transport whose sockets consult a `Watch` (a wall-clock deadline, cancellation) while they wait.

httpx's timeouts bound each socket operation separately: a source that sends a byte every 59 s never trips a
60 s read timeout, and a blocked read cannot notice that its job was cancelled. Here every wait (connect, TLS
handshake, each read and write) is cut into slices of at most `POLL_S`, and the watch is consulted between
them, so a download ends within about `POLL_S` of its deadline or its cancellation (server/worker/fetch.py).
httpx's own timeout still applies to each operation, as the idle timeout it is.
"""

from __future__ import annotations

import errno
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpcore
import httpx

T = TypeVar("T")
POLL_S = 0.25  # the longest a blocked socket goes without looking at the watch


class DownloadCancelled(Exception):
    """The job was cancelled while an input was downloading (server/worker/loop.py: client_cancelled)."""


class DeadlineExceeded(Exception):
    """The wall-clock deadline passed while a download was connecting, waiting or reading."""


class Watch:
    """A deadline (time.monotonic) and a cancellation check, consulted on every socket wait.

    `should_cancel` may be slow (the worker's asks the job store), so it is asked at most every POLL_S.
    """

    def __init__(self, deadline: float, should_cancel: Callable[[], bool] | None = None) -> None:
        self.deadline = deadline
        self.should_cancel = should_cancel
        self._next_ask = 0.0

    def check(self) -> float:
        """Raise if cancelled or past the deadline; else the seconds left."""
        now = time.monotonic()
        if self.should_cancel is not None and now >= self._next_ask:
            self._next_ask = now + POLL_S
            if self.should_cancel():
                raise DownloadCancelled()
        left = self.deadline - now
        if left <= 0:
            raise DeadlineExceeded()
        return left

    def call(self, blocking: Callable[[], T]) -> T:
        """`blocking()` (a host-name lookup: getaddrinfo cannot be interrupted) on a daemon thread, waited for
        under the watch: past the deadline or on cancellation the caller goes on and the result is dropped."""
        done = threading.Event()
        outcome: list[T] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                outcome.append(blocking())
            except BaseException as exc:  # handed to the waiting caller
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=run, name="watched-call", daemon=True).start()
        while not done.wait(min(self.check(), POLL_S)):
            pass
        if failure:
            raise failure[0]
        return outcome[0]

    def waits(self, timeout: float | None, on_timeout: type[Exception]) -> Iterator[float]:
        """Wait slices until `timeout` (httpx's timeout for one operation) has passed, then `on_timeout`."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = self.check()
            if end is not None:
                idle = end - time.monotonic()
                if idle <= 0:
                    raise on_timeout("timed out")
                left = min(left, idle)
            yield min(left, POLL_S)


class _WatchedStream(httpcore.NetworkStream):
    def __init__(self, sock: socket.socket, watch: Watch) -> None:
        self._sock = sock
        self._watch = watch

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        for wait in self._watch.waits(timeout, httpcore.ReadTimeout):
            self._sock.settimeout(wait)
            try:
                return self._sock.recv(max_bytes)
            except TimeoutError:
                continue  # a timed-out recv consumed nothing (TLS keeps a partial record buffered)
            except OSError as exc:
                raise httpcore.ReadError(str(exc)) from exc
        raise AssertionError("unreachable: waits() ends by raising")

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        waits = self._watch.waits(timeout, httpcore.WriteTimeout)
        while view:
            self._sock.settimeout(next(waits))
            try:
                view = view[self._sock.send(view):]
            except TimeoutError:
                continue  # nothing was sent; TLS wants the same bytes again, which is what follows
            except OSError as exc:
                raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        try:
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname,
                                          do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as exc:
            self._sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        try:
            for wait in self._watch.waits(timeout, httpcore.ConnectTimeout):
                tls.settimeout(wait)
                try:
                    tls.do_handshake()
                    break
                except TimeoutError:
                    continue  # the handshake resumes where it stopped
                except (ssl.SSLError, OSError) as exc:
                    raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            tls.close()
            raise
        return _WatchedStream(tls, self._watch)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":  # an idle pooled connection that is readable was closed by the server
            return _ready(self._sock, selectors.EVENT_READ, 0)
        return None


class _WatchedBackend(httpcore.NetworkBackend):
    """Opens the connections of one download; each waits under that download's watch."""

    def __init__(self, watch: Watch) -> None:
        self._watch = watch

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        # `host` is the address server/outbound.py vetted and pinned, never a name to look up.
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_NUMERICHOST)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                raise httpcore.ConnectError(f"connect failed: {errno.errorcode.get(code, code)}")
            for wait in self._watch.waits(timeout, httpcore.ConnectTimeout):
                if _ready(sock, selectors.EVENT_WRITE, wait):
                    break
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise httpcore.ConnectError(f"connect failed: {errno.errorcode.get(code, code)}")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        return _WatchedStream(sock, self._watch)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("input downloads never use unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _ready(sock: socket.socket, event: int, wait: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, event)
        return bool(selector.select(wait))


def watched_client(watch: Watch, timeout_s: float, verify: ssl.SSLContext | bool) -> httpx.Client:
    """An httpx client for one download: no proxies from the environment, no redirects followed by itself
    (server/worker/fetch.py checks each hop), `timeout_s` per operation, and the watch on every wait."""
    transport = httpx.HTTPTransport(verify=verify, trust_env=False)
    # httpx has no public way to hand its connection pool a network backend; the pool is all it keeps.
    transport._pool = httpcore.ConnectionPool(  # noqa: SLF001
        ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
        network_backend=_WatchedBackend(watch),
    )
    return httpx.Client(transport=transport, timeout=timeout_s, trust_env=False, follow_redirects=False)
