"""The real fal clients against a live server: shared server, media, webhook receiver and helpers.

Real generations cost ~30 s each on CPU, so the suite runs only three at fal's default length (Python
subscribe, JS subscribe, the webhook OK payload) and two of 17 frames (fal's current full example through
each client); every other call uses requests that fail fast in the worker or are cancelled
while queued behind one of those three.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from preprocessors.video_io import probe_video, read_video
from tests.server.conftest import LiveServer, Media, data_uri, media, start_server  # noqa: F401 - fixture

APP = "fal-ai/wan-vace-14b"
GENERATION_FRAMES = 81  # 240p depth from a 48-frame control video: fal's default num_frames
CURRENT_EXAMPLE_FRAMES = 17  # fal's smallest num_frames: the full-example jobs stay cheap


@pytest.fixture(scope="session")
def client_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Its own server (and data dir), with webhook retries shortened to half a second."""
    previous = os.environ.get("VACE_WEBHOOK_RETRY_BASE_S")
    os.environ["VACE_WEBHOOK_RETRY_BASE_S"] = "0.5"
    try:
        server = start_server(tmp_path_factory.mktemp("clients") / "data")
    finally:
        if previous is None:
            os.environ.pop("VACE_WEBHOOK_RETRY_BASE_S", None)
        else:
            os.environ["VACE_WEBHOOK_RETRY_BASE_S"] = previous
    yield server
    server.stop()


def failing_input(files: Media) -> dict[str, Any]:
    """Valid for the schema, rejected by the worker within a second: COMPLETED with a 422 result."""
    return {"prompt": "a test", "video_url": data_uri(files.not_a_video), "resolution": "240p",
            "num_inference_steps": 2}


def real_input(video_url: str) -> dict[str, Any]:
    return {"prompt": "a bar moving over a gradient", "video_url": video_url, "resolution": "240p",
            "num_inference_steps": 2}


def current_full_example(video_url: str) -> dict[str, Any]:
    """fal's current full example (docs: fal-current-schema.md), every field as published, made tiny where
    it costs time (17 frames, 2 steps) and asking for the frames ZIP; video_url is a real small video."""
    return {
        "prompt": "a bar moving over a gradient",
        "negative_prompt": "letterboxing, borders, black bars, bright colors, overexposed, static",
        "match_input_num_frames": False, "num_frames": CURRENT_EXAMPLE_FRAMES,
        "match_input_frames_per_second": False, "frames_per_second": 16, "resolution": "auto",
        "aspect_ratio": "auto", "num_inference_steps": 2, "guidance_scale": 5, "video_url": video_url,
        "enable_safety_checker": True, "enable_prompt_expansion": False, "preprocess": False,
        "sampler": "unipc", "shift": 5, "ref_image_urls": [], "acceleration": "regular",
        "video_quality": "high", "video_write_mode": "balanced", "num_interpolated_frames": 0,
        "temporal_downsample_factor": 0, "enable_auto_downsample": False, "auto_downsample_min_fps": 15,
        "interpolator_model": "film", "sync_mode": False, "transparency_mode": "content_aware",
        "return_frames_zip": True, "task": "depth",
    }


# The frame each sub-path makes of the 320x240 example input at resolution and aspect_ratio auto: the input's
# own 4:3 at 240p; outpainting's canvas grown by a quarter on the left (5:3 at 240p's area); reframe's auto,
# the 16:9 preset of a landscape input.
SUB_PATH_SIZES = {"depth": (352, 272), "pose": (352, 272), "inpainting": (352, 272),
                  "outpainting": (400, 240), "reframe": (416, 240)}


def sub_path_example(task: str, video_url: str, files: Media) -> dict[str, Any]:
    """fal's current full example with the fields `task`'s sub-path has (plus what it needs: a mask, a
    side to expand)."""
    example = current_full_example(video_url)
    del example["task"]  # root only
    if task in ("depth", "pose", "inpainting"):
        example["preprocess"] = False
    else:
        del example["preprocess"]
    if task == "reframe":
        del example["ref_image_urls"]
    extra = {"inpainting": {"mask_video_url": data_uri(files.mask)}, "outpainting": {"expand_left": True}}
    return example | extra.get(task, {})


def assert_current_example_output(data: dict[str, Any], dest: Path,
                                  size: tuple[int, int] = (352, 272)) -> None:
    """The full example's answer: a video with its metadata, and a ZIP of its frames as PNG, both
    downloadable. By default 240p as depth makes it (auto from the 320x240 input, kept at its 4:3: 352x272);
    outpainting and reframe decide their own frame."""
    video = data["video"]
    assert (video["width"], video["height"], video["num_frames"], video["fps"]) == (
        *size, CURRENT_EXAMPLE_FRAMES, 16)
    assert video["duration"] == pytest.approx(CURRENT_EXAMPLE_FRAMES / 16)
    assert_video(video["url"], dest, frames=CURRENT_EXAMPLE_FRAMES, size=size)
    archive = httpx.get(data["frames_zip"]["url"], timeout=60.0)
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as frames:
        assert len([n for n in frames.namelist() if n.endswith(".png")]) == CURRENT_EXAMPLE_FRAMES


def assert_video(url: str, dest: Path, frames: int = GENERATION_FRAMES,
                 size: tuple[int, int] = (352, 272)) -> None:
    """The returned URL downloads and decodes with the expected number of frames, by default at 240p at the
    input's 4:3."""
    response = httpx.get(url, timeout=60.0)
    assert response.status_code == 200, url
    dest.write_bytes(response.content)
    info = probe_video(dest)
    assert (info.width, info.height, info.num_frames) == (*size, frames)
    decoded, _ = read_video(dest)  # probe_video may estimate the count; decoding is authoritative
    assert decoded.shape[0] == frames


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    answered: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A loopback HTTP endpoint that records every POST; `fail_first[path]` answers 500 that many times."""

    url: str
    deliveries: dict[str, list[Delivery]] = field(default_factory=dict)
    fail_first: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, path: str, count: int = 1, timeout: float = 480.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = list(self.deliveries.get(path, []))
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{count} webhook deliveries to {path} did not arrive in {timeout}s")


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with receiver.lock:
                failures_left = receiver.fail_first.get(self.path, 0)
                code = 500 if failures_left else 200
                receiver.fail_first[self.path] = max(failures_left - 1, 0)
                receiver.deliveries.setdefault(self.path, []).append(
                    Delivery({k.lower(): v for k, v in self.headers.items()}, body, code))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield receiver
    httpd.shutdown()
