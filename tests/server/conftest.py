"""Real servers for the API tests: `python -m server.cli serve` on a free loopback port, tiny model."""

from __future__ import annotations

import base64
import functools
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from preprocessors.video_io import write_mp4

REPO = Path(__file__).resolve().parents[2]
TERMINAL_TIMEOUT_S = 600.0  # generous: a loaded 2-core machine runs a tiny 240p job in 30-200 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60.0, follow_redirects=False, **kwargs)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def start_server(data_dir: Path, *, port: int | None = None, workers: int = 1,
                 timeout: float = 120.0, extra_args: tuple[str, ...] = (),
                 wrap: tuple[str, ...] = ()) -> LiveServer:
    """Start the server as a user would and wait until it answers (and, with workers, is healthy).

    `extra_args` are more `vace serve` flags, e.g. ("--max-queue-length", "2"); `wrap` is a command the
    server is started under (it must exec it), e.g. one that mounts a small file system first.
    """
    port = port or free_port()
    log_path = data_dir.parent / f"{data_dir.name}-server-{port}-{time.time_ns()}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [*wrap, sys.executable, "-m", "server.cli", "serve", "--model", "tiny", "--data-dir", str(data_dir),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
           *extra_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VACE_FETCH_ALLOW_HOSTS": "127.0.0.1"}  # media_server
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = LiveServer(proc, port, data_dir, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()}")
        try:
            code = httpx.get(server.base + "/health", timeout=2.0).status_code
            if code == 200 or (workers == 0 and code == 503):
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.log_text()}")


def wait_completed(client: httpx.Client, status_url: str,
                   timeout: float = TERMINAL_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(status_url, params={"logs": "1"})
        body = response.json()
        if body["status"] == "COMPLETED":
            assert response.status_code == 200
            return body
        assert response.status_code == 202, body
        time.sleep(0.2)
    raise AssertionError(f"{status_url} not completed after {timeout}s")


def wait_for_step(client: httpx.Client, status_url: str, timeout: float = TERMINAL_TIMEOUT_S) -> int:
    """Poll until the job has logged at least one denoising step; returns how many it has logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = client.get(status_url, params={"logs": "1"}).json().get("logs") or []
        steps = sum(e["message"].startswith("Denoising step") for e in logs)
        if steps:
            return steps
        time.sleep(0.05)
    raise AssertionError(f"{status_url} logged no denoising step after {timeout}s")


def data_uri(path: Path, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def moving_bar_frames(count: int, width: int, height: int) -> np.ndarray:
    """A gradient with a bright bar that moves one step per frame: every frame differs."""
    x = np.linspace(0, 200, width, dtype=np.float32)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        frame = np.broadcast_to(x[None, :, None], (height, width, 3)).copy()
        left = (i * 7) % (width - 16)
        frame[:, left:left + 16] = 255
        frames[i] = frame.astype(np.uint8)
    return frames


@dataclass(frozen=True)
class Media:
    folder: Path
    control: Path  # 48 frames, 320x240 at 24 fps
    mask: Path  # same size, a white square in the middle (generate there)
    not_a_video: Path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    folder = tmp_path_factory.mktemp("media")
    control = folder / "control.mp4"
    write_mp4(moving_bar_frames(48, 320, 240), 24, control)
    mask = np.zeros((48, 240, 320, 3), dtype=np.uint8)
    mask[:, 80:160, 120:200] = 255
    write_mp4(mask, 24, folder / "mask.mp4")
    junk = folder / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 100)
    return Media(folder, control, folder / "mask.mp4", junk)


@pytest.fixture(scope="session")
def media_server(media: Media) -> Iterator[str]:
    """Serves the test media over real HTTP on loopback, as a user's file host would."""
    handler = functools.partial(_QuietHandler, directory=str(media.folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("live") / "data")
    yield server
    server.stop()


@dataclass
class ProtocolApp:
    """The API app in-process over server/jobs/memory.py: no worker, no model, no port. The test plays the
    worker through `store` where it needs a job to move."""

    client: Any  # fastapi.testclient.TestClient, imported lazily with the app
    store: Any  # server.jobs.store.JobStore


@pytest.fixture
def protocol_app(tmp_path: Path) -> Iterator[ProtocolApp]:
    from fastapi.testclient import TestClient

    from server.api.app import create_app
    from server.jobs.factory import MEMORY, open_job_store
    from server.settings import Settings

    store = open_job_store(MEMORY)
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0)
    with TestClient(create_app(settings, run_workers=False, store=store)) as client:
        yield ProtocolApp(client, store)


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Generation replaced by "output = the conditioning video" in the worker's runner; records every
    GenerationRequest. Imported here, not at the top: most server tests never load the worker."""
    import numpy as np

    import server.worker.runner as runner

    seen: list[Any] = []

    def fake_generate(pipe: Any, request: Any, **_: Any) -> np.ndarray:
        seen.append(request)
        return np.rint(request.video * 255).astype(np.uint8)

    monkeypatch.setattr(runner, "generate", fake_generate)
    return seen


def serve_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                   argv: list[str]) -> tuple[int, list[Any]]:
    """`vace serve ARGV` up to the point it builds the app: its exit code and the Settings it would run with
    (the flag tests read what reaches the worker through them)."""
    import server.cli as cli

    captured: list[Any] = []
    monkeypatch.setattr("server.api.app.create_app", lambda settings: captured.append(settings))
    monkeypatch.setattr("server.api.server.run_server", lambda app, **kwargs: None)
    args = cli.build_parser().parse_args(["serve", "--model", "tiny", "--data-dir", str(tmp_path), *argv])
    return cli._serve(args), captured
