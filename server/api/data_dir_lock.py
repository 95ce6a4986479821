"""One `vace serve` per data dir: an OS lock on `<data-dir>/server.lock`, held for the server's life.

A second server on the same data dir would take the first one's running jobs for orphans (requeue and run
them again: an attempt spent, a duplicate output) and wipe its worker list (issue 11). flock(2) is released
by the kernel when the holder exits however it exits (SIGKILL included), so a crash never leaves a stale
lock. The descriptor is not inherited (Python opens files non-inheritable), so the workers the server
starts never hold it: a worker outliving a killed server cannot keep the next one from starting (it dies
with the server anyway, server/worker/loop.py). `--workers 0` takes the lock too: an API-only server still
recovers orphaned jobs and clears the worker list when it starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "server.lock"


class DataDirInUse(Exception):
    """Another live server holds the data dir."""


@contextlib.contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[None]:
    """Lock `data_dir` for this process until the block ends; DataDirInUse at once if another holds it."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # owner-only, as server/api/app.py creates it
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise DataDirInUse(
                f"another `vace serve` (pid {holder}) is using the data dir {data_dir}; two servers on one "
                "data dir would run each other's jobs twice. Stop it first, or give this one its own "
                "--data-dir.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message above; the lock is what counts
        yield
    finally:
        os.close(fd)  # releases the lock
