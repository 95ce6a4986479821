"""An exception raised while running a job -> the fal error the job completes with.

Cancellation is not here: whether a cancelled job fails or goes back to the queue depends on why it was
cancelled, which only server/worker/loop.py knows.
"""

from __future__ import annotations

import errno
import logging
import traceback

import torch

from server.contract.errors import InputError, JobError, internal_error, request_error

log = logging.getLogger("vace.worker")


def failure_of(exc: Exception, where: str = "") -> JobError:
    """The user's input (422s), a full disk (507), out of GPU memory (500 with advice), else a 500.

    The worker's own log gets what the operator needs: `where` for a full disk, the traceback for a bug.
    """
    if isinstance(exc, InputError):
        return exc.to_job_error()
    if disk_full(exc):  # fetching, decoding or encoding: not the model's fault, nor the user's
        log.error("%s: out of disk space (ENOSPC)", where)
        return disk_full_error()
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        # The one failure users can act on (smaller size or fewer frames): say so.
        _release_cuda_memory()
        return request_error(
            "Out of GPU memory for this request; try a lower resolution or fewer frames.",
            "runner_server_error", 500,
        )
    traceback.print_exception(exc)
    return internal_error(f"Generation failed: {type(exc).__name__}: {exc}")


def log_line(exc: Exception) -> str:
    """The ERROR line the job's logs get."""
    return exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"


def disk_full(exc: BaseException) -> bool:
    """ENOSPC on the exception or anything it was raised from (PyAV's and our wrappers keep the cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def disk_full_error() -> JobError:
    return request_error("The server is out of disk space; the request could not be completed. Retry "
                         "later, or tell the server's operator.", "runner_server_error", 507)


def _release_cuda_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
