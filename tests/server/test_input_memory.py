"""Per-job memory bounds in the worker's input handling (issue 11 item 1): server/worker/inputs.py and
server/contract/limits.py, on real media made here with PyAV and Pillow.

A clip is decoded only where the output needs it, each kept frame shrunk to the working size as it is decoded;
implausible frame rates, too many reference images and a job whose decoded inputs would pass the budget are
422s naming the field; frame sizes are checked on the header and on every decoded frame.
"""

from __future__ import annotations

import base64
import io
import struct
import tracemalloc
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from benchmarks.input_memory import encode_moving_bar
from preprocessors.spatial import resize_cover
from preprocessors.temporal import fit_length, resample_fps
from preprocessors.video_io import read_video
from server.contract.errors import InputError
from server.contract.inputs import WanVACEInput
from server.contract.limits import InputLimits
from server.files.local import LocalFileStore
from server.worker.fetch import Fetcher
from server.worker.inputs import InputReader, fit_input
from server.worker.tasks import plan_for
from server.worker.types import Timing
from tests.server.conftest import ProtocolApp

APP = "fal-ai/wan-vace-14b"
WORK_W, WORK_H = 64, 36  # the output size of every request here (a tiny stand-in for fal's presets)
OUTPUT_BYTES = 81 * WORK_W * WORK_H * 3  # 81 frames (the schema's least num_frames) at that size


def tiny_sizes(resolution: str, aspect_ratio: str, width: int, height: int) -> tuple[int, int]:
    return (WORK_W, WORK_H) if width >= height else (WORK_H, WORK_W)


def uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fast_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 fps (the most accepted), 1200 frames of 160x90: 52 MB as RGB, 0.6 MB needed at 5 fps and 64x36."""
    path = tmp_path_factory.mktemp("memory") / "fast.mp4"
    encode_moving_bar(path, Fraction(240), 1200, 160, 90)
    return path


def make_reader(tmp_path: Path, limits: InputLimits | None = None) -> InputReader:
    fetcher = Fetcher(LocalFileStore(tmp_path / "files"), tmp_path / "work", 50 << 20, 5.0)
    return InputReader(fetcher, limits or InputLimits(), tmp_path / "work" / "job")


def request(video_url: str, **extra: Any) -> WanVACEInput:
    return WanVACEInput.model_validate({"prompt": "x", "video_url": video_url, "resolution": "240p",
                                        "frames_per_second": 5, "num_frames": 81, **extra})


def refused(call: Any) -> InputError:
    with pytest.raises(InputError) as caught:
        call()
    return caught.value


def test_a_high_rate_clip_holds_only_the_output_frames_at_the_working_size(tmp_path: Path,
                                                                           fast_clip: Path) -> None:
    """The issue's case scaled down: 240 fps to 5 fps keeps 1 frame in 48, shrunk to 64x36 as decoded. Before,
    all 1200 frames were decoded at full size and stacked (2 x 52 MB) and only then dropped."""
    reader = make_reader(tmp_path)
    video = uri(fast_clip.read_bytes(), "video/mp4")
    tracemalloc.start()
    try:
        fitted = fit_input(reader, request(video), plan_for("depth"), tiny_sizes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fitted.frames.shape == (81, WORK_H, WORK_W, 3)
    assert reader.decoded_bytes == OUTPUT_BYTES
    assert peak < 4 * 2**20 + len(fast_clip.read_bytes()), f"peak {peak / 2**20:.1f} MiB"
    # The same pixels as decoding everything, resampling, fitting and cover-resizing once.
    full, fps = read_video(fast_clip)
    expected = resize_cover(fit_length(resample_fps(full, fps, 5.0), 81), WORK_W, WORK_H)
    np.testing.assert_array_equal(fitted.frames, expected)


@pytest.mark.parametrize("rate", [Fraction(600), Fraction(241), Fraction(1, 2), Fraction(1, 1024)])
def test_implausible_frame_rates_are_a_422_naming_the_field(tmp_path: Path, rate: Fraction) -> None:
    path = tmp_path / "clip.mp4"
    encode_moving_bar(path, rate, 12, 16, 16)
    reader = make_reader(tmp_path)
    error = refused(lambda: reader.video(uri(path.read_bytes(), "video/mp4"), "mask_video_url"))
    assert (error.field, error.error_type) == ("mask_video_url", "unsupported_video_format")
    assert error.ctx == {"min_fps": 1.0, "max_fps": 240.0, "fps": round(float(rate), 3)}
    assert "fps" in error.message


@pytest.mark.parametrize("rate", [Fraction(240), Fraction(1), Fraction(30000, 1001)])
def test_plausible_frame_rates_pass(tmp_path: Path, rate: Fraction) -> None:
    path = tmp_path / "clip.mp4"
    encode_moving_bar(path, rate, 12, 16, 16)
    _, info = make_reader(tmp_path).video(uri(path.read_bytes(), "video/mp4"), "video_url")
    assert info.fps == pytest.approx(float(rate))


def test_the_decoded_bytes_budget_is_checked_before_each_input_is_decoded(tmp_path: Path,
                                                                          fast_clip: Path) -> None:
    video = uri(fast_clip.read_bytes(), "video/mp4")
    error = refused(lambda: fit_input(make_reader(tmp_path, InputLimits(max_decoded_bytes=OUTPUT_BYTES - 1)),
                                      request(video), plan_for("depth"), tiny_sizes))
    assert (error.field, error.error_type) == ("video_url", "video_too_large")
    assert error.ctx == {"max_decoded_bytes": OUTPUT_BYTES - 1, "decoded_bytes": OUTPUT_BYTES}
    # Exactly the budget passes; the images count too, each at the size it is shrunk to (64 here).
    reference = uri(png(640, 320), "image/png")
    one_ref = 64 * 32 * 3
    limits = InputLimits(max_decoded_bytes=OUTPUT_BYTES + one_ref)
    fitted = fit_input(make_reader(tmp_path, limits), request(video, ref_image_urls=[reference]),
                       plan_for("depth"), tiny_sizes)
    assert [r.shape for r in fitted.references] == [(32, 64, 3)]
    two_refs = request(video, ref_image_urls=[reference] * 2)
    error = refused(lambda: fit_input(make_reader(tmp_path, limits), two_refs, plan_for("depth"), tiny_sizes))
    assert (error.field, error.error_type) == ("ref_image_urls", "image_too_large")
    assert error.ctx == {"max_decoded_bytes": OUTPUT_BYTES + one_ref,
                         "decoded_bytes": OUTPUT_BYTES + 2 * one_ref}


def test_reference_images_are_shrunk_to_the_output_size_as_decoded(tmp_path: Path, fast_clip: Path) -> None:
    """40 references to one 4096x4096 PNG held 2 GB before; each is now at most the output's longer side."""
    refs = [uri(png(2048, 1024), "image/png"), uri(png(30, 20), "image/png")]
    video = uri(fast_clip.read_bytes(), "video/mp4")
    fitted = fit_input(make_reader(tmp_path), request(video, ref_image_urls=refs), plan_for("depth"),
                       tiny_sizes)
    assert [r.shape for r in fitted.references] == [(32, 64, 3), (20, 30, 3)]  # a small one is untouched
    assert (fitted.references[0] == (200, 40, 40)).all()


def test_too_many_reference_images_are_refused_before_anything_is_fetched(tmp_path: Path) -> None:
    # The video URL cannot be fetched: reaching it would be a download error, not the count.
    refs = [uri(png(8, 8), "image/png")] * 9
    error = refused(lambda: fit_input(make_reader(tmp_path), request("http://127.0.0.1:9/never.mp4",
                                                                     ref_image_urls=refs),
                                      plan_for("depth"), tiny_sizes))
    assert (error.field, error.error_type) == ("ref_image_urls", "sequence_too_long")
    assert error.ctx == {"max_length": 8, "length": 9}


