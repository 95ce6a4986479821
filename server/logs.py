"""Logging for the server and its workers: plain text, or `--log-format json` (one JSON object a line).

Every record carries the job id, worker id and phase of what was running when it was logged: the worker
sets them in context variables (`job_context`, `set_phase`), so library lines (diffusers, uvicorn) logged
during a job carry them too. Absent values are null, so each line has the same keys.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("vace_job_id", default=None)
_worker_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("vace_worker_id", default=None)
_phase: contextvars.ContextVar[str | None] = contextvars.ContextVar("vace_phase", default=None)
_process_worker_id: str | None = None  # the worker process's own id, for lines outside any job
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class ContextFilter(logging.Filter):
    """Copies the context variables onto each record (job_id, worker_id, phase)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = _job_id.get()
        record.worker_id = _worker_id.get() or _process_worker_id
        record.phase = _phase.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job_id": getattr(record, "job_id", None),
            "worker_id": getattr(record, "worker_id", None),
            "phase": getattr(record, "phase", None),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(log_format: str, worker_id: str | None = None, level: int = logging.INFO) -> None:
    """The root logger's one handler (stderr), in `log_format` ("text" or "json")."""
    global _process_worker_id
    _process_worker_id = worker_id
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


@contextlib.contextmanager
def job_context(job_id: str, worker_id: str) -> Iterator[None]:
    tokens = (_job_id.set(job_id), _worker_id.set(worker_id), _phase.set(None))
    try:
        yield
    finally:
        _phase.reset(tokens[2])
        _worker_id.reset(tokens[1])
        _job_id.reset(tokens[0])


def set_phase(phase: str | None) -> None:
    _phase.set(phase)
