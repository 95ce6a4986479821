"""Turn one job's validated input into an output video. Runs inside a worker process only.

The steps read top to bottom: load the models the request needs (annotators, interpolator, safety checker,
prompt LLM; a missing one fails here, before any work), fetch inputs, decode, fit the input to the target
fps/length (reframe: keep every (d+1)-th frame), check the input's safety, expand the prompt, build the
task's conditioning at the target size (cover-crop for depth/pose/inpainting, with the depth/pose annotator
when `preprocess`; a canvas for outpainting/reframe), generate with the request's sampler and flow shift,
trim back to the requested length, optionally paste the kept pixels back, interpolate (reframe), check the
output's safety, encode and store.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.generate import GenerationCancelled, GenerationRequest, generate
from pipelines.memory import Offload, plan_of
from pipelines.schedulers import default_flow_shift
from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.registry import AnnotatorConfig, Annotators, ControlAnnotator
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
from preprocessors.interpolation.timeline import Timeline
from preprocessors.masks import binarize_mask
from preprocessors.sizing import pipeline_num_frames, target_size
from preprocessors.spatial import resize_cover
from preprocessors.temporal import fit_length, resample_fps
from preprocessors.video_io import (
    IMAGE_FORMATS,  # the plugins read_image allows
    ImageDecodeError,
    VideoDecodeError,
    probe_video,
    read_image,
    read_video,
    write_mp4,
)
from server.contract.endpoints import ENDPOINTS
from server.contract.errors import InputError
from server.contract.inputs import task_of
from server.contract.limits import InputLimits, output_length_field
from server.files.store import FileStore
from server.jobs.model import Job
from server.worker.fetch import Fetcher

MAX_FRAMES = 241  # the schema's upper bound; also bounds match_input_num_frames
SAFETY_SAMPLE = 8  # frames the safety checker looks at, evenly spaced, first and last included
CONTENT_POLICY = "content_policy_violation"
NOT_INSTALLED = "feature_not_supported"
log = logging.getLogger("vace.execute")


@dataclass(frozen=True)
class JobHooks:
    log: Callable[[str], None]
    should_cancel: Callable[[], bool]
    warn: Callable[[str], None] | None = None  # a WARN line in the job's logs; defaults to `log`

    def warning(self, message: str) -> None:
        log.warning(message)  # the operator sees it in the worker's log too
        (self.warn or self.log)(message)


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
class _Models:
    """What a request needs beyond the pipeline, loaded before any work so a missing one fails fast."""

    control: ControlAnnotator | None = None  # depth/pose with preprocess
    interpolator: Any = None  # reframe with temporal factors
    checker: Any = None  # enable_safety_checker (None also when missing and the operator allows that)
    expander: Any = None  # enable_prompt_expansion
    # Dropped to free GPU memory for generation, to be loaded again after it (Executor._free_gpu_...).
    reload_interpolator: bool = False
    reload_checker: bool = False


@dataclass
class _Prepared:
    """The task's conditioning plus the source pixels at the generation size (for paste-back)."""

    conditioning: Conditioning
    source: np.ndarray  # uint8 (F, H, W, 3): what the kept (mask 0) pixels were
    width: int
    height: int


