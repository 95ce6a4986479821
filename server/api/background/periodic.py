"""One pass of some background work every `interval_s` on a daemon thread in the API process, until stopped.

A pass that raises (a locked database, a full disk, a bucket that blips) is logged and the next one runs on
schedule: a thread that died on one error would leave its work undone for the server's life (issue 11).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class PeriodicThread:
    def __init__(self, name: str, interval_s: float, run_once: Callable[[], object], log: logging.Logger,
                 failure: str, *, first_at_once: bool = True) -> None:
        self.name = name
        self.interval_s = interval_s
        self.run_once = run_once
        self.log = log
        self.failure = failure  # what the log says when a pass fails
        self.first_at_once = first_at_once  # else the first pass waits one interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        if not self.first_at_once and self._stop.wait(self.interval_s):
            return
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                self.log.exception(self.failure)
            self._stop.wait(self.interval_s)