def test_too_many_reference_images_are_a_422_at_submit(protocol_app: ProtocolApp) -> None:
    body = {"prompt": "x", "video_url": "https://example.com/v.mp4"}
    refs = [f"https://example.com/{i}.png" for i in range(9)]
    response = protocol_app.client.post(f"/queue/{APP}", json=body | {"ref_image_urls": refs})
    assert response.status_code == 422, response.text
    [item] = response.json()["detail"]
    assert item["loc"] == ["body", "ref_image_urls"] and item["type"] == "sequence_too_long"
    assert protocol_app.store.count_queued() == 0
    response = protocol_app.client.post(f"/queue/{APP}", json=body | {"ref_image_urls": refs[:8]})
    assert response.status_code == 200, response.text


def test_a_huge_gif_screen_is_a_422_from_the_header(tmp_path: Path) -> None:
    gif = (b"GIF89a" + struct.pack("<HHBBB", 16000, 16000, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
           + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00\x3b")
    error = refused(lambda: make_reader(tmp_path).video(uri(gif, "image/gif"), "video_url"))
    assert (error.field, error.error_type) == ("video_url", "video_too_large")
    assert error.ctx == {"max_pixels": 4096 * 4096, "width": 16000, "height": 16000}


def test_a_stream_that_grows_past_the_cap_mid_way_is_a_422(tmp_path: Path) -> None:
    """8 s of 64x64 MPEG-TS (the probe and header see only that), then 256x256 frames (over a 128x128 cap)."""
    segments = []
    for size, count in ((64, 200), (256, 3)):
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=24)
            stream.width = stream.height = size
            stream.pix_fmt, stream.options = "yuv420p", {"preset": "ultrafast"}
            for i in range(count):
                frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 90, np.uint8), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        segments.append(buffer.getvalue())
    reader = make_reader(tmp_path, InputLimits(max_pixels=128 * 128))
    path, info = reader.video(uri(b"".join(segments), "video/mp2t"), "mask_video_url")
    assert (info.width, info.height) == (64, 64)
    error = refused(lambda: reader.frames(path, "mask_video_url", info, Timing(fps=24.0, num_frames=210)))
    assert (error.field, error.error_type) == ("mask_video_url", "video_too_large")
    assert error.ctx == {"max_pixels": 128 * 128, "width": 256, "height": 256}


@pytest.mark.parametrize(("task", "extra", "source", "expected"), [
    ("depth", {}, (3840, 2160), (1280, 720)),  # covered to the output size exactly: resize_cover only crops
    ("inpainting", {}, (2160, 3840), (1280, 2276)),  # fixed 16:9 from portrait: covers 1280 wide
    ("pose", {"preprocess": True}, (3840, 2160), (1820, 1024)),  # the annotator keeps a 1024 short side
    ("pose", {"preprocess": True}, (1280, 720), (1280, 720)),  # never enlarged
    ("reframe", {"zoom_factor": 0.5}, (3840, 2160), (3840, 2160)),  # 2 x 1.5 x the cover scale > 1
    ("outpainting", {}, (7680, 4320), (2560, 1440)),  # twice the cover scale: a clean second resize
])
def test_frames_are_decoded_at_the_size_each_task_needs(task: str, extra: dict[str, Any],
                                                         source: tuple[int, int],
                                                         expected: tuple[int, int]) -> None:
    from preprocessors.sizing import target_size

    aspect = {"inpainting": "16:9"}.get(task, "auto")
    req = WanVACEInput.model_validate({"prompt": "x", "video_url": "https://example.com/v.mp4", "task": task,
                                       "resolution": "720p", "aspect_ratio": aspect, **extra})
    assert plan_for(task).decode_size(req, *source, target_size) == expected
