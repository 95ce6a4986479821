"""What the fields of fal's current schema do in the worker (Executor), at tiny sizes.

Most tests replace the pipeline call by `echo` (output = the conditioning video, tests/server/
test_execute_annotators.py) to see what would be generated from; the first/last frame test runs the real
tiny pipeline (the kept pixels must survive generation); reference-to-video runs the whole job through
`Executor.run` (conditioning, encoding, sync_mode, frames_zip) with the echo. Sizes come from a rule that
makes the preset visible (`SIZES`: each preset a different tiny size), so `resolution: "auto"` shows.
"""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.generate import GenerationRequest
from pipelines.loader import load_pipeline
from preprocessors.annotators.registry import AnnotatorConfig, Annotators
from preprocessors.conditioning import GRAY
from preprocessors.video_io import read_video, write_mp4
from server.contract.endpoints import APP_ID
from server.contract.errors import InputError
from server.files.local import LocalFileStore
from server.worker.fetch import Fetcher
from server.worker.runner import Executor, JobHooks
from tests.server.test_execute_equivalence import job, png, uri

SRC_W, SRC_H = 192, 96
# 16:9 tiny size per preset, so the chosen preset shows in the output size (9:16 and 1:1 follow).
SIZES = {"240p": (64, 32), "360p": (96, 48), "480p": (128, 64), "580p": (160, 80), "720p": (192, 96)}


class Sizes:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, resolution: str, aspect_ratio: str, width: int, height: int) -> tuple[int, int]:
        self.calls.append((resolution, aspect_ratio))
        w, h = SIZES[resolution]
        if aspect_ratio == "auto":
            aspect_ratio = "16:9" if width >= height else "9:16"
        return {"16:9": (w, h), "9:16": (h, w), "1:1": (h, h)}[aspect_ratio]


