"""Removes the files of large data: URIs (server/files/data_uris.py) once their job is no longer active.

A cancel reaps at once (server/api/routes/queue.py); jobs that end in a worker are caught by this thread
within REAP_INTERVAL_S. Each pass lists the markers of the jobs that hold such files and asks the job store
whether each is still queued or running (one indexed read per job), so an idle pass costs almost nothing.
"""

from __future__ import annotations

import logging

from server.api.background.periodic import PeriodicThread
from server.files.data_uris import DataUriFiles
from server.jobs.store import JobStore

log = logging.getLogger("vace.inputs")

REAP_INTERVAL_S = 5.0


class InputReaper:
    def __init__(self, store: JobStore, inputs: DataUriFiles, interval_s: float = REAP_INTERVAL_S) -> None:
        self.store = store
        self.inputs = inputs
        self._thread = PeriodicThread("input-reaper", interval_s, self.reap, log,
                                      "removing the input files of finished jobs failed")

    def reap(self) -> int:
        return self.inputs.reap(self.store.retention.is_active)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._thread.stop(timeout)
