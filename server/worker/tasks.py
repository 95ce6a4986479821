"""One `TaskPlan` per task: its timeline, the models it needs, its conditioning and its post-processing.

The one module that branches on tasks: PLANS maps each task to its plan and every step of the runner asks
the plan. What the API must know at submit (refusals, which task interpolates) is data in
server/contract/endpoints.py, which the API process can import. Without an input video the request is
reference-to-video (`ReferencePlan`, chosen by `plan_for_request`), whatever its task.
Conditioning follows VACE's convention (preprocessors/conditioning.py): white = generate, black = keep.
Depth, pose and inpainting cover-crop the input to the output size; outpainting and reframe place it on a
canvas and never crop it (preprocessors/canvas.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from preprocessors.annotators.registry import Annotators, ControlAnnotator
from preprocessors.borders import detect_borders, trim
from preprocessors.canvas import (
    Placement,
    canvas_size,
    expansion,
    outpaint_placement,
    place,
    reframe_placement,
)
from preprocessors.composite import paste_back
from preprocessors.conditioning import GRAY, control_conditioning, inpainting_conditioning
from preprocessors.interpolation.timeline import Timeline
from preprocessors.masks import binarize_mask
from preprocessors.resolution import resolve_resolution
from preprocessors.spatial import resize_cover
from preprocessors.temporal import fit_length
from server.contract.inputs import WanVACEInput
from server.contract.timing import downsample_factor, interpolated_frames
from server.worker.types import Conditioned, JobHooks, SizeRule, Timing

if TYPE_CHECKING:  # inputs.py imports this module for TaskPlan
    from server.worker.inputs import InputReader


@dataclass(frozen=True)
class TaskContext:
    """What conditioning may use beyond the request and the fitted frames."""

    sizes: SizeRule  # fal's presets; tests swap in tiny ones
    reader: InputReader  # for inputs only one task reads (inpainting's mask)
    control: ControlAnnotator | None  # loaded by server/worker/models.py when wants_control says so
    hooks: JobHooks


class TaskPlan:
    """What one task does at each step of server/worker/runner.py. The defaults suit most tasks."""

    name: str = ""

    def timeline(self, request: WanVACEInput, timing: Timing) -> Timeline:
        """Which frames are generated and how many the output has, the same for every task: every (d+1)-th
        frame is generated (d explicit, or chosen by enable_auto_downsample from the output fps) and the
        output interpolated with d + num_interpolated_frames in-betweens per gap."""
        return Timeline(timing.fps, timing.num_frames, downsample_factor(request, timing.fps),
                        interpolated_frames(request))

    def wants_control(self, request: WanVACEInput) -> bool:
        """Whether the input goes through a control annotator (depth, pose) before conditioning."""
        return False

    def load_control(self, annotators: Annotators) -> ControlAnnotator:
        raise NotImplementedError(f"task {self.name!r} has no control annotator")

    def condition(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
                  ctx: TaskContext) -> Conditioned:
        """The conditioning at the generation size; `frames` are at the pipeline's 4k+1 length."""
        raise NotImplementedError

    def post_process(self, request: WanVACEInput, output: np.ndarray, conditioned: Conditioned) -> np.ndarray:
        """On the trimmed generated frames, before interpolation, so in-betweens blend pasted pixels."""
        if not request.paste_back:
            return output
        count = len(output)
        return paste_back(output, conditioned.source[:count], conditioned.conditioning.mask[:count])


def output_size(request: WanVACEInput, ctx: TaskContext, src_w: int, src_h: int,
                canvas: tuple[int, int] | None = None) -> tuple[int, int]:
    """The generation size: `resolution` ("auto" from the input's short side, preprocessors/resolution.py)
    at `aspect_ratio` ("auto" follows `canvas`, by default the input)."""
    resolution = resolve_resolution(request.resolution, src_w, src_h)
    width, height = canvas or (src_w, src_h)
    return ctx.sizes(resolution, request.aspect_ratio, width, height)


def _cover(request: WanVACEInput, frames: np.ndarray, ctx: TaskContext) -> np.ndarray:
    """Scaled to cover the output size and centre-cropped."""
    src_h, src_w = frames.shape[1:3]
    width, height = output_size(request, ctx, src_w, src_h)
    return resize_cover(frames, width, height)


def _placed(frames: np.ndarray, placement: Placement) -> Conditioned:
    """Outpainting/reframe: the source pasted into the target frame; the rest is generated (and grayed)."""
    source, mask = place(frames, placement)
    return Conditioned(inpainting_conditioning(source, mask), source, placement.width, placement.height)


class _ControlPlan(TaskPlan):
    """Depth and pose: the input is the control video, generated everywhere; with `preprocess` it is an
    ordinary video that the task's annotator turns into one."""

    def wants_control(self, request: WanVACEInput) -> bool:
        return request.preprocess

    def condition(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
                  ctx: TaskContext) -> Conditioned:
        frames = _cover(request, frames, ctx)
        if ctx.control is not None:
            # Annotate the real frames only; the 4k+1 padding holds the last one, so hold its annotation.
            started = time.monotonic()
            annotated = ctx.control(frames[: generated.num_frames])
            took = time.monotonic() - started
            ctx.hooks.log(f"Annotated {generated.num_frames} frames ({self.name}) in {took:.1f}s")
            frames = fit_length(annotated, len(frames))
        height, width = frames.shape[1:3]
        return Conditioned(control_conditioning(frames), frames, width, height)


