"""Optional API keys: when the operator sets any, requests must carry `Authorization: Key <key>` (fal's form)
or `Authorization: Bearer <key>`.

Left open on purpose:
- /health, /healthz, /readyz, /metrics, /docs, /redoc, /openapi.json, /api/openapi/queue/openapi.json (per
  endpoint), /playground and the static files under /static/: probes, counters and documentation hold nothing
  private (the playground page asks for a key itself before it calls the API);
- /.well-known/jwks.json: the public key webhook receivers verify signatures with;
- GET/HEAD /files/{token}/{name}: result links are unguessable capabilities that fal's clients and
  browsers fetch without credentials, like fal's CDN URLs;
- PUT/POST /storage/upload/{upload_id}[/...]: the upload URL handed out by an authenticated initiate call
  is itself the capability; the JS client PUTs to it with a bare fetch();
- CORS preflights (browsers never attach credentials to them).
Failures are fal's 401 `{"detail": "Unauthorized"}` with an x-fal-request-id, like every other answer.
"""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.middleware.addressing import REQUEST_ID_HEADER

OPEN_PATHS = frozenset({"/health", "/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect",
                        "/redoc", "/openapi.json", "/api/openapi/queue/openapi.json", "/playground",
                        "/.well-known/jwks.json"})
_STATIC = re.compile(r"/static/[A-Za-z0-9_.\-/]+")
_FILE = re.compile(r"/files/[^/]+/[^/]+")
_UPLOAD_SLOT = re.compile(r"/storage/upload/(?!initiate(?:-multipart)?(?:/|$))[^/]+(?:/[^/]+)?")
_SCHEMES = ("key", "bearer")


def is_open(method: str, path: str, headers: Headers) -> bool:
    """Requests that need no key (see the module docstring for why)."""
    path = path.rstrip("/") or "/"
    if method == "OPTIONS" and "access-control-request-method" in headers:
        return True
    if method in ("GET", "HEAD") and (path in OPEN_PATHS or _FILE.fullmatch(path)
                                      or _STATIC.fullmatch(path)):
        return True
    return method in ("PUT", "POST") and _UPLOAD_SLOT.fullmatch(path) is not None


def presented_key(headers: Headers) -> bytes | None:
    scheme, _, credential = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() not in _SCHEMES or not credential.strip():
        return None
    return credential.strip().encode()


class ApiKeyMiddleware:
    """Pure ASGI, so streaming responses (SSE status) pass through untouched."""

    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys if key]

    def authorized(self, headers: Headers) -> bool:
        presented = presented_key(headers)
        if presented is None:
            return False
        # Compare with every key without stopping early, so timing says nothing about which key is close.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(key, presented)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if is_open(scope["method"], scope["path"], headers) or self.authorized(headers):
            await self.app(scope, receive, send)
            return
        # Inside FalAddressingMiddleware the request already has an id; standalone, make one.
        request_id = scope.get("state", {}).get("fal_request_id") or str(uuid.uuid4())
        response = JSONResponse({"detail": "Unauthorized"}, status_code=401,
                                headers={REQUEST_ID_HEADER: request_id, "WWW-Authenticate": "Key"})
        await response(scope, receive, send)