def clip(folder: Path, frames: int, fps: float, bars: int = 0) -> tuple[str, np.ndarray]:
    """A 192x96 clip (data URI) with `bars` black rows top and bottom, and its decoded frames."""
    rng = np.random.default_rng(5)
    video = np.repeat(np.repeat(rng.integers(30, 230, (frames, SRC_H // 8, SRC_W // 8, 3), dtype=np.uint8),
                                8, axis=1), 8, axis=2)
    if bars:
        video[:, :bars] = 0
        video[:, -bars:] = 0
    path = folder / f"clip-{frames}-{fps}-{bars}.mp4"
    write_mp4(video, fps, path)
    return uri(path.read_bytes(), "video/mp4"), read_video(path)[0]


@pytest.fixture(scope="module")
def annotators(tmp_path_factory: pytest.TempPathFactory) -> Annotators:
    return Annotators(AnnotatorConfig(root=tmp_path_factory.mktemp("annotators"), device="cpu", tiny=True))


def executor(tmp_path: Path, annotators: Annotators, sizes: Sizes, pipe: Any = None) -> Executor:
    files = LocalFileStore(tmp_path / "files")
    fetcher = Fetcher(files, tmp_path / "work", max_bytes=50 << 20, timeout_s=10.0)
    return Executor(pipe, fetcher, files, tmp_path / "work", sizes=sizes, annotators=annotators)


def frames_of(ex: Executor, endpoint: str, payload: dict[str, Any]) -> tuple[Any, list[str]]:
    logs: list[str] = []
    out = ex.generate_frames(job(endpoint, payload), JobHooks(logs.append, lambda: False))
    return out, logs


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    return clip(tmp_path_factory.mktemp("fields-media"), 7, 16.0)


def base(video: str, **fields: Any) -> dict[str, Any]:
    return {"prompt": "p", "video_url": video, "num_inference_steps": 2, "guidance_scale": 1.0, **fields}


# --- resolution auto ---------------------------------------------------------------------------------------


def test_resolution_auto_follows_the_inputs_short_side(tmp_path: Path, annotators: Annotators,
                                                       source: tuple[str, np.ndarray],
                                                       echo: list[GenerationRequest]) -> None:
    sizes = Sizes()
    ex = executor(tmp_path, annotators, sizes)
    out, _ = frames_of(ex, f"{APP_ID}/depth", base(source[0], match_input_num_frames=True))
    # 96 px short side: below 352, so 240p, decided once from the probe (decode size, references, cover).
    assert set(sizes.calls) == {("240p", "auto")}
    assert out.frames.shape[1:3] == (32, 64)
    frames_of(ex, f"{APP_ID}/depth", base(source[0], resolution="480p", num_frames=17))
    assert sizes.calls[-1] == ("480p", "auto")
    assert (echo[-1].width, echo[-1].height) == (128, 64)


# --- the timeline on every task ----------------------------------------------------------------------------


def test_num_interpolated_frames_on_depth(tmp_path: Path, annotators: Annotators,
                                          source: tuple[str, np.ndarray],
                                          echo: list[GenerationRequest]) -> None:
    out, logs = frames_of(executor(tmp_path, annotators, Sizes()), f"{APP_ID}/depth",
                          base(source[0], match_input_num_frames=True, match_input_frames_per_second=True,
                               num_interpolated_frames=2))
    assert len(echo[0].video) == 9  # 7 generated, padded to 4k+1
    assert out.timing.fps == 48.0 and len(out.frames) == out.timing.num_frames == 19  # (7-1)*3+1
    assert any("film adds 2 between each pair" in line for line in logs)  # fal's default interpolator


def test_auto_downsample_then_interpolates_back(tmp_path: Path, annotators: Annotators,
                                                source: tuple[str, np.ndarray],
                                                echo: list[GenerationRequest]) -> None:
    # 30 fps output, minimum 15: every 2nd frame generated (9 of 17), then interpolated back to 17 at 30 fps.
    out, _ = frames_of(executor(tmp_path, annotators, Sizes()), f"{APP_ID}/pose",
                       base(source[0], num_frames=17, frames_per_second=30, enable_auto_downsample=True,
                            interpolator_model="rife"))
    assert len(echo[0].video) == 9
    assert (out.timing.fps, len(out.frames)) == (30.0, 17)


def test_frames_per_second_null_follows_the_input(tmp_path: Path, annotators: Annotators,
                                                  echo: list[GenerationRequest]) -> None:
    video, _ = clip(tmp_path, 9, 8.0)
    out, _ = frames_of(executor(tmp_path, annotators, Sizes()), f"{APP_ID}/depth",
                       base(video, num_frames=17, frames_per_second=None))
    assert out.timing.fps == 8.0 and len(out.frames) == 17


# --- trim_borders ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trim", [True, False])
def test_trim_borders_drops_letterbox_bars_before_reframing(tmp_path: Path, annotators: Annotators,
                                                            echo: list[GenerationRequest],
                                                            trim: bool) -> None:
    video, _ = clip(tmp_path, 5, 16.0, bars=16)  # a 192x64 (3:1) picture in a 192x96 letterbox
    request = {"video_url": video, "aspect_ratio": "16:9", "resolution": "360p", "num_inference_steps": 2,
               "trim_borders": trim}
    if not trim:
        # The 2:1 letterboxed frame fills the 2:1 output: nothing to generate, so a 422 (not a 14B run).
        with pytest.raises(InputError) as refused:
            frames_of(executor(tmp_path, annotators, Sizes()), f"{APP_ID}/reframe", request)
        assert refused.value.field == "aspect_ratio" and not echo
        return
    frames_of(executor(tmp_path, annotators, Sizes()), f"{APP_ID}/reframe", request)
    mask = echo[0].mask[0]  # 96x48: the 3:1 picture is 96x32 at rows 8..40 once the bars are gone
    assert (mask[:8] == 1).all() and (mask[40:] == 1).all() and (mask[8:40] == 0).all()


# --- first / last frame (real tiny pipeline) and reference-to-video ---------------------------------------


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> Any:
    return load_pipeline(tiny_model_dir, device="cpu")


def test_first_and_last_frame_images_are_the_outputs_first_and_last_frames(
        tmp_path: Path, annotators: Annotators, source: tuple[str, np.ndarray], pipe: Any) -> None:
    first = np.zeros((32, 64, 4), np.uint8)
    first[..., :3] = (220, 40, 40)
    first[..., 3] = 255
    first[:, :32, 3] = 0  # left half transparent: content_aware generates it
    last = np.full((32, 64, 3), (30, 200, 90), np.uint8)
    payload = base(source[0], match_input_num_frames=True, match_input_frames_per_second=True,
                   first_frame_url=uri(png(first), "image/png"), last_frame_url=uri(png(last), "image/png"))
    out, logs = frames_of(executor(tmp_path, annotators, Sizes(), pipe), f"{APP_ID}/depth", payload)
    assert out.frames.shape == (7, 32, 64, 3)
    assert (out.frames[0, :, 32:] == (220, 40, 40)).all()  # the opaque half is kept exactly
    assert not (out.frames[0, :, :32] == (220, 40, 40)).all()  # the transparent half was generated
    assert (out.frames[-1] == (30, 200, 90)).all()
    assert not (out.frames[3] == (30, 200, 90)).all()
    assert any(line.startswith("Kept frame(s) 0, 6") for line in logs)


def test_root_without_video_is_reference_to_video(tmp_path: Path, annotators: Annotators,
                                                  echo: list[GenerationRequest]) -> None:
    ref = uri(png(np.full((40, 30, 3), (200, 30, 30), np.uint8)), "image/png")
    payload = {"prompt": "a red square", "ref_image_urls": [ref], "num_frames": 17, "frames_per_second": 8,
               "num_inference_steps": 2, "sync_mode": True, "return_frames_zip": True}
    ex = executor(tmp_path, annotators, Sizes())
    output = ex.run(job(APP_ID, payload), JobHooks(lambda _: None, lambda: False))
    (request,) = echo
    assert np.allclose(request.video, GRAY) and (request.mask == 1).all()  # nothing kept: all generated
    assert len(request.reference_images) == 1 and (request.width, request.height) == (128, 64)  # auto: 480p
    video = output["video"]
    assert video["url"].startswith("data:video/mp4;base64,")
    assert (video["width"], video["height"], video["num_frames"], video["fps"]) == (128, 64, 17, 8.0)
    raw = base64.b64decode(output["frames_zip"]["url"].split(",", 1)[1])
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert len(archive.namelist()) == 17
        assert Image.open(io.BytesIO(archive.read("frame_00000.png"))).size == (128, 64)
    files = tmp_path / "files"
    assert not files.exists() or not [p for p in files.rglob("*") if p.is_file()]  # sync_mode keeps none


# --- acceleration reaches the pipeline from every endpoint -----------------------------------------------


@pytest.mark.parametrize(("endpoint", "extra"), [
    ("depth", {}), ("pose", {}), ("inpainting", {"mask_image_url": "MASK"}),
    ("outpainting", {"expand_left": True}), ("reframe", {"aspect_ratio": "9:16"}), ("", {"task": "depth"}),
])
def test_acceleration_is_honoured_on_every_endpoint(tmp_path: Path, annotators: Annotators,
                                                    source: tuple[str, np.ndarray],
                                                    echo: list[GenerationRequest], endpoint: str,
                                                    extra: dict[str, Any]) -> None:
    mask = uri(png(np.full((8, 8, 3), 255, np.uint8)), "image/png")
    extra = {k: (mask if v == "MASK" else v) for k, v in extra.items()}
    endpoint_id = f"{APP_ID}/{endpoint}" if endpoint else APP_ID
    ex = executor(tmp_path, annotators, Sizes())
    for value in ("none", "low"):
        frames_of(ex, endpoint_id, base(source[0], num_frames=17, acceleration=value, **extra))
    frames_of(ex, endpoint_id, base(source[0], num_frames=17, **extra))
    assert [r.acceleration for r in echo] == ["none", "low", "regular"]  # fal's default: regular
