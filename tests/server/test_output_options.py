"""The output options of fal's current schema, on real H.264 files (server/worker/publish.py): the video's
metadata, `video_quality` / `video_write_mode` as x264 settings (read back from the encoder's own settings
string in the file), `sync_mode` data: URIs with no file kept, and `return_frames_zip`'s PNGs."""

from __future__ import annotations

import base64
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from preprocessors.video_io import probe_video, read_video
from server.contract.inputs import WanVACEInput
from server.files.local import LocalFileStore
from server.worker.publish import QUALITY_CRF, WRITE_MODE_PRESET, publish
from server.worker.types import Generated, JobHooks, Timing

FRAMES, HEIGHT, WIDTH, FPS = 9, 48, 64, 12.0


@pytest.fixture
def generated() -> Generated:
    x = np.linspace(0, 255, WIDTH, dtype=np.float32)
    frames = np.empty((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(FRAMES):
        frames[i] = np.roll(x, 5 * i)[None, :, None].astype(np.uint8)
        frames[i, 10:20, 4 * i : 4 * i + 8] = (250, 20, 20)
    timing = Timing(fps=FPS, num_frames=FRAMES)
    return Generated(task="depth", frames=frames, timing=timing, prompt="p", seed=3)


def request(**fields: Any) -> WanVACEInput:
    return WanVACEInput.model_validate({"prompt": "p", "video_url": "https://example.com/v.mp4"} | fields)


def run(tmp_path: Path, generated: Generated, **fields: Any) -> tuple[dict[str, Any], LocalFileStore]:
    files = LocalFileStore(tmp_path / "files")
    logs: list[str] = []
    output = publish(files, "job-12345678", generated, request(**fields), tmp_path / "scratch",
                     JobHooks(logs.append, lambda: False))
    return output, files


def stored_bytes(files: LocalFileStore, record: dict[str, Any]) -> bytes:
    path = files.resolve_url_path(record["url"])
    assert path is not None
    return path.read_bytes()


def test_the_video_record_says_what_the_video_is(tmp_path: Path, generated: Generated) -> None:
    output, files = run(tmp_path, generated)
    video = output["video"]
    path = files.resolve_url_path(video["url"])
    assert path is not None
    info = probe_video(path)
    decoded, fps = read_video(path)
    assert (video["width"], video["height"]) == (info.width, info.height) == (WIDTH, HEIGHT)
    assert video["num_frames"] == len(decoded) == FRAMES and video["fps"] == fps == FPS
    assert video["duration"] == pytest.approx(FRAMES / FPS)
    assert video["content_type"] == "video/mp4" and video["file_size"] == path.stat().st_size
    assert "frames_zip" not in output


@pytest.mark.parametrize("quality", list(QUALITY_CRF))
def test_video_quality_sets_the_crf(tmp_path: Path, generated: Generated, quality: str) -> None:
    output, files = run(tmp_path, generated, video_quality=quality)
    settings = stored_bytes(files, output["video"])
    assert f"crf={QUALITY_CRF[quality]}.0".encode() in settings


def test_lower_quality_gives_a_smaller_file(tmp_path: Path, generated: Generated) -> None:
    sizes = {q: run(tmp_path / q, generated, video_quality=q)[0]["video"]["file_size"] for q in QUALITY_CRF}
    assert sizes["low"] < sizes["medium"] < sizes["high"] < sizes["maximum"]


@pytest.mark.parametrize(("mode", "subme"), [("fast", 2), ("balanced", 7), ("small", 9)])
def test_video_write_mode_sets_the_x264_preset(tmp_path: Path, generated: Generated, mode: str,
                                               subme: int) -> None:
    # subme (subpixel refinement) is what x264's presets veryfast / medium / slower set to 2 / 7 / 9.
    output, files = run(tmp_path, generated, video_write_mode=mode)
    settings = stored_bytes(files, output["video"])
    assert re.search(rb"subme=(\d+)", settings).group(1) == str(subme).encode()  # type: ignore[union-attr]
    assert WRITE_MODE_PRESET[mode] in ("veryfast", "medium", "slower")


def _data(uri: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert uri.startswith(prefix)
    return base64.b64decode(uri[len(prefix):])


def test_sync_mode_returns_data_uris_and_keeps_no_file(tmp_path: Path, generated: Generated) -> None:
    output, files = run(tmp_path, generated, sync_mode=True, return_frames_zip=True)
    video = _data(output["video"]["url"], "video/mp4")
    assert len(video) == output["video"]["file_size"] and output["video"]["num_frames"] == FRAMES
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(video)
    assert len(read_video(clip)[0]) == FRAMES
    with zipfile.ZipFile(io.BytesIO(_data(output["frames_zip"]["url"], "application/zip"))) as archive:
        assert len(archive.namelist()) == FRAMES
    # Nothing stored: no file in the store, nothing left in the scratch folder.
    store_dir = tmp_path / "files"
    stored = [p for p in store_dir.rglob("*") if p.is_file()] if store_dir.exists() else []
    assert stored == [] and list((tmp_path / "scratch").iterdir()) == []


def test_frames_zip_holds_every_frame_as_a_lossless_png(tmp_path: Path, generated: Generated) -> None:
    output, files = run(tmp_path, generated, return_frames_zip=True)
    record = output["frames_zip"]
    assert record["content_type"] == "application/zip" and record["file_name"].endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(stored_bytes(files, record))) as archive:
        names = archive.namelist()
        assert names == [f"frame_{i:05d}.png" for i in range(FRAMES)]
        for index, name in enumerate(names):
            png = np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"))
            np.testing.assert_array_equal(png, generated.frames[index])
