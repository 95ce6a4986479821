"""Turn one job's validated input into an output video. Runs inside a worker process only.

The steps read top to bottom: fetch inputs, decode, fit the input to the target fps/length, build the task's
conditioning at the target size (cover-crop for depth/pose/inpainting, a canvas for outpainting/reframe),
generate with the request's sampler and flow shift, trim back to the requested length, optionally paste the
kept pixels back, encode and store.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.generate import GenerationCancelled, GenerationRequest, generate
from pipelines.schedulers import default_flow_shift
from preprocessors.canvas import (
    Placement,
    canvas_size,
    expansion,
    outpaint_placement,
    place,
    reframe_placement,
)
from preprocessors.composite import paste_back
from preprocessors.conditioning import Conditioning, control_conditioning, inpainting_conditioning
from preprocessors.masks import binarize_mask
from preprocessors.sizing import pipeline_num_frames, target_size
from preprocessors.spatial import resize_cover
from preprocessors.temporal import fit_length, resample_fps
from preprocessors.video_io import (
    ImageDecodeError,
    VideoDecodeError,
    probe_video,
    read_image,
    read_video,
    write_mp4,
)
from server.endpoints import ENDPOINTS
from server.errors import InputError
from server.fetch import Fetcher
from server.filestore import FileStore
from server.jobstore import Job
from server.schemas import task_of

MAX_FRAMES = 241  # the schema's upper bound; also bounds match_input_num_frames


@dataclass(frozen=True)
class JobHooks:
    log: Callable[[str], None]
    should_cancel: Callable[[], bool]


@dataclass(frozen=True)
class Timing:
    """Where the output lands in time: its fps and how many frames the user gets."""

    fps: float
    num_frames: int


@dataclass(frozen=True)
class Generated:
    """A job's output before encoding: exactly the frames the MP4 will hold."""

    task: str
    frames: np.ndarray  # uint8 (F, H, W, 3), trimmed to the requested length (and pasted back if asked)
    timing: Timing
    prompt: str
    seed: int


# (resolution, aspect_ratio, input width, input height) -> (width, height) to generate at.
SizeRule = Callable[[str, str, int, int], tuple[int, int]]


@dataclass
class _Prepared:
    """The task's conditioning plus the source pixels at the generation size (for paste-back)."""

    conditioning: Conditioning
    source: np.ndarray  # uint8 (F, H, W, 3): what the kept (mask 0) pixels were
    width: int
    height: int