class DepthPlan(_ControlPlan):
    name = "depth"

    def load_control(self, annotators: Annotators) -> ControlAnnotator:
        return annotators.depth().estimate


class PosePlan(_ControlPlan):
    name = "pose"

    def load_control(self, annotators: Annotators) -> ControlAnnotator:
        return annotators.pose().annotate


class InpaintingPlan(TaskPlan):
    """Generate where the mask video (or the one mask image, which wins) is white."""

    name = "inpainting"

    def condition(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
                  ctx: TaskContext) -> Conditioned:
        frames = _cover(request, frames, ctx)
        height, width = frames.shape[1:3]
        mask = self.mask(request, frames, generated, ctx.reader)
        return Conditioned(inpainting_conditioning(frames, mask), frames, width, height)

    def mask(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
              reader: InputReader) -> np.ndarray:
        """A binary (F,H,W) mask matching the control video; a mask image applies to every frame."""
        count, height, width = frames.shape[:3]
        if request.mask_image_url:
            # Strokes drawn on transparency: transparent means "keep", i.e. black.
            image = reader.image(request.mask_image_url, "mask_image_url", background=(0, 0, 0))
            mask = resize_cover(binarize_mask(image), width, height, nearest=True)
            return np.repeat(mask[:1], count, axis=0)
        if request.mask_video_url is None:
            # server/contract/endpoints.py refuses this at submit; reaching it is a bug, not a user error.
            raise ValueError("inpainting without a mask reached the worker")
        path, info = reader.video(request.mask_video_url, "mask_video_url")
        mask_frames = reader.frames(path, "mask_video_url", info.fps, generated)
        mask_frames = resize_cover(mask_frames, width, height, nearest=True)
        return fit_length(binarize_mask(mask_frames), count)


class OutpaintingPlan(TaskPlan):
    """Each chosen side grows by expand_ratio; the enlarged canvas is fitted inside the output size."""

    name = "outpainting"

    def condition(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
                  ctx: TaskContext) -> Conditioned:
        src_h, src_w = frames.shape[1:3]
        exp = expansion(src_w, src_h, left=request.expand_left, right=request.expand_right,
                        top=request.expand_top, bottom=request.expand_bottom, ratio=request.expand_ratio)
        # aspect_ratio=auto follows the enlarged canvas, not the source.
        width, height = output_size(request, ctx, src_w, src_h, canvas_size(src_w, src_h, exp))
        return _placed(frames, outpaint_placement(src_w, src_h, exp, width, height))


class ReframePlan(TaskPlan):
    """The input (its letterbox/pillarbox bars trimmed when trim_borders) fitted inside the output's aspect
    ratio (zoomed by zoom_factor), the rest generated."""

    name = "reframe"

    def condition(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
                  ctx: TaskContext) -> Conditioned:
        if request.trim_borders:
            borders = detect_borders(frames[: generated.num_frames])
            if borders.any:
                ctx.hooks.log(f"trim_borders: trimmed {borders.top} top, {borders.bottom} bottom, "
                              f"{borders.left} left, {borders.right} right pixel(s) of bars")
                frames = trim(frames, borders)
        src_h, src_w = frames.shape[1:3]
        width, height = output_size(request, ctx, src_w, src_h)
        return _placed(frames, reframe_placement(src_w, src_h, width, height, request.zoom_factor))


class ReferencePlan(TaskPlan):
    """No input video (the root endpoint without video_url): VACE's reference-to-video. The "input" is a
    blank gray video (server/worker/reference_input.py) generated everywhere, guided by the prompt, the
    reference images and any first/last frame."""

    name = "reference"

    def condition(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
                  ctx: TaskContext) -> Conditioned:
        frames = _cover(request, frames, ctx)
        height, width = frames.shape[1:3]
        conditioning = control_conditioning(frames)
        conditioning.video[:] = GRAY  # exactly VACE's "nothing here", which uint8 cannot hold
        return Conditioned(conditioning, frames, width, height)


PLANS: dict[str, TaskPlan] = {plan.name: plan for plan in (
    DepthPlan(), PosePlan(), InpaintingPlan(), OutpaintingPlan(), ReframePlan(),
)}
REFERENCE_PLAN = ReferencePlan()


def plan_for_request(request: WanVACEInput) -> TaskPlan:
    """The plan a request runs: reference-to-video without a video, else its task's."""
    if request.video_url is None:
        return REFERENCE_PLAN
    return plan_for(request.task)


def plan_for(task: str) -> TaskPlan:
    """The plan of a task in server/contract/fields.py's TASKS; the contract test keeps the two equal."""
    try:
        return PLANS[task]
    except KeyError:
        # The API refuses unknown tasks at submit; reaching this is a bug, not a user error.
        raise NotImplementedError(f"task {task!r} is not implemented") from None
