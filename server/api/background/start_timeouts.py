"""Start timeouts expire on time: a thread fails queued jobs past their start deadline (fal's 504
`request_timeout`, answered with `X-Fal-Request-Timeout-Type: user` by server/api/responses.py).

The workers' `claim` expires them too, but only when a worker asks for work: with every worker busy, or
none (`--workers 0`), a deadline would pass unnoticed. One indexed read per tick when nothing is due.
"""

from __future__ import annotations

import logging
import threading

from server.jobs.store import JobStore

log = logging.getLogger("vace.start_timeouts")

TICK_S = 0.25  # a deadline is answered at most this late


class StartTimeoutSweeper:
    def __init__(self, store: JobStore, tick_s: float = TICK_S) -> None:
        self.store = store
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> list[str]:
        expired = self.store.expire_start_deadlines()
        if expired:
            log.info("start timeout passed before a worker took %d request(s): %s", len(expired),
                     ", ".join(expired))
        return expired

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="start-timeouts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.sweep_once()
            except Exception:  # a locked or briefly unavailable database: try again next tick
                log.exception("start-timeout sweep failed")
