"""uvicorn, with the workers told to stop the moment the server is asked to.

On SIGTERM/SIGINT uvicorn first waits (up to GRACEFUL_SHUTDOWN_S) for open requests to finish, and only
then runs the app's lifespan shutdown. A sync `/run` call or an SSE status stream waits on a job, and the
job only ends once its worker is told to stop: so the workers are signalled first, as the exit begins,
and requeue their jobs while uvicorn drains the connections.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from server.api.http_protocol import HttpLimits, limited_protocol

# Open requests get this long after SIGTERM; with the workers' 30 s grace running alongside, the whole
# shutdown fits in `docker run --stop-timeout 60`.
GRACEFUL_SHUTDOWN_S = 30
STARTUP_FAILURE = 3
# Descriptors beyond the connections: the SQLite files, files being served or uploaded, the workers' pipes.
SPARE_FILES = 256


class WorkersFirstServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:  # once: a second signal (uvicorn's "force exit") must not re-enter it
            self.on_exit()
        super().handle_exit(sig, frame)


def run_server(app: FastAPI, limits: HttpLimits, **uvicorn_options: Any) -> None:
    """Serve `app` (built by server.api.app.create_app) until SIGTERM/SIGINT, holding every connection to
    `limits` (server/api/http_protocol.py); the other options are uvicorn.Config's."""
    _raise_open_file_limit(limits.max_connections + SPARE_FILES)
    config = uvicorn.Config(app, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, http=limited_protocol(limits),
                            **uvicorn_options)
    server = WorkersFirstServer(config, on_exit=app.state.begin_shutdown)
    # uvicorn re-raises the Ctrl+C it shut down for; the shutdown itself is done (uvicorn.run does this too).
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # e.g. the port is taken; uvicorn.run's exit code


def _raise_open_file_limit(wanted: int) -> None:
    """Many systems start processes with a soft limit of 1024 descriptors, below --max-connections: past it
    the server could not even accept (or open its database). Raised as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
