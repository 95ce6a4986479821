"""The worker's code path (Executor) gives exactly what a direct WanVACEPipeline call gives, per task.

For each task the test builds the pipeline's video, mask and reference images itself, from the documented
conventions (README "What a request means": gray 0.5 = unknown, mask 1 = generate, 0 =
keep; outpainting/reframe geometry from preprocessors/canvas.py's docstring), computing the placements by
hand rather than calling the server's helpers. Then it compares the Executor's frames (before H.264) with the
direct call's, bit for bit.

Sizes are tiny through the Executor's `sizes` rule (16:9 -> 96x48, 9:16 -> 48x96), which leaves the resolution
name untouched. The input has 7 frames and the requests match the input's
length, so every run also exercises the 4k+1 padding (9 frames) and the trim back to 7.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanVACEPipeline,
)
from PIL import Image

from pipelines.loader import load_pipeline
from preprocessors.annotators.registry import AnnotatorConfig, Annotators
from preprocessors.video_io import probe_video, read_video, write_mp4
from server.contract.endpoints import APP_ID, ENDPOINTS, stored_input
from server.files.local import LocalFileStore
from server.worker.fetch import Fetcher
from server.worker.runner import Executor, JobHooks

SRC_W, SRC_H, SRC_FRAMES, FPS = 192, 96, 7, 16
MODEL_FRAMES = 9  # smallest 4k+1 >= 7
SEED = 11
TINY_SIZES = {"16:9": (96, 48), "9:16": (48, 96), "1:1": (48, 48)}


def tiny_sizes(resolution: str, aspect_ratio: str, width: int, height: int) -> tuple[int, int]:
    if aspect_ratio == "auto":
        aspect_ratio = "16:9" if width >= height else "9:16"
    return TINY_SIZES[aspect_ratio]


@dataclass
class FakeJob:
    id: str
    endpoint: str
    input: dict[str, Any]


@dataclass
class Inputs:
    video_uri: str
    frames: np.ndarray  # the source as the worker decodes it, (7, 96, 192, 3)
    mask_uri: str  # PNG, white rectangle = generate
    ref_uri: str
    ref: Image.Image


def uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    folder = tmp_path_factory.mktemp("equivalence-media")
    x = np.linspace(0, 220, SRC_W, dtype=np.float32)
    y = np.linspace(0, 180, SRC_H, dtype=np.float32)
    frames = np.empty((SRC_FRAMES, SRC_H, SRC_W, 3), dtype=np.uint8)
    for i in range(SRC_FRAMES):
        frames[i, ..., 0] = x[None, :]
        frames[i, ..., 1] = y[:, None]
        frames[i, ..., 2] = 90
        frames[i, 20:60, 10 + 20 * i : 40 + 20 * i] = 250  # a moving bright square
    path = folder / "source.mp4"
    write_mp4(frames, FPS, path)
    decoded, fps = read_video(path)  # the test's own decode of the same bytes the worker gets
    assert decoded.shape == frames.shape and fps == FPS
    mask = np.zeros((SRC_H, SRC_W, 3), dtype=np.uint8)
    mask[32:64, 64:128] = 255
    ref = np.zeros((30, 40, 3), dtype=np.uint8)
    ref[:, :20] = (200, 30, 30)
    ref[:, 20:] = (30, 30, 200)
    return Inputs(uri(path.read_bytes(), "video/mp4"), decoded, uri(png(mask), "image/png"),
                  uri(png(ref), "image/png"), Image.fromarray(ref))


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


@pytest.fixture
def executor(pipe: WanVACEPipeline, tmp_path: Path) -> Executor:
    files = LocalFileStore(tmp_path / "files")
    fetcher = Fetcher(files, tmp_path / "work", max_bytes=50 << 20, timeout_s=10.0)
    # The static mask image (VACE_MASK_TRACKING=static): this test builds the one mask by hand; tracking is
    # tests/server/test_mask_tracking_plan.py's.
    annotators = Annotators(AnnotatorConfig(root=None, mask_tracking="static"))
    return Executor(pipe, fetcher, files, tmp_path / "work", sizes=tiny_sizes, annotators=annotators)


def job(endpoint: str, payload: dict[str, Any], previous_release: bool = False) -> FakeJob:
    # What the API stores (server/contract/endpoints.py's stored_input), with the seed filled in; or what the
    # previous release stored: the endpoint model's own dump and the seed.
    model = ENDPOINTS[endpoint].input_model
    validated = model.model_validate(payload | {"seed": SEED})
    data = (validated.model_dump(mode="json") if previous_release
            else stored_input(ENDPOINTS[endpoint], validated, random_seed=SEED))
    return FakeJob(f"job-{endpoint.rsplit('/', 1)[-1]}", endpoint, data)


def run_frames(executor: Executor, endpoint: str, payload: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    logs: list[str] = []
    generated = executor.generate_frames(job(endpoint, payload), JobHooks(logs.append, lambda: False))
    return generated.frames, logs


def common(inputs: Inputs, **extra: Any) -> dict[str, Any]:
    return {"prompt": "a square sliding over a gradient", "video_url": inputs.video_uri,
            "match_input_num_frames": True, "match_input_frames_per_second": True,
            "resolution": "480p", "num_inference_steps": 2, "guidance_scale": 1.0, **extra}


# --- the test's own conditioning, from the documented conventions -----------------------------------------


def padded(frames: np.ndarray) -> np.ndarray:
    """7 -> 9 frames by holding the last frame (README: "extended ... by holding its last frame")."""
    return np.concatenate([frames, np.repeat(frames[-1:], MODEL_FRAMES - len(frames), axis=0)])


def shrink(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def unit(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) / 255


def direct(pipe: WanVACEPipeline, video: np.ndarray, mask: np.ndarray, scheduler: Any, *,
           prompt: str, refs: list[Image.Image] | None = None, guidance: float = 1.0) -> np.ndarray:
    """One plain diffusers call: tensors (1, F, C, H, W) in [0, 1] as the pipeline takes them; uint8 out."""
    count, height, width = mask.shape
    loaded = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        with torch.inference_mode():
            out = pipe(
                prompt=prompt,
                negative_prompt=ENDPOINTS[APP_ID].input_model.model_fields["negative_prompt"].default,
                video=torch.from_numpy(video).permute(0, 3, 1, 2)[None],
                mask=torch.from_numpy(mask)[None, :, None],
                reference_images=refs,
                height=height, width=width, num_frames=count,
                num_inference_steps=2, guidance_scale=guidance,
                generator=torch.Generator("cpu").manual_seed(SEED),
                output_type="np",
            )
    finally:
        pipe.scheduler = loaded
    return np.clip(np.rint(out.frames[0] * 255), 0, 255).astype(np.uint8)


def unipc(shift: float) -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(num_train_timesteps=1000, prediction_type="flow_prediction",
                                   use_flow_sigmas=True, flow_shift=shift)


# --- one test per task -------------------------------------------------------------------------------------


def test_depth_with_reference_image(executor: Executor, pipe: WanVACEPipeline, inputs: Inputs) -> None:
    frames, logs = run_frames(executor, f"{APP_ID}/depth",
                              common(inputs, guidance_scale=5.0, resolution="240p",
                                     ref_image_urls=[inputs.ref_uri]))
    # Control video used as is (cover-scaled 192x96 -> 96x48), generated everywhere; fal's default shift 5.
    # /depth takes ref_image_urls in fal's current schema: they reach the pipeline.
    video = unit(shrink(padded(inputs.frames), 96, 48))
    expected = direct(pipe, video, np.ones((MODEL_FRAMES, 48, 96), np.float32), unipc(5.0),
                      prompt="a square sliding over a gradient", refs=[inputs.ref], guidance=5.0)
    assert frames.shape == (SRC_FRAMES, 48, 96, 3)
    np.testing.assert_array_equal(frames, expected[:SRC_FRAMES])
    assert "Sampler unipc, flow shift 5" in logs
    # shift null keeps the previous release's rule: 3 at 240p.
    frames, logs = run_frames(executor, f"{APP_ID}/depth",
                              common(inputs, resolution="240p", shift=None))
    assert "Sampler unipc, flow shift 3" in logs


def test_pose_with_dpm_sampler_and_shift(executor: Executor, pipe: WanVACEPipeline, inputs: Inputs) -> None:
    frames, _ = run_frames(executor, f"{APP_ID}/pose",
                           common(inputs, sampler="dpm++", shift=6.0, ref_image_urls=None))
    video = unit(shrink(padded(inputs.frames), 96, 48))
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, prediction_type="flow_prediction",
                                            use_flow_sigmas=True, flow_shift=6.0)
    expected = direct(pipe, video, np.ones((MODEL_FRAMES, 48, 96), np.float32), scheduler,
                      prompt="a square sliding over a gradient")
    np.testing.assert_array_equal(frames, expected[:SRC_FRAMES])


def test_inpainting_on_root_with_mask_image_and_paste_back(
    executor: Executor, pipe: WanVACEPipeline, inputs: Inputs
) -> None:
    payload = common(inputs, task="inpainting", mask_image_url=inputs.mask_uri, paste_back=True,
                     ref_image_urls=[inputs.ref_uri])
    frames, _ = run_frames(executor, APP_ID, payload)
    source = shrink(padded(inputs.frames), 96, 48)
    # The mask PNG's white rectangle (rows 32..64, cols 64..128 of 192x96) halves to rows 16..32, cols 32..64.
    mask = np.zeros((MODEL_FRAMES, 48, 96), np.float32)
    mask[:, 16:32, 32:64] = 1.0
    video = unit(source)
    video[:, 16:32, 32:64] = 0.5  # the hole is mid-gray, not the original pixels
    expected = direct(pipe, video, mask, unipc(5.0), prompt="a square sliding over a gradient",
                      refs=[inputs.ref])[:SRC_FRAMES]
    # Paste-back: the original (resized) pixels outside the hole, the generated ones inside.
    expected[:, :16] = source[:SRC_FRAMES, :16]
    expected[:, 32:] = source[:SRC_FRAMES, 32:]
    expected[:, 16:32, :32] = source[:SRC_FRAMES, 16:32, :32]
    expected[:, 16:32, 64:] = source[:SRC_FRAMES, 16:32, 64:]
    np.testing.assert_array_equal(frames, expected)


def test_outpainting_left_right_with_euler(executor: Executor, pipe: WanVACEPipeline, inputs: Inputs) -> None:
    payload = common(inputs, expand_left=True, expand_right=True, expand_ratio=0.25, sampler="euler",
                     shift=7.0)
    frames, logs = run_frames(executor, f"{APP_ID}/outpainting", payload)
    # 192x96 plus 48 px (0.25 x 192) each side = 288x96 canvas (3:1, landscape -> 96x48). Contained at
    # scale 1/3: the canvas is 96x32 at rows 8..40; the source is 64x32 at cols 16..80 of it.
    video = np.full((MODEL_FRAMES, 48, 96, 3), 0.5, np.float32)
    video[:, 8:40, 16:80] = unit(shrink(padded(inputs.frames), 64, 32))
    mask = np.ones((MODEL_FRAMES, 48, 96), np.float32)
    mask[:, 8:40, 16:80] = 0.0
    expected = direct(pipe, video, mask, FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=7.0),
                      prompt="a square sliding over a gradient")
    np.testing.assert_array_equal(frames, expected[:SRC_FRAMES])
    assert "Sampler euler, flow shift 7" in logs
    # The comparison can tell placements apart: the source one pixel off gives other frames.
    video = np.roll(video, 1, axis=2)
    mask = np.roll(mask, 1, axis=2)
    off = direct(pipe, video, mask, FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=7.0),
                 prompt="a square sliding over a gradient")
    assert not np.array_equal(off, expected)


def test_reframe_16_9_to_9_16_with_zoom_and_defaults(
    executor: Executor, pipe: WanVACEPipeline, inputs: Inputs
) -> None:
    # Reframe's own defaults: prompt "" and the input's length and fps. 720p: default shift 5.
    payload = {"video_url": inputs.video_uri, "aspect_ratio": "9:16", "zoom_factor": 0.5,
               "resolution": "720p", "num_inference_steps": 2, "guidance_scale": 1.0}
    frames, logs = run_frames(executor, f"{APP_ID}/reframe", payload)
    # Contained in 48x96 the 192x96 source is 48x24 (scale 1/4); zoom 0.5 magnifies 1.5x to 72x36, centred
    # and clipped to the 48 columns: the source's middle 128 columns (32..160), all 96 rows, as 48x36 at
    # rows 30..66.
    video = np.full((MODEL_FRAMES, 96, 48, 3), 0.5, np.float32)
    video[:, 30:66] = unit(shrink(padded(inputs.frames)[:, :, 32:160], 48, 36))
    mask = np.ones((MODEL_FRAMES, 96, 48), np.float32)
    mask[:, 30:66] = 0.0
    expected = direct(pipe, video, mask, unipc(5.0), prompt="")
    assert frames.shape == (SRC_FRAMES, 96, 48, 3)
    np.testing.assert_array_equal(frames, expected[:SRC_FRAMES])
    assert "Sampler unipc, flow shift 5" in logs


def test_run_encodes_what_generate_frames_returns(executor: Executor, inputs: Inputs) -> None:
    payload = {"video_url": inputs.video_uri, "aspect_ratio": "9:16", "num_inference_steps": 2,
               "guidance_scale": 1.0, "paste_back": True}
    output = executor.run(job(f"{APP_ID}/reframe", payload), JobHooks(lambda _: None, lambda: False))
    path = executor.files.resolve_url_path(output["video"]["url"])
    assert path is not None and output["video"]["file_size"] == path.stat().st_size
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (48, 96, SRC_FRAMES)
    decoded, fps = read_video(path)
    assert fps == FPS and output["prompt"] == "" and output["seed"] == SEED
    # Paste-back made the source band equal to the input (up to H.264), the rest is generated.
    source = shrink(inputs.frames, 48, 24)
    band = decoded[:, 36:60].astype(np.int16) - source.astype(np.int16)
    assert np.abs(band).mean() < 6


def test_a_job_stored_by_the_previous_release_gives_the_same_frames(
    executor: Executor, inputs: Inputs
) -> None:
    # Rows queued before the canonical input existed (a data dir a restart picks up) still run, unchanged.
    payload = common(inputs, task="outpainting", expand_top=True, expand_ratio=0.5, paste_back=True)
    hooks = JobHooks(lambda _: None, lambda: False)
    old = executor.generate_frames(job(APP_ID, payload, previous_release=True), hooks)
    new = executor.generate_frames(job(APP_ID, payload), hooks)
    np.testing.assert_array_equal(old.frames, new.frames)
    depth = common(inputs, ref_image_urls=[inputs.ref_uri])
    old = executor.generate_frames(job(f"{APP_ID}/depth", depth, previous_release=True), hooks)
    new = executor.generate_frames(job(f"{APP_ID}/depth", depth), hooks)
    np.testing.assert_array_equal(old.frames, new.frames)
