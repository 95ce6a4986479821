"""uvicorn's httptools protocol with the limits it lacks: header size, header and body timeouts, connections.

uvicorn's httptools parser (pulled in by `uvicorn[standard]`) accepts headers of any size, and httptools
accumulates a header value chunk by chunk (quadratic), on the event loop every client shares: one 96 MiB
header stalled every request for seconds (issue 11). uvicorn's other parser, h11, bounds headers but is
pure Python and much slower for the status polls fal's clients send at 10 Hz. So the fast parser stays,
and this subclass counts the bytes a request's head has taken: past `max_header_bytes` it answers 431 and
closes, so no request head costs more than that much parsing.

uvicorn never times out a connection that has not finished sending its request (its keep-alive timer only
runs between requests): 20,000 half-sent connections exhausted the file descriptors and every request
failed. Here one sweep per second per server closes, with a 408:
- a connection whose request head is not complete `header_timeout_s` after it connected (a kept-alive
  one: after the first byte of its next request; uvicorn closes it after 5 s idle before that), or that
  stays idle that long after a response;
- a request whose body has sent nothing for `body_timeout_s` while the server was reading it (an app that
  stops reading, e.g. to write an upload to disk, pauses the clock), or that has sent less than
  `min_body_rate` bytes/s on average: it may take `body_timeout_s` plus one second per `min_body_rate` bytes
  received (Apache mod_reqtimeout's MinRate rule), so one byte every few seconds no longer holds a
  connection and an upload buffer forever.
And at most `max_connections` are open: a new one beyond that evicts the connection that has waited longest
without a request in progress (a half-sent or idle one; a real client's request head arrives within
milliseconds, so a slowloris attacker evicts its own connections), or, when every connection is busy with a
request, is answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

SWEEP_S = 1.0


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    min_body_rate: float = 1024.0  # bytes/s


class _Tracked:
    """The connections of one server in the order their clocks started (dicts keep insertion order):
    `waiting` have no request in progress or an incomplete request head; `receiving` are reading a body."""

    def __init__(self) -> None:
        self.waiting: dict[LimitedHttpToolsProtocol, float] = {}
        self.receiving: dict[LimitedHttpToolsProtocol, float] = {}
        self.sweeper: asyncio.TimerHandle | None = None


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for uvicorn.Config(http=...): one per server, so each server has its own books."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"limits": limits, "tracked": _Tracked()})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: HttpLimits
    tracked: _Tracked

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes received since the last request head began or the last body ended
        self._in_head = True  # no request head completed since the connection or the last request
        self._refused = False
        self._body_started = 0.0  # loop time the body's clock started, moved on while the app is not reading
        self._body_bytes = 0

    # -- connection -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tracked = self.tracked
        if tracked.sweeper is None:
            tracked.sweeper = self.loop.call_later(SWEEP_S, _sweep, self.loop, tracked, self.limits)
        if len(self.connections) > self.limits.max_connections:
            oldest = next(iter(tracked.waiting), None)
            if oldest is None:
                self._refuse(503, "Too many connections; retry shortly")
                return
            oldest._refuse(408 if oldest._head_bytes else None, "Connection closed: the server is at its "
                           "connection limit and this connection sent no complete request")
        tracked.waiting[self] = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tracked.waiting.pop(self, None)
        self.tracked.receiving.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"Request headers larger than {self.limits.max_header_bytes} bytes")
        elif not self._in_head and self not in self.tracked.receiving and self.cycle is not None \
                and self.cycle.more_body and not self.cycle.response_complete:
            self.tracked.receiving[self] = self._body_started = self.loop.time()  # a body is still coming:
            # its clocks start (the bytes that came with the head are already counted, on_headers_complete)

    # -- parser callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.tracked.waiting.pop(self, None)  # a kept-alive connection's next request: its head's clock
        self.tracked.waiting[self] = self.loop.time()  # starts now

    def on_headers_complete(self) -> None:
        if self._refused:  # a request pipelined behind a refused one, in the same read
            return
        self._in_head = False
        self._body_bytes = 0
        self.tracked.waiting.pop(self, None)
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:  # a head that arrived whole within one read
            self._refuse(431, f"Request headers larger than {self.limits.max_header_bytes} bytes")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        if self in self.tracked.receiving:  # activity: to the back of the line, with a fresh clock
            del self.tracked.receiving[self]
            self.tracked.receiving[self] = self.loop.time()
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self.tracked.receiving.pop(self, None)
        self._in_head = True  # what comes next belongs to the next request's head
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self not in self.tracked.receiving:
            self.tracked.waiting.pop(self, None)
            self.tracked.waiting[self] = self.loop.time()  # idle: first in line to be evicted when full

    # -- refusing ---------------------------------------------------------------------------------------

    def _refuse(self, status: int | None, detail: str = "") -> None:
        """Answer `status` in fal's error form when no response is under way, then close the connection.
        None closes without a word: a connection that has sent nothing of a request must not read an
        answer it could take for the reply to the request it sends next."""
        if self._refused:
            return
        self._refused = True
        self.tracked.waiting.pop(self, None)
        self.tracked.receiving.pop(self, None)
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if status is not None and (cycle is None or cycle.response_complete or not cycle.response_started):
            body = json.dumps({"detail": detail}).encode()
            defaults = self.server_state.default_headers  # server, date
            head = [STATUS_LINE[status], *(n + b": " + v + b"\r\n" for n, v in defaults),
                    b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n"]
            self.transport.write(b"".join(head) + body)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() sees a disconnect; its writes are dropped
            cycle.message_event.set()
        self.transport.close()


def _sweep(loop: asyncio.AbstractEventLoop, tracked: _Tracked, limits: HttpLimits) -> None:
    """Close the connections whose clock ran out. The waiting line is oldest first, so it stops early; a
    body's average rate needs a look at each one receiving."""
    now = loop.time()
    for protocol, since in list(tracked.waiting.items()):
        if now - since < limits.header_timeout_s:
            break
        protocol._refuse(408 if protocol._head_bytes else None,
                         f"Request headers not received within {limits.header_timeout_s:g} s")
    for protocol, since in list(tracked.receiving.items()):
        if protocol.flow.read_paused:  # the app is not reading: not the client's delay
            protocol._body_started += SWEEP_S
            if now - since >= limits.body_timeout_s:
                del tracked.receiving[protocol]
                tracked.receiving[protocol] = now
            continue
        allowed_s = limits.body_timeout_s + protocol._body_bytes / limits.min_body_rate
        if now - since >= limits.body_timeout_s:
            protocol._refuse(408, f"Request body stalled: nothing received for {limits.body_timeout_s:g} s")
        elif now - protocol._body_started > allowed_s:
            protocol._refuse(408, f"Request body too slow: under {limits.min_body_rate:g} bytes/s on average")
    tracked.sweeper = loop.call_later(SWEEP_S, _sweep, loop, tracked, limits)
