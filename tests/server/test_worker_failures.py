"""server/worker/failures.py: which fal error a failed job completes with."""

from __future__ import annotations

import errno

import torch

from server.contract.errors import InputError
from server.worker.failures import failure_of, log_line


def test_cuda_out_of_memory_is_recognised_by_its_type() -> None:
    error = failure_of(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert error.status_code == 500 and error.error_type == "runner_server_error"
    assert "lower resolution or fewer frames" in error.body["detail"]


def test_an_error_merely_named_like_oom_is_a_plain_failure() -> None:
    class OutOfMemoryError(RuntimeError):  # e.g. a library's own class of that name
        pass

    error = failure_of(OutOfMemoryError("host memory"))
    assert error.status_code == 500 and "lower resolution" not in str(error.body)
    assert "OutOfMemoryError: host memory" in str(error.body)


def test_input_errors_keep_their_field_and_type() -> None:
    exc = InputError("video_url", "not a video", "unsupported_video_format")
    assert failure_of(exc) == exc.to_job_error()
    assert log_line(exc) == "not a video"


def test_a_full_disk_under_a_wrapper_is_a_507() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("could not write the output") from inner
    except RuntimeError as exc:
        error = failure_of(exc, "w-test, job j")
    assert error.status_code == 507 and error.error_type == "runner_server_error"
