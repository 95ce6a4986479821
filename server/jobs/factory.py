"""The one place a job store is constructed: the backend is chosen from where the jobs live."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from server.jobs.store import JobStore

if TYPE_CHECKING:
    from server.settings import Settings

MEMORY = "memory:"  # one process only: tests and the protocol-only app (tests/server/test_queue_protocol.py)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_job_store(location: Path | str, *, node: str | None = None, lease_s: float = 30.0,
                   max_attempts: int = 2) -> JobStore:
    """`memory:` -> server/jobs/memory.py; a postgresql:// URL -> server/jobs/postgres.py (jobs shared by
    boxes; `node`, `lease_s` and `max_attempts` are its lease-based recovery, see there); a file path ->
    SQLite (server/jobs/sqlite.py). Every process that opens the same location shares the jobs."""
    if location == MEMORY:
        from server.jobs.memory import MemoryJobStore

        return MemoryJobStore()
    if isinstance(location, str) and location.startswith(POSTGRES_SCHEMES):
        from server.jobs.postgres import PostgresJobStore

        return PostgresJobStore(location, node=node, lease_s=lease_s, max_attempts=max_attempts)
    from server.jobs.sqlite import SqliteJobStore

    return SqliteJobStore(Path(location))


def open_settings_job_store(settings: Settings) -> JobStore:
    """The store a server or worker with these settings uses: --database-url, else <data-dir>'s SQLite."""
    if settings.database_url:
        return open_job_store(settings.database_url, node=settings.node_name,
                              lease_s=settings.worker_lease_s, max_attempts=settings.max_attempts)
    return open_job_store(settings.db_path)