class Executor:
    def __init__(self, pipe: Any, fetcher: Fetcher, files: FileStore, work_dir: Path,
                 sizes: SizeRule = target_size, annotators: Annotators | None = None,
                 limits: InputLimits | None = None) -> None:
        self.pipe = pipe
        self.fetcher = fetcher
        self.files = files
        self.work_dir = work_dir
        # Tests swap in a rule with tiny sizes; the server always uses fal's presets.
        self.sizes = sizes
        # Without a registry every annotator is "not installed" (the safety checker then follows its policy).
        self.annotators = annotators or Annotators(AnnotatorConfig(root=None))
        self.limits = limits or InputLimits()

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
        # The endpoint's own input model: its fields differ by task, so mypy cannot know them from the
        # table's `type[BaseModel]`; absent optional ones are read with getattr below.
        params: Any = endpoint.input_model.model_validate(job.input)
        task = task_of(endpoint.id, params)
        seed = int(job.input["seed"])
        models = self._load_models(task, params, hooks)

        # 1. Inputs, fitted to the output fps and length (the size depends on the task). Reframe's temporal
        #    downsampling then keeps every (d+1)-th frame for generation.
        hooks.log("Fetching inputs")
        video_path = self.fetcher.fetch(params.video_url, "video_url", scratch)
        info = _probe(video_path, "video_url", self.limits)
        timing = _timing(params, info.fps, info.num_frames)
        timeline = _timeline(task, params, timing)
        # The output's length is known now (it may follow the input): refuse an over-long one before any work.
        field = output_length_field(timeline.upsample, follows_input=params.match_input_num_frames)
        self.limits.check_output(field, timeline.output_frames)
        frames = timeline.keyframes(self._load_video(video_path, "video_url", info.fps, timing))
        generated = Timing(fps=timeline.generated_fps, num_frames=timeline.generated_frames)
        references = [self._load_image(url, "ref_image_urls", scratch, i)
                      for i, url in enumerate(getattr(params, "ref_image_urls", None) or [])]
        _check_cancel(hooks)
        if models.checker is not None:
            _check_safety(models.checker, frames, "video_url", "input video", hooks)
            for image in references:
                _check_safety(models.checker, image[None], "ref_image_urls", "reference image", hooks)
        prompt = params.prompt
        if models.expander is not None:
            prompt = models.expander.expand_prompt(params.prompt, task)
            hooks.log(f"Expanded prompt: {prompt}")
        _check_cancel(hooks)

        # 2. Conditioning for the task, at the pipeline's 4k+1 length.
        frames = fit_length(frames, pipeline_num_frames(generated.num_frames))
        prepared = self._prepare(task, params, frames, generated, scratch, models.control, hooks)
        hooks.log(f"Input {info.width}x{info.height} @ {info.fps:g} fps, {info.num_frames} frames -> "
                  f"{prepared.width}x{prepared.height} @ {timing.fps:g} fps, {timing.num_frames} frames")
        if timeline.factor:
            hooks.log(f"Generating every {timeline.keep_every} frame(s): {generated.num_frames} frames at "
                      f"{generated.fps:g} fps, then {params.interpolator_model} adds {timeline.factor} "
                      f"between each pair: {timeline.output_frames} frames at {timeline.output_fps:g} fps")
        _check_cancel(hooks)

        # 3. Generation.
        shift = params.shift if params.shift is not None else default_flow_shift(params.resolution)
        request = GenerationRequest(
            prompt=prompt, negative_prompt=params.negative_prompt,
            video=prepared.conditioning.video, mask=prepared.conditioning.mask, reference_images=references,
            width=prepared.width, height=prepared.height, num_inference_steps=params.num_inference_steps,
            # Any int is a valid seed in the schema; torch's generator takes 64 bits.
            guidance_scale=params.guidance_scale, seed=seed % 2**32,
            sampler=params.sampler, flow_shift=shift,
            acceleration=params.acceleration,
        )
        hooks.log(f"Sampler {params.sampler}, flow shift {shift:g}")
        models = self._free_gpu_for_generation(models, hooks)
        started = time.monotonic()

        def on_step(step: int, total: int) -> None:
            hooks.log(f"Denoising step {step}/{total} ({time.monotonic() - started:.1f}s)")

        output = generate(self.pipe, request, on_step=on_step, should_cancel=hooks.should_cancel,
                          on_log=hooks.log)
        models = self._reload_after_generation(models, params)

        # 4. Trim the 4k+1 padding away; optionally restore the kept pixels exactly (on the generated frames,
        #    so interpolated in-betweens blend pasted pixels); interpolate; check what leaves the server.
        count = generated.num_frames
        output = output[:count]
        if getattr(params, "paste_back", False):
            output = paste_back(output, prepared.source[:count], prepared.conditioning.mask[:count])
        if timeline.factor:
            _check_cancel(hooks)
            started = time.monotonic()
            output = models.interpolator.interpolate(output, timeline.factor)[: timeline.output_frames]
            hooks.log(f"Interpolated to {len(output)} frames in {time.monotonic() - started:.1f}s")
        if models.checker is not None:
            _check_safety(models.checker, output, None, "generated video", hooks)
        out_timing = Timing(fps=timeline.output_fps, num_frames=timeline.output_frames)
        return Generated(task=task, frames=output, timing=out_timing, prompt=prompt, seed=seed)

    def _free_gpu_for_generation(self, models: _Models, hooks: JobHooks) -> _Models:
        """Under an offloading memory plan the 14B model needs the GPU memory the annotators hold.

        The registry drops them (a no-op on a CPU worker); this job's references go too, or nothing would
        be freed. What is needed after generation is loaded again then, from local files.
        """
        if plan_of(self.pipe).offload is Offload.ALL_ON_GPU:
            return models
        after = _Models(reload_interpolator=models.interpolator is not None,
                        reload_checker=models.checker is not None)
        # This job's references go first: offload() empties torch's cache, which only returns memory whose
        # tensors are already unreferenced.
        models.control = models.interpolator = models.checker = models.expander = None
        dropped = self.annotators.offload()
        if dropped:
            hooks.log(f"Freed the GPU memory of {', '.join(dropped)} for generation")
        return after

    def _reload_after_generation(self, models: _Models, params: Any) -> _Models:
        if models.reload_interpolator:
            models.interpolator = self.annotators.interpolator(params.interpolator_model)
        if models.reload_checker:
            models.checker = self.annotators.safety()
        return models

    def _load_models(self, task: str, params: Any, hooks: JobHooks) -> _Models:
        models = _Models()
        reg = self.annotators
        if task in ("depth", "pose") and params.preprocess:
            hooks.log(f"Loading the {task} annotator")
            models.control = _require(lambda: reg.control(task), "preprocess", f"preprocess=true ({task})")
        if _timeline(task, params, Timing(16.0, 1)).factor:
            name = params.interpolator_model
            models.interpolator = _require(lambda: reg.interpolator(name), "interpolator_model",
                                           f"temporal factors with interpolator_model={name}")
        if params.enable_prompt_expansion:
            models.expander = _require(reg.prompt_expander, "enable_prompt_expansion",
                                       "enable_prompt_expansion=true")
        if params.enable_safety_checker:
            try:
                models.checker = reg.safety()
            except AnnotatorNotFoundError as exc:
                if reg.config.safety_missing == "refuse":
                    raise InputError(
                        "enable_safety_checker",
                        f"enable_safety_checker=true, but this server has no safety checker ({exc})",
                        NOT_INSTALLED,
                    ) from exc
                hooks.warning(f"Safety checker not installed, running unchecked ({exc})")
        return models

    def _store(self, job: Job, generated: Generated, hooks: JobHooks) -> dict[str, Any]:
        fps = generated.timing.fps
        hooks.log(f"Encoding {len(generated.frames)} frames to H.264 at {fps:g} fps")
        name = self.files.reserve(f"{generated.task}-{job.id[:8]}.mp4")
        with self.files.path_writer(name) as dest:
            write_mp4(generated.frames, fps, dest)
        return {
            "video": {
                "url": self.files.url(name),  # made absolute for each caller
                "content_type": "video/mp4",
                "file_name": name.rpartition("/")[2],
                "file_size": self.files.size(name),
            },
            "prompt": generated.prompt,
            "seed": generated.seed,
        }

    def _prepare(self, task: str, params: Any, frames: np.ndarray, timing: Timing, scratch: Path,
                 control: ControlAnnotator | None, hooks: JobHooks) -> _Prepared:
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
            if control is not None:
                # Annotate the real frames only; the 4k+1 padding holds the last one, so hold its annotation.
                started = time.monotonic()
                annotated = control(frames[: timing.num_frames])
                took = time.monotonic() - started
                hooks.log(f"Annotated {timing.num_frames} frames ({task}) in {took:.1f}s")
                frames = fit_length(annotated, len(frames))
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
        info = _probe(path, "mask_video_url", self.limits)
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
        _check_image_size(path, field, self.limits)
        try:
            return read_image(path, background=background)
        except ImageDecodeError as exc:
            raise InputError(field, str(exc), "unsupported_image_format") from exc


