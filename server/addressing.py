"""One server, three ways of addressing it (fal-protocol.md §1, §6.4), normalised before routing.

- `/queue/{endpoint}...`  queue semantics by path prefix.
- `Host: queue.<anything>` + `/{endpoint}...`  queue semantics by host (FAL_QUEUE_RUN_HOST=queue.example.com).
- `/run/{endpoint}` or a bare `/{endpoint}` on any other host: the synchronous run route.

Trailing slashes are stripped instead of redirected: fal's SDKs add them and follow no redirects.
Every response gets `x-fal-request-id`; routes that know the job id put it in `request.state`.
"""

from __future__ import annotations

import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.endpoints import ENDPOINTS

REQUEST_ID_HEADER = "x-fal-request-id"
_APP_OWNERS = {endpoint_id.split("/", 1)[0] for endpoint_id in ENDPOINTS}


def _is_app_path(path: str) -> bool:
    first = path.lstrip("/").split("/", 1)[0]
    return first in _APP_OWNERS


class FalAddressingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
        host = Headers(scope=scope).get("host", "")
        state = scope.setdefault("state", {})
        # How this caller reaches the queue routes, so the URLs we hand back work for it.
        queue_prefix = "/queue"
        if not path.startswith(("/queue/", "/run/")) and _is_app_path(path):
            if host.startswith("queue."):
                path, queue_prefix = "/queue" + path, ""
            else:
                path = "/run" + path
        scope["path"] = path
        scope["raw_path"] = path.encode()
        state["queue_prefix"] = queue_prefix
        state["fal_request_id"] = str(uuid.uuid4())

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers[REQUEST_ID_HEADER] = state["fal_request_id"]
            await send(message)

        await self.app(scope, receive, send_with_request_id)
