"""Bounded decoding: preprocessors/video_io.py's read_frames, probe_video's size check, read_image's max_side.

read_frames must give exactly what decoding everything, resampling, fitting the length and resizing gives,
while holding only the frames it returns; size checks must run on the header before the first frame is decoded
and on every decoded frame.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from preprocessors.spatial import resize_cover, shrink_to_cover
from preprocessors.temporal import fit_length, fitted_indices, resample_fps
from preprocessors.video_io import probe_video, read_frames, read_image, read_video, write_mp4

REPO = Path(__file__).resolve().parents[2]


class TooBig(Exception):
    pass


def refuse_over(max_pixels: int, seen: list[tuple[int, int]] | None = None) -> Callable[[int, int], None]:
    def check(width: int, height: int) -> None:
        if seen is not None:
            seen.append((width, height))
        if width * height > max_pixels:
            raise TooBig(f"{width}x{height}")
    return check


def distinct_frames(count: int, width: int, height: int) -> np.ndarray:
    """Every frame different (a bar moving over a gradient), so a wrong index shows."""
    x = np.linspace(0, 200, width, dtype=np.float32)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        frame = np.broadcast_to(x[None, :, None], (height, width, 3)).astype(np.uint8)
        frames[i] = frame
        left = (i * 5) % (width - 8)
        frames[i, :, left:left + 8] = 255
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bounded") / "clip.mp4"
    write_mp4(distinct_frames(30, 96, 64), 24, path)
    return path


@pytest.mark.parametrize(("dst_fps", "count", "keep"), [
    (24.0, 30, None),  # same rate, same length
    (24.0, 41, None),  # longer than the clip: the last frame is held
    (10.0, 9, None),  # slower
    (30.0, 45, None),  # faster (frames repeat) and past the end
    (16.0, 33, [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 32, 32]),  # keyframes, the last one held past the end
    (7.0, 17, [0, 2, 4, 6, 8, 10, 12, 14, 16]),  # keyframes beyond the end hold what the full timeline holds
])
def test_read_frames_is_resample_fit_and_cover_of_the_full_decode(clip: Path, dst_fps: float, count: int,
                                                                  keep: list[int] | None) -> None:
    full, fps = read_video(clip)
    expected = fit_length(resample_fps(full, fps, dst_fps), count)
    if keep is not None:
        expected = expected[keep]
    expected = resize_cover(expected, 48, 24)
    size = shrink_to_cover(96, 64, 48, 24)
    got = read_frames(clip, fitted_indices(fps, dst_fps, count), keep=keep, size=size)
    assert got.shape == (len(expected), *size[::-1], 3)
    np.testing.assert_array_equal(resize_cover(got, 48, 24), expected)  # only a crop is left to do


def test_read_frames_converts_only_what_it_keeps(clip: Path) -> None:
    """Frames between the kept ones are decoded but never converted to RGB (where the memory would go)."""
    seen: list[tuple[int, int]] = []
    got = read_frames(clip, [0, 29], check_size=refuse_over(10**6, seen))
    assert len(got) == 2 and len(seen) == 1 + 30  # the header, then every decoded frame
    full, _ = read_video(clip)
    np.testing.assert_array_equal(got, full[[0, 29]])


def _bomb_gif(width: int, height: int) -> bytes:
    """A 35-byte GIF: a width x height logical screen holding one 1x1 image."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00\x3b")


def test_a_huge_gif_screen_is_refused_from_its_header_before_any_frame_is_decoded(tmp_path: Path) -> None:
    """FFmpeg's GIF decoder allocates the whole logical screen (16000x16000 BGRA = 1 GB) for the first frame:
    the check must run on the header. Measured in a fresh process, whose peak memory this test reads."""
    gif = tmp_path / "bomb.gif"
    gif.write_bytes(_bomb_gif(16000, 16000))
    assert len(gif.read_bytes()) == 35
    script = f"""
import resource
from preprocessors.video_io import probe_video, read_frames
class TooBig(Exception): pass
def check(w, h):
    if w * h > 4096 * 4096: raise TooBig(f"{{w}}x{{h}}")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for call in (lambda: probe_video({str(gif)!r}, check_size=check),
             lambda: read_frames({str(gif)!r}, [0], check_size=check)):
    try:
        call()
        print("accepted")
    except TooBig as exc:
        print("refused", exc)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                         timeout=120).stdout.split("\n")
    assert out[:2] == ["refused 16000x16000", "refused 16000x16000"], out
    assert int(out[2]) < 100, f"peak memory grew by {out[2]} MiB"


def _ts_segment(size: int, count: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), i % 250, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def test_a_stream_that_grows_mid_way_is_refused_at_the_first_large_frame(tmp_path: Path) -> None:
    """MPEG-TS segments concatenate: 8 s of 64x64 (past FFmpeg's probe window, so the header says 64x64), then
    256x256 frames. The probe passes; decoding stops at the first frame over the cap."""
    path = tmp_path / "switch.ts"
    path.write_bytes(_ts_segment(64, 200) + _ts_segment(256, 3))
    limit = refuse_over(128 * 128)
    info = probe_video(path, check_size=limit)
    assert (info.width, info.height) == (64, 64)
    seen: list[tuple[int, int]] = []
    with pytest.raises(TooBig, match="256x256"):
        read_frames(path, list(range(210)), check_size=refuse_over(128 * 128, seen))
    assert seen[-1] == (256, 256) and seen.count((64, 64)) == 201  # header + 200 frames


@pytest.mark.parametrize(("fmt", "size"), [("PNG", (1200, 800)), ("JPEG", (1200, 800)), ("PNG", (300, 900))])
def test_read_image_shrinks_to_max_side_keeping_aspect(tmp_path: Path, fmt: str,
                                                       size: tuple[int, int]) -> None:
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (250, 20, 20)  # left half red, right half blue
    image[:, width // 2:] = (20, 20, 250)
    path = tmp_path / f"ref.{fmt.lower()}"
    Image.fromarray(image).save(path, format=fmt)
    got = read_image(path, max_side=150)
    assert max(got.shape[:2]) == 150
    assert abs(got.shape[1] / got.shape[0] - width / height) < 0.02
    middle = got.shape[1] // 2
    assert got[:, : middle - 2, 0].min() > 200 and got[:, middle + 2:, 2].min() > 200
    np.testing.assert_array_equal(read_image(path, max_side=5000), read_image(path))  # smaller: untouched


def test_fitted_indices_agree_with_resample_then_fit() -> None:
    source = np.arange(50)
    for src, dst in ((24, 16), (30, 5), (16, 24), (25, 25), (29.97, 16), (240, 5)):
        for count in (1, 9, 50, 81):
            indices = fitted_indices(src, dst, count)
            expected = fit_length(resample_fps(source, src, dst), count)
            # An index past the end holds what the last in-range index shows.
            in_range = indices[indices < len(source)]
            held = np.concatenate([in_range, np.full(count - len(in_range), in_range[-1])])
            np.testing.assert_array_equal(held, expected, err_msg=f"{src}->{dst} x{count}")


def test_rates_are_exact(tmp_path: Path) -> None:
    """The probe reports the container's own rate, which the worker range-checks (600 fps is not rounded)."""
    path = tmp_path / "fast.mp4"
    write_mp4(np.zeros((10, 16, 16, 3), np.uint8), Fraction(600), path)
    assert probe_video(path).fps == 600.0
