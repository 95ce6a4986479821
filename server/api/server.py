"""uvicorn, with the workers told to stop the moment the server is asked to.

On SIGTERM/SIGINT uvicorn first waits (up to GRACEFUL_SHUTDOWN_S) for open requests to finish, and only
then runs the app's lifespan shutdown. A sync `/run` call or an SSE status stream waits on a job, and the
job only ends once its worker is told to stop: so the workers are signalled first, as the exit begins,
and requeue their jobs while uvicorn drains the connections.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

# Open requests get this long after SIGTERM; with the workers' 30 s grace running alongside, the whole
# shutdown fits in `docker run --stop-timeout 60`.
GRACEFUL_SHUTDOWN_S = 30
STARTUP_FAILURE = 3


class WorkersFirstServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:  # once: a second signal (uvicorn's "force exit") must not re-enter it
            self.on_exit()
        super().handle_exit(sig, frame)


def run_server(app: FastAPI, **uvicorn_options: Any) -> None:
    """Serve `app` (built by server.api.app.create_app) until SIGTERM/SIGINT; options are uvicorn.Config's."""
    config = uvicorn.Config(app, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **uvicorn_options)
    server = WorkersFirstServer(config, on_exit=app.state.begin_shutdown)
    # uvicorn re-raises the Ctrl+C it shut down for; the shutdown itself is done (uvicorn.run does this too).
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # e.g. the port is taken; uvicorn.run's exit code
