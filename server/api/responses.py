"""fal's errors (server/contract/errors.py) as HTTP responses: the API process's side of them."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from server.contract.errors import ERRORS_DOC_URL, JobError, internal_error, request_error
from server.files.free_space import is_disk_full

# fal's start-timeout answer carries this header; without it @fal-ai/client retries result() (docs:
# fal-current-schema.md, "Protocol details found with the real clients").
START_TIMEOUT_HEADERS = {"X-Fal-Request-Timeout-Type": "user"}
INSUFFICIENT_STORAGE = "insufficient_storage"
DISK_FULL_RETRY_AFTER_S = 60


def error_response(error: JobError, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error as HTTP: its status and body, plus X-Fal-Error-Type for the flat request-error form."""
    all_headers = dict(headers or {})
    if error.is_request_error:
        all_headers["X-Fal-Error-Type"] = error.error_type
    if error.error_type == "request_timeout":
        all_headers |= START_TIMEOUT_HEADERS
    return JSONResponse(error.body, status_code=error.status_code, headers=all_headers)


def unprocessable(loc: tuple[str | int, ...], message: str, error_type: str,
                  ctx: dict[str, Any] | None = None) -> JSONResponse:
    """One field refused, in the form of FastAPI's (and fal's) 422 validation errors."""
    item: dict[str, Any] = {"loc": list(loc), "msg": message, "type": error_type,
                            "url": ERRORS_DOC_URL + error_type}
    if ctx:
        item["ctx"] = ctx
    return JSONResponse({"detail": [item]}, status_code=422, headers={"X-Fal-Retryable": "false"})


class EncodableJSONResponse(JSONResponse):
    """JSON that is always written: a string that is no UTF-8 (a lone surrogate) is sent \\u-escaped."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def os_error_response(_: Request, exc: Exception) -> JSONResponse:
    """An OSError out of a route, in fal's error form instead of Starlette's plain-text 500.

    A full disk or quota (the free-space check of server/files/free_space.py, a write that ran out of space,
    the job database that could not grow) is a 507 the client may retry later: nothing was stored, the
    writers being atomic. Anything else is a 500 in fal's form.
    """
    if is_disk_full(exc):
        detail = "The server is out of disk space; nothing was stored. Retry later."
        return error_response(request_error(detail, INSUFFICIENT_STORAGE, 507),
                              {"Retry-After": str(DISK_FULL_RETRY_AFTER_S)})
    return error_response(internal_error("Internal server error"))


def validation_error_response(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 body (`detail`: one item per error, each with fal's `url`), with every echoed input
    made encodable, and `X-Fal-Retryable: false` like the server's other 422s.

    The default handler echoes each bad input; an input of NaN or Infinity (valid to Python's JSON parser,
    not in JSON) or a string with a lone surrogate cannot be written back, and the answer became a 500.
    """
    assert isinstance(exc, RequestValidationError)
    items = _encodable(jsonable_encoder(exc.errors()))
    for item in items:  # fal's items carry a link to the error type's documentation, as ours elsewhere do
        item["url"] = ERRORS_DOC_URL + str(item.get("type", ""))
    return JSONResponse({"detail": items}, status_code=422, headers={"X-Fal-Retryable": "false"})


def _encodable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable(key): _encodable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    return value