def _placed(frames: np.ndarray, placement: Placement) -> _Prepared:
    """Outpainting/reframe: the source pasted into the target frame; the rest is generated (and grayed)."""
    source, mask = place(frames, placement)
    return _Prepared(inpainting_conditioning(source, mask), source, placement.width, placement.height)


def _probe(path: Path, field: str, limits: InputLimits) -> Any:
    """The container's claims (the probe decodes only the first frame), checked before read_video runs."""
    try:
        info = probe_video(path)
    except VideoDecodeError as exc:
        raise InputError(field, str(exc), "unsupported_video_format") from exc
    limits.check_video(field, info.width, info.height, info.num_frames, info.duration)
    return info


def _check_image_size(path: Path, field: str, limits: InputLimits) -> None:
    """Pillow reads only the header here; anything it cannot parse is left to read_image to explain."""
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:  # Pillow's own guard (on, at 2x MAX_IMAGE_PIXELS)
        raise InputError(field, f"{field}: {exc}", "image_too_large",
                         {"max_pixels": limits.max_pixels}) from exc
    except (OSError, ValueError, SyntaxError, EOFError):
        return  # not an image Pillow can parse: read_image says so
    limits.check_image(field, width, height)


def _timeline(task: str, params: Any, timing: Timing) -> Timeline:
    """Only reframe has temporal factors; other tasks (on the root endpoint) ignore them."""
    if task != "reframe":
        return Timeline(timing.fps, timing.num_frames)
    return Timeline(timing.fps, timing.num_frames, params.temporal_downsample_factor,
                    params.temporal_upsample_factor)


def _require(load: Callable[[], Any], field_name: str, feature: str) -> Any:
    """Load a model the request asked for; a missing one is a clear error naming the download command."""
    try:
        return load()
    except AnnotatorNotFoundError as exc:
        raise InputError(field_name, f"{feature} needs a model this server has not installed: {exc}",
                         NOT_INSTALLED) from exc


def _check_safety(checker: Any, frames: np.ndarray, field_name: str | None, what: str,
                  hooks: JobHooks) -> None:
    verdict = checker.check_frames(frames, sample=SAFETY_SAMPLE)
    hooks.log(f"Safety check of the {what}: NSFW score {verdict.score:.3f} (frame {verdict.frame_index})")
    if verdict.flagged:
        raise InputError(
            field_name,
            f"The {what} was flagged by the safety checker (NSFW score {verdict.score:.2f} at frame "
            f"{verdict.frame_index}); " + ("nothing was generated." if field_name else "it is not returned."),
            CONTENT_POLICY,
            {"stage": "input" if field_name else "output", "nsfw_score": round(verdict.score, 4),
             "frame_index": verdict.frame_index},
        )


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
