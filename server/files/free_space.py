"""Free disk space, checked before the API process writes what a client sends (uploads, data: URIs, jobs).

A write that would leave less than the operator's minimum free space (Settings.min_free_disk_bytes) is
refused before its first byte, so a client cannot fill the disk the job database, the outputs and the
workers' scratch space share; server/api/responses.py answers it as a 507 in fal's error form. A write that
runs out of space anyway (the minimum is 0, or another process filled the disk meanwhile) fails with
OSError(ENOSPC), which is answered the same way; the writers are atomic, so no half-written file is left.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class InsufficientStorage(OSError):
    """Less free space than the write needs plus the minimum to keep free. An OSError(ENOSPC), so that every
    caller handles it as it handles a disk that filled up mid-write."""

    def __init__(self, path: Path, free: int, needed: int, keep_free: int) -> None:
        super().__init__(errno.ENOSPC, f"not enough free disk space under {path}: {free} bytes free, "
                                       f"{needed} needed and {keep_free} kept free")
        self.free = free
        self.needed = needed


def is_disk_full(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) is the disk or a quota running out."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            return True
        seen = seen.__cause__
    return False


class FreeSpace:
    """Checks that `path`'s file system keeps `keep_free` bytes free after a write of `incoming` bytes."""

    def __init__(self, path: Path, keep_free: int) -> None:
        self.path = path
        self.keep_free = keep_free

    def free(self) -> int:
        return shutil.disk_usage(self.path).free

    def check(self, incoming: int = 0) -> None:
        """InsufficientStorage if the write would leave less than the minimum free."""
        if self.keep_free <= 0 and incoming <= 0:
            return
        free = self.free()
        if free - incoming < self.keep_free:
            raise InsufficientStorage(self.path, free, incoming, self.keep_free)
