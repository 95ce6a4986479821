"""Failures in fal's two wire formats, as data, kept so the result route can replay them exactly.

No HTTP import: the worker and the job store use these too; server/api/responses.py turns them into responses.

- Request errors (cancelled, timed out, worker lost): a flat `{"detail": str, "error_type": str}` body plus
  the `X-Fal-Error-Type` header.
- Model errors (bad input found while running): 422 with a FastAPI-style `detail` list whose items carry
  `loc`, `msg`, `type` and `url`, as fal's model-error page describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ERRORS_DOC_URL = "https://docs.fal.ai/errors/#"


@dataclass(frozen=True)
class JobError:
    message: str
    error_type: str
    status_code: int
    body: dict[str, Any]

    @property
    def is_request_error(self) -> bool:
        """Request errors carry X-Fal-Error-Type; model errors are described by their detail list."""
        return isinstance(self.body.get("detail"), str)


class InputError(Exception):
    """An input that passed schema validation but cannot be used (undecodable video, unreachable URL...)."""

    def __init__(self, field: str | None, message: str, error_type: str, ctx: dict[str, Any] | None = None):
        super().__init__(message)
        self.field = field
        self.message = message
        self.error_type = error_type
        self.ctx = ctx

    def to_job_error(self) -> JobError:
        item: dict[str, Any] = {
            "loc": ["body", self.field] if self.field else ["body"],
            "msg": self.message,
            "type": self.error_type,
            "url": ERRORS_DOC_URL + self.error_type,
        }
        if self.ctx:
            item["ctx"] = self.ctx
        return JobError(self.message, self.error_type, 422, {"detail": [item]})


def request_error(detail: str, error_type: str, status_code: int) -> JobError:
    return JobError(detail, error_type, status_code, {"detail": detail, "error_type": error_type})


def cancelled_error() -> JobError:
    return request_error("Request cancelled", "client_cancelled", 499)


def start_timeout_error() -> JobError:
    return request_error("Request was not started before its start timeout", "request_timeout", 504)


def worker_lost_error(attempts: int) -> JobError:
    return request_error(
        f"The worker running this request stopped unexpectedly ({attempts} attempt(s)); "
        "the input may be too large for this machine.",
        "runner_disconnected",
        503,
    )


def internal_error(message: str) -> JobError:
    return request_error(message, "runner_server_error", 500)
