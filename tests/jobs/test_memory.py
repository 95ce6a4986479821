"""server/jobs/memory.py keeps the same contract as the real stores."""

from __future__ import annotations

from pathlib import Path

from server.jobs.factory import MEMORY, open_job_store
from server.jobs.store import JobStore
from tests.jobs.contract import JobStoreContract


class TestMemoryJobStore(JobStoreContract):
    def make_store(self, tmp_path: Path) -> JobStore:
        return open_job_store(MEMORY)
