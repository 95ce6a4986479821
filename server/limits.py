"""Size caps: what the server refuses because it is too big, before it costs memory, disk or a GPU.

- `InputLimits`: input videos and images, checked by the worker from the probe (the container's header and
  first frame; an image's header) before the rest is decoded; a refusal is a 422 model error on the field.
  It also caps the output's length (`max_output_frames`, which reframe's interpolation can take past the
  schema's 241): refused at submit when the request alone fixes the length (server/endpoints.py), else by
  the worker right after the probe, before anything is generated or interpolated.
- `RequestSizeMiddleware`: JSON request bodies (data: URIs make them large), checked in the API process on
  Content-Length and on the bytes actually streamed; a refusal is a 413 in fal's flat request-error form.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import InputError, error_response, request_error
from server.settings import LARGEST_VALID_OUTPUT, MAX_INPUT_FRAMES, MAX_INPUT_PIXELS, MAX_INPUT_SECONDS

if TYPE_CHECKING:
    from server.settings import Settings

TOO_LARGE = "request_too_large"
# The error type of a too-long output, at submit (server/endpoints.py) and in the worker alike.
OUTPUT_TOO_LONG = "output_too_long"
# Routes whose body is a file, streamed to disk under its own cap (max_upload_bytes, server/storage_api.py).
UPLOAD_PUT_PREFIXES = ("/storage/upload/", "/files/")
UPLOAD_POST_PATHS = ("/files/upload",)


def output_length_field(upsample_factor: int, follows_input: bool) -> str:
    """The request field a too-long output is blamed on: the upsampling, else what set the length.

    (Downsampling alone does not lengthen the output: it interpolates back to about the input's length.)
    """
    if upsample_factor:
        return "temporal_upsample_factor"
    return "video_url" if follows_input else "num_frames"


@dataclass(frozen=True)
class InputLimits:
    max_pixels: int = MAX_INPUT_PIXELS
    max_seconds: float = MAX_INPUT_SECONDS
    max_frames: int = MAX_INPUT_FRAMES
    # Frames in the returned video, after reframe's interpolation: what the worker holds and encodes.
    max_output_frames: int = LARGEST_VALID_OUTPUT

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        return cls(settings.max_input_pixels, settings.max_input_seconds, settings.max_input_frames,
                   settings.max_output_frames)

    def check_video(self, field: str, width: int, height: int, num_frames: int, duration: float) -> None:
        """Raise InputError if a video is too large to decode safely (size first: it is what costs memory)."""
        if width * height > self.max_pixels:
            raise InputError(field, f"{field}: {width}x{height} frames are larger than this server accepts "
                             f"({self._pixels()} per frame)", "video_too_large", self._size(width, height))
        if duration > self.max_seconds:
            raise InputError(field, f"{field}: the video lasts {duration:.0f} s; this server accepts at "
                             f"most {self.max_seconds:g} s", "video_duration_too_long",
                             {"max_duration": self.max_seconds, "duration": round(duration, 3)})
        if num_frames > self.max_frames:
            raise InputError(field, f"{field}: the video has {num_frames} frames; this server accepts at "
                             f"most {self.max_frames}", "video_duration_too_long",
                             {"max_frames": self.max_frames, "num_frames": num_frames})

    def output_refusal(self, output_frames: int, field: str) -> str | None:
        """Why an output of `output_frames` frames is refused, or None; the submit check and the worker's.

        `field` is what the length is blamed on (`output_length_field`), and the advice follows it.
        """
        if output_frames <= self.max_output_frames:
            return None
        advice = {
            "temporal_upsample_factor": "each generated gap gets temporal_downsample_factor + "
                                        "temporal_upsample_factor new frames: lower temporal_upsample_factor "
                                        "or num_frames",
            "video_url": "the length follows the input video: use a shorter video, or set "
                         "match_input_num_frames to false and choose num_frames",
        }.get(field, f"lower {field}")
        return (f"the output video would have {output_frames} frames; this server returns at most "
                f"{self.max_output_frames}: {advice}")

    def check_output(self, field: str, output_frames: int) -> None:
        """Raise InputError if the output would be longer than max_output_frames (before any work on it)."""
        reason = self.output_refusal(output_frames, field)
        if reason is not None:
            raise InputError(field, reason, OUTPUT_TOO_LONG,
                             {"max_output_frames": self.max_output_frames, "output_frames": output_frames})

    def check_image(self, field: str, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise InputError(field, f"{field}: a {width}x{height} image is larger than this server accepts "
                             f"({self._pixels()})", "image_too_large", self._size(width, height))

    def _pixels(self) -> str:
        side = int(self.max_pixels**0.5)
        return f"{self.max_pixels} pixels, e.g. {side}x{side}"

    def _size(self, width: int, height: int) -> dict[str, int]:
        return {"max_pixels": self.max_pixels, "width": width, "height": height}


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
