"""Start timeouts expire on time: a thread fails queued jobs past their start deadline (fal's 504
`request_timeout`, answered with `X-Fal-Request-Timeout-Type: user` by server/api/responses.py).

The workers' `claim` expires them too, but only when a worker asks for work: with every worker busy, or
none (`--workers 0`), a deadline would pass unnoticed. One indexed read per tick when nothing is due.
"""

from __future__ import annotations

import logging

from server.api.background.periodic import PeriodicThread
from server.jobs.store import JobStore

log = logging.getLogger("vace.start_timeouts")

TICK_S = 0.25  # a deadline is answered at most this late


class StartTimeoutSweeper:
    def __init__(self, store: JobStore, tick_s: float = TICK_S) -> None:
        self.store = store
        self._thread = PeriodicThread("start-timeouts", tick_s, self.sweep_once, log,
                                      "start-timeout sweep failed", first_at_once=False)

    def sweep_once(self) -> list[str]:
        expired = self.store.expire_start_deadlines()
        if expired:
            log.info("start timeout passed before a worker took %d request(s): %s", len(expired),
                     ", ".join(expired))
        return expired

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._thread.stop(timeout=5)
