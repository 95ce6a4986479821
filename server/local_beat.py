"""A worker's local liveness beat: a file whose mtime the worker's own thread refreshes, read by the
supervisor that started it on the same machine (server/api/background/supervisor.py).

The job store's heartbeat goes through the database, so a locked or unreachable database used to read as a
stalled worker: once the database answered again, the supervisor saw beats older than
`--worker-stall-timeout` and killed healthy workers. The file needs no database; a worker that is stopped or
stuck holding the GIL stops refreshing it as well, so real stalls are still caught.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


def beat_path(data_dir: Path, worker_id: str) -> Path:
    return data_dir / "workers" / f"{worker_id}.beat"


def beat(path: Path) -> None:
    """Refresh the beat; a failure (a full or read-only disk) is no stall, and the database beat remains."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def last_beat(path: Path) -> float | None:
    """The beat's time.time(), or None when the worker has written none."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def remove_beat(path: Path) -> None:
    path.unlink(missing_ok=True)
