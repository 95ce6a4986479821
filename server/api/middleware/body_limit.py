"""JSON request bodies (data: URIs make them large), capped in the API process on Content-Length and on the
bytes actually streamed; a refusal is a 413 in fal's flat request-error form. Uploads have their own cap.
"""

from __future__ import annotations

import contextlib

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.responses import error_response
from server.contract.errors import request_error

TOO_LARGE = "request_too_large"

# Routes whose body is a file, streamed to disk under its own cap (max_upload_bytes,
# server/api/routes/storage.py).
UPLOAD_PUT_PREFIXES = ("/storage/upload/", "/files/")
UPLOAD_POST_PATHS = ("/files/upload",)


class _BodyTooLarge(HTTPException):
    """Raised from `receive`; an HTTPException so FastAPI's body parser lets it through instead of a 400."""

    def __init__(self) -> None:
        super().__init__(413)


class RequestSizeMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): counts body bytes as they arrive and never buffers them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_upload(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        exceeded = started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # chunked, or a Content-Length that lied
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app answers to the aborted read is replaced by our 413
            started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):  # already answered below
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = (f"Request body is larger than this server's {self.max_bytes} byte limit; upload large "
                  "files to storage and pass their URL instead of a data: URI")
        response = error_response(request_error(detail, TOO_LARGE, 413), {"Connection": "close"})
        await response(scope, receive, send)


def _is_upload(scope: Scope) -> bool:
    path, method = scope["path"], scope["method"]
    return (method == "PUT" and path.startswith(UPLOAD_PUT_PREFIXES)) or (
        method == "POST" and path in UPLOAD_POST_PATHS)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server (h11/httptools) refuses a malformed header before we see it
    return None
