"""Status polls answered before FastAPI's router: the hottest route, at 10 Hz per client.

fal's Python client polls every 0.1 s per request. Routing, dependency injection and query validation
cost several times what the status read itself does, so this pure-ASGI layer answers
`GET /queue/{app}/requests/{id}/status` directly with `QueueApi.status_answer`, the same code the
documented FastAPI route calls. It sits innermost: addressing (host/proxy normalisation, request id),
API keys and CORS have all run before it.
"""

from __future__ import annotations

import re
import urllib.parse

from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.routes.queue import QueueApi

_STATUS_PATH = re.compile(r"/queue/(?P<app>.+)/requests/(?P<request_id>[^/]+)/status")


def last_query_value(query_string: bytes, name: str) -> str | None:
    """The value FastAPI's scalar Query(...) would bind: the last occurrence of the parameter."""
    value = None
    for key, item in urllib.parse.parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == name:
            value = item
    return value


class StatusFastPath:
    def __init__(self, app: ASGIApp, api: QueueApi) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _STATUS_PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        logs = last_query_value(scope["query_string"], "logs")
        response = self.api.status_answer(scope, match["app"], match["request_id"], logs)
        await response(scope, receive, send)