class Executor:
    def __init__(self, pipe: Any, fetcher: Fetcher, files: FileStore, work_dir: Path,
                 sizes: SizeRule = target_size) -> None:
        self.pipe = pipe
        self.fetcher = fetcher
        self.files = files
        self.work_dir = work_dir
        # Tests swap in a rule with tiny sizes; the server always uses fal's presets.
        self.sizes = sizes

    def run(self, job: Job, hooks: JobHooks) -> dict[str, Any]:
        """Generate, encode to H.264 and store; returns fal's output dict."""
        scratch = self.work_dir / job.id
        try:
            return self._store(job, self._generate(job, hooks, scratch), hooks)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def generate_frames(self, job: Job, hooks: JobHooks) -> Generated:
        """Everything `run` does except encoding and storing: the frames as they would be encoded."""
        scratch = self.work_dir / job.id
        try:
            return self._generate(job, hooks, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _generate(self, job: Job, hooks: JobHooks, scratch: Path) -> Generated:
        endpoint = ENDPOINTS[job.endpoint]
        params = endpoint.input_model.model_validate(job.input)
        task = task_of(endpoint.id, params)
        seed = int(job.input["seed"])

        # 1. Inputs, fitted to the output fps and length (the size depends on the task).
        hooks.log("Fetching inputs")
        video_path = self.fetcher.fetch(params.video_url, "video_url", scratch)
        info = _probe(video_path)
        timing = _timing(params, info.fps, info.num_frames)
        frames = self._load_video(video_path, "video_url", info.fps, timing)
        _check_cancel(hooks)

        # 2. Conditioning for the task, at the pipeline's 4k+1 length.
        frames = fit_length(frames, pipeline_num_frames(timing.num_frames))
        prepared = self._prepare(task, params, frames, timing, scratch)
        hooks.log(f"Input {info.width}x{info.height} @ {info.fps:g} fps, {info.num_frames} frames -> "
                  f"{prepared.width}x{prepared.height} @ {timing.fps:g} fps, {timing.num_frames} frames")
        references = [self._load_image(url, "ref_image_urls", scratch, i)
                      for i, url in enumerate(getattr(params, "ref_image_urls", None) or [])]
        _check_cancel(hooks)

        # 3. Generation.
        shift = params.shift if params.shift is not None else default_flow_shift(params.resolution)
        request = GenerationRequest(
            prompt=params.prompt, negative_prompt=params.negative_prompt,
            video=prepared.conditioning.video, mask=prepared.conditioning.mask, reference_images=references,
            width=prepared.width, height=prepared.height, num_inference_steps=params.num_inference_steps,
            # Any int is a valid seed in the schema; torch's generator takes 64 bits.
            guidance_scale=params.guidance_scale, seed=seed % 2**32,
            sampler=params.sampler, flow_shift=shift,
        )
        hooks.log(f"Sampler {params.sampler}, flow shift {shift:g}")
        started = time.monotonic()

        def on_step(step: int, total: int) -> None:
            hooks.log(f"Denoising step {step}/{total} ({time.monotonic() - started:.1f}s)")

        output = generate(self.pipe, request, on_step=on_step, should_cancel=hooks.should_cancel)

        # 4. Trim the 4k+1 padding away; optionally restore the kept pixels exactly.
        count = timing.num_frames
        output = output[:count]
        if getattr(params, "paste_back", False):
            output = paste_back(output, prepared.source[:count], prepared.conditioning.mask[:count])
        return Generated(task=task, frames=output, timing=timing, prompt=params.prompt, seed=seed)

    def _store(self, job: Job, generated: Generated, hooks: JobHooks) -> dict[str, Any]:
        fps = generated.timing.fps
        hooks.log(f"Encoding {len(generated.frames)} frames to H.264 at {fps:g} fps")
        dest = self.files.new_path(f"{generated.task}-{job.id[:8]}.mp4")
        write_mp4(generated.frames, fps, dest)
        return {
            "video": {
                "url": self.files.relative_url(dest),  # made absolute for each caller
                "content_type": "video/mp4",
                "file_name": dest.name,
                "file_size": dest.stat().st_size,
            },
            "prompt": generated.prompt,
            "seed": generated.seed,
        }

    def _prepare(self, task: str, params: Any, frames: np.ndarray, timing: Timing,
                 scratch: Path) -> _Prepared:
        src_h, src_w = frames.shape[1:3]
        if task == "outpainting":
            exp = expansion(src_w, src_h, left=params.expand_left, right=params.expand_right,
                            top=params.expand_top, bottom=params.expand_bottom, ratio=params.expand_ratio)
            # aspect_ratio=auto follows the enlarged canvas, not the source.
            canvas_w, canvas_h = canvas_size(src_w, src_h, exp)
            width, height = self.sizes(params.resolution, params.aspect_ratio, canvas_w, canvas_h)
            return _placed(frames, outpaint_placement(src_w, src_h, exp, width, height))
        width, height = self.sizes(params.resolution, params.aspect_ratio, src_w, src_h)
        if task == "reframe":
            return _placed(frames, reframe_placement(src_w, src_h, width, height, params.zoom_factor))
        frames = resize_cover(frames, width, height)
        if task in ("depth", "pose"):
            return _Prepared(control_conditioning(frames), frames, width, height)
        if task == "inpainting":
            mask = self._mask(params, frames, timing, scratch)
            return _Prepared(inpainting_conditioning(frames, mask), frames, width, height)
        # The API refuses unsupported tasks at submit; reaching this is a bug, not a user error.
        raise NotImplementedError(f"task {task!r} is not implemented")

    def _mask(self, params: Any, frames: np.ndarray, timing: Timing, scratch: Path) -> np.ndarray:
        """A binary (F,H,W) mask matching the control video; a mask image applies to every frame."""
        count, height, width = frames.shape[:3]
        if getattr(params, "mask_image_url", None):
            # Strokes drawn on transparency: transparent means "keep", i.e. black.
            image = self._load_image(params.mask_image_url, "mask_image_url", scratch, background=(0, 0, 0))
            mask = resize_cover(binarize_mask(image), width, height, nearest=True)
            return np.repeat(mask[:1], count, axis=0)
        path = self.fetcher.fetch(params.mask_video_url, "mask_video_url", scratch)
        info = _probe(path, "mask_video_url")
        mask_frames = self._load_video(path, "mask_video_url", info.fps, timing)
        mask_frames = resize_cover(mask_frames, width, height, nearest=True)
        return fit_length(binarize_mask(mask_frames), count)

    def _load_video(self, path: Path, field: str, src_fps: float, timing: Timing) -> np.ndarray:
        """Decode only what the output needs, resample to the target fps, fit the length; size untouched."""
        needed = math.ceil(timing.num_frames * src_fps / timing.fps) + 1
        try:
            frames, fps = read_video(path, max_frames=needed)
        except VideoDecodeError as exc:
            raise InputError(field, str(exc), "unsupported_video_format") from exc
        return fit_length(resample_fps(frames, fps, timing.fps), timing.num_frames)

    def _load_image(self, url: str, field: str, scratch: Path, index: int | None = None,
                    background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
        name = field if index is None else f"{field}-{index}"
        path = self.fetcher.fetch(url, name, scratch)
        try:
            return read_image(path, background=background)
        except ImageDecodeError as exc:
            raise InputError(field, str(exc), "unsupported_image_format") from exc


def _placed(frames: np.ndarray, placement: Placement) -> _Prepared:
    """Outpainting/reframe: the source pasted into the target frame; the rest is generated (and grayed)."""
    source, mask = place(frames, placement)
    return _Prepared(inpainting_conditioning(source, mask), source, placement.width, placement.height)


def _probe(path: Path, field: str = "video_url") -> Any:
    try:
        return probe_video(path)
    except VideoDecodeError as exc:
        raise InputError(field, str(exc), "unsupported_video_format") from exc


def _timing(params: Any, input_fps: float, input_frames: int) -> Timing:
    """Output fps and length from the request: either the input's or the requested ones."""
    fps = input_fps if params.match_input_frames_per_second else float(params.frames_per_second)
    if params.match_input_num_frames:
        # The input's duration at the output fps, capped by the schema's maximum length.
        count = max(1, min(MAX_FRAMES, math.floor(input_frames * fps / input_fps)))
    else:
        count = params.num_frames
    return Timing(fps=fps, num_frames=count)


def _check_cancel(hooks: JobHooks) -> None:
    if hooks.should_cancel():
        raise GenerationCancelled()
