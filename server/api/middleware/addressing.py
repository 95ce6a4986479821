"""One server, three ways of addressing it (docs/fal-protocol.md §1, §6.4), normalised before routing.

- `/queue/{endpoint}...`  queue semantics by path prefix.
- `Host: queue.<anything>` + `/{endpoint}...`  queue semantics by host (FAL_QUEUE_RUN_HOST=queue.example.com).
- `/run/{endpoint}` or a bare `/{endpoint}` on any other host: the synchronous run route.
- `/api/fal/proxy` with `x-fal-target-url: https://queue.fal.run/...` (the JS client's `proxyUrl`,
  docs/fal-protocol.md §6.2): the target URL's host, path and query pick the route, exactly as if it had
  been called directly. Nothing is fetched from the target host: this server *is* the upstream.

Trailing slashes are stripped instead of redirected: fal's SDKs add them and follow no redirects.
Every response gets `x-fal-request-id`; routes that know the job id put it in `request.state`.
"""

from __future__ import annotations

import urllib.parse
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.contract.endpoints import ENDPOINTS

REQUEST_ID_HEADER = "x-fal-request-id"
TARGET_URL_HEADER = "x-fal-target-url"
PROXY_PATH = "/api/fal/proxy"
_APP_OWNERS = {endpoint_id.split("/", 1)[0] for endpoint_id in ENDPOINTS}


def _is_app_path(path: str) -> bool:
    first = path.lstrip("/").split("/", 1)[0]
    return first in _APP_OWNERS


def _route_path(host: str, path: str) -> str:
    """Where a request for `host` + `path` lands in this app (hosts may carry a port)."""
    if path.startswith(("/queue/", "/run/")) or not _is_app_path(path):
        return path  # storage, files, health... and already-prefixed paths are host-independent
    return ("/queue" if host.startswith("queue.") else "/run") + path


def _proxy_target(scope: Scope) -> tuple[str, bytes] | None:
    """The (path, query) named by x-fal-target-url, or None when the header is missing or unusable."""
    target = Headers(scope=scope).get(TARGET_URL_HEADER)
    if not target:
        return None
    parts = urllib.parse.urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    path = urllib.parse.unquote(parts.path).rstrip("/") or "/"
    return _route_path(parts.netloc.lower(), path), parts.query.encode()


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
        # How this caller reaches the queue routes, so the URLs we hand back work for it. Through the
        # proxy they point at this server's /queue/ routes: JS rebuilds them anyway, and they work directly.
        queue_prefix = "/queue"
        bad_proxy_call = False
        if path == PROXY_PATH and scope["method"] != "OPTIONS":
            target = _proxy_target(scope)
            if target is None:
                bad_proxy_call = True
            else:
                path, scope["query_string"] = target
        else:
            routed = _route_path(host, path)
            if routed != path and host.startswith("queue."):
                queue_prefix = ""
            path = routed
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

        if bad_proxy_call:
            response = JSONResponse({"detail": f"Missing or invalid {TARGET_URL_HEADER} header"},
                                    status_code=400)
            await response(scope, receive, send_with_request_id)
            return
        await self.app(scope, receive, send_with_request_id)
