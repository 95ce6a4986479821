"""The one place a job store is constructed: the backend is chosen from where the jobs live."""

from __future__ import annotations

from pathlib import Path

from server.jobs.store import JobStore

MEMORY = "memory:"  # one process only: tests and the protocol-only app (tests/server/test_queue_protocol.py)


def open_job_store(location: Path | str) -> JobStore:
    """`memory:` -> server/jobs/memory.py; a file path -> SQLite (server/jobs/sqlite.py).

    Every process that opens the same path shares the jobs. A PostgreSQL backend would be picked here by
    its URL scheme, and nothing else would change.
    """
    if location == MEMORY:
        from server.jobs.memory import MemoryJobStore

        return MemoryJobStore()
    from server.jobs.sqlite import SqliteJobStore

    return SqliteJobStore(Path(location))
