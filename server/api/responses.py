"""fal's errors (server/contract/errors.py) as HTTP responses: the API process's side of them."""

from __future__ import annotations

from starlette.responses import JSONResponse

from server.contract.errors import JobError


def error_response(error: JobError, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error as HTTP: its status and body, plus X-Fal-Error-Type for the flat request-error form."""
    all_headers = dict(headers or {})
    if error.is_request_error:
        all_headers["X-Fal-Error-Type"] = error.error_type
    return JSONResponse(error.body, status_code=error.status_code, headers=all_headers)
