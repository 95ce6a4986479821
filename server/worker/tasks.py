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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from preprocessors.annotators.mask_tracking import track_mask
from preprocessors.annotators.protocols import MaskTracker
from preprocessors.annotators.registry import Annotators, ControlAnnotator
from preprocessors.borders import detect_borders, trim
from preprocessors.canvas import (
    Placement,
    canvas_size,
    expansion,
    fills_frame,
    outpaint_placement,
    place,
    reframe_placement,
)
from preprocessors.composite import paste_back
from preprocessors.conditioning import GRAY, control_conditioning, inpainting_conditioning
from preprocessors.interpolation.timeline import Timeline
from preprocessors.masks import binarize_mask
from preprocessors.sizing import AUTO_ASPECT_RATIO, orientation_aspect_ratio
from preprocessors.spatial import crop_to_aspect, resize_cover, shrink_to_cover
from preprocessors.temporal import fit_length
from server.contract.errors import InputError
from server.contract.inputs import WanVACEInput
from server.contract.timing import downsample_factor, interpolated_frames
from server.worker.types import Conditioned, JobHooks, SizeRule, Timing

if TYPE_CHECKING:  # inputs.py imports this module for TaskPlan
    from server.worker.inputs import InputReader


# Frames per annotator call on the input's own resolution (the annotators batch 8 frames themselves).
ANNOTATE_CHUNK = 8
# The short side an annotator's input keeps when frames are shrunk as they are decoded (see decode_size).
ANNOTATE_SHORT_SIDE = 1024


@dataclass(frozen=True)
class TaskContext:
    """What conditioning may use beyond the request and the fitted frames."""

    sizes: SizeRule  # fal's presets; tests swap in tiny ones
    reader: InputReader  # for inputs only one task reads (inpainting's mask)
    control: ControlAnnotator | None  # loaded by server/worker/models.py when wants_control says so
    hooks: JobHooks
    tracker: MaskTracker | None = None  # loaded when wants_tracker says so and tracking is on


class TaskPlan:
    """What one task does at each step of server/worker/runner.py. The defaults suit most tasks."""

    name: str = ""

    def timeline(self, request: WanVACEInput, timing: Timing) -> Timeline:
        """Which frames are generated and how many the output has, the same for every task: every (d+1)-th
        frame is generated (d explicit, or chosen by enable_auto_downsample from the output fps) and the
        output interpolated with d + num_interpolated_frames in-betweens per gap."""
        return Timeline(timing.fps, timing.num_frames, downsample_factor(request, timing.fps),
                        interpolated_frames(request))

    def decode_size(self, request: WanVACEInput, src_w: int, src_h: int, sizes: SizeRule) -> tuple[int, int]:
        """What input frames are shrunk to as they are decoded (server/worker/inputs.py): the size the cover
        crop below scales them to, so they are resized once, exactly as the full-size frames would be."""
        width, height = sizes(request.resolution, request.aspect_ratio, src_w, src_h)
        return shrink_to_cover(src_w, src_h, width, height)

    def wants_control(self, request: WanVACEInput) -> bool:
        """Whether the input goes through a control annotator (depth, pose) before conditioning."""
        return False

    def load_control(self, annotators: Annotators) -> ControlAnnotator:
        raise NotImplementedError(f"task {self.name!r} has no control annotator")

    def wants_tracker(self, request: WanVACEInput) -> bool:
        """Whether a first-frame mask is to be followed through the video (inpainting's mask_image_url)."""
        return False

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
    """The generation size: `resolution` (a preset: "auto" was resolved from the probed input by
    server/worker/inputs.py's `with_concrete_resolution`, as frames may be shrunk as they are decoded) at
    `aspect_ratio` ("auto" follows `canvas`, by default the input)."""
    width, height = canvas or (src_w, src_h)
    return ctx.sizes(request.resolution, request.aspect_ratio, width, height)


def _cover(request: WanVACEInput, frames: np.ndarray, ctx: TaskContext) -> np.ndarray:
    """Scaled to cover the output size and centre-cropped."""
    src_h, src_w = frames.shape[1:3]
    width, height = output_size(request, ctx, src_w, src_h)
    return resize_cover(frames, width, height)


class _PlacedPlan(TaskPlan):
    """Outpainting and reframe scale the source to fit (and reframe magnifies it by 1 + zoom_factor), then
    resize it again when placing it: frames are decoded at twice the largest such scale (the output's cover
    scale, times the zoom), so the second resize is a clean downscale; 1080p or smaller sources stay as they
    are at 720p."""

    def decode_size(self, request: WanVACEInput, src_w: int, src_h: int, sizes: SizeRule) -> tuple[int, int]:
        width, height = sizes(request.resolution, request.aspect_ratio, src_w, src_h)
        magnify = 2 * (1 + request.zoom_factor)
        return shrink_to_cover(src_w, src_h, math.ceil(width * magnify), math.ceil(height * magnify))


def _placed(frames: np.ndarray, placement: Placement) -> Conditioned:
    """Outpainting/reframe: the source pasted into the target frame; the rest is generated (and grayed)."""
    source, mask = place(frames, placement)
    return Conditioned(inpainting_conditioning(source, mask), source, placement.width, placement.height)


class _ControlPlan(TaskPlan):
    """Depth and pose: the input is the control video, generated everywhere; with `preprocess` it is an
    ordinary video that the task's annotator turns into one."""

    def wants_control(self, request: WanVACEInput) -> bool:
        return request.preprocess

    def decode_size(self, request: WanVACEInput, src_w: int, src_h: int, sizes: SizeRule) -> tuple[int, int]:
        """With an annotator, frames keep enough resolution for it: the window the output's aspect ratio
        keeps has a short side of at least ANNOTATE_SHORT_SIDE (DWPose detects at a 1024 short side, the
        depth models at less), so more pixels would be memory without detail; without one, the cover size."""
        if not self.wants_control(request):
            return super().decode_size(request, src_w, src_h, sizes)
        width, height = sizes(request.resolution, request.aspect_ratio, src_w, src_h)
        window_short = min(src_w, src_h * width / height, src_h, src_w * height / width)
        scale = max(width / src_w, height / src_h, ANNOTATE_SHORT_SIDE / window_short)
        if scale >= 1:
            return src_w, src_h
        return max(width, round(src_w * scale)), max(height, round(src_h * scale))

    def condition(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
                  ctx: TaskContext) -> Conditioned:
        if ctx.control is None:
            frames = _cover(request, frames, ctx)
        else:
            frames = self._annotate(request, frames, generated, ctx)
        height, width = frames.shape[1:3]
        return Conditioned(control_conditioning(frames), frames, width, height)

    def _annotate(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
                  ctx: TaskContext) -> np.ndarray:
        """The control video at the output size. As in VACE, the annotator sees the input at its own
        resolution (the window the output's aspect ratio keeps), and its output is resized afterwards: pose
        detection and depth then work from every input pixel, not from a downscaled copy. A few frames at a
        time, so only those are held at the input's resolution twice."""
        control = ctx.control
        assert control is not None  # condition() calls this only with an annotator
        src_h, src_w = frames.shape[1:3]
        width, height = ctx.sizes(request.resolution, request.aspect_ratio, src_w, src_h)
        # Annotate the real frames only; the 4k+1 padding holds the last one, so hold its annotation.
        window = crop_to_aspect(frames[: generated.num_frames], width, height)
        started = time.monotonic()
        annotated = np.concatenate([
            resize_cover(control(window[start : start + ANNOTATE_CHUNK]), width, height)
            for start in range(0, len(window), ANNOTATE_CHUNK)
        ])
        took = time.monotonic() - started
        ctx.hooks.log(f"Annotated {generated.num_frames} frames ({self.name}) in {took:.1f}s")
        return fit_length(annotated, len(frames))


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
        mask = self.mask(request, frames, generated, ctx.reader, ctx.tracker, ctx.hooks.log)
        return Conditioned(inpainting_conditioning(frames, mask), frames, width, height)

    def wants_tracker(self, request: WanVACEInput) -> bool:
        return bool(request.mask_image_url)

    def mask(self, request: WanVACEInput, frames: np.ndarray, generated: Timing, reader: InputReader,
             tracker: MaskTracker | None = None, log: Callable[[str], None] | None = None) -> np.ndarray:
        """A binary (F,H,W) mask matching the control video. A mask image marks the object in the first
        frame: the tracker follows it through the video, or without one it applies to every frame."""
        count, height, width = frames.shape[:3]
        if request.mask_image_url:
            # Strokes drawn on transparency: transparent means "keep", i.e. black.
            image = reader.image(request.mask_image_url, "mask_image_url", background=(0, 0, 0))
            first = resize_cover(binarize_mask(image), width, height, nearest=True)[0]
            if tracker is None:
                return np.repeat(first[None], count, axis=0)
            # Track the real frames only; the 4k+1 padding holds the last frame, so hold its mask.
            started = time.monotonic()
            tracked = track_mask(tracker, frames[: generated.num_frames], first)
            if log is not None:
                log(f"Tracked the mask through {generated.num_frames} frames in "
                    f"{time.monotonic() - started:.1f}s")
            return fit_length(tracked, count)
        if request.mask_video_url is None:
            # server/contract/endpoints.py refuses this at submit; reaching it is a bug, not a user error.
            raise ValueError("inpainting without a mask reached the worker")
        path, info = reader.video(request.mask_video_url, "mask_video_url")
        mask_frames = reader.frames(path, "mask_video_url", info, generated, nearest=True,
                                    size=shrink_to_cover(info.width, info.height, width, height))
        mask_frames = resize_cover(mask_frames, width, height, nearest=True)
        return fit_length(binarize_mask(mask_frames), count)


class OutpaintingPlan(_PlacedPlan):
    """Each chosen side grows by expand_ratio; the enlarged canvas is fitted inside the output size."""

    name = "outpainting"

    def condition(self, request: WanVACEInput, frames: np.ndarray, generated: Timing,
                  ctx: TaskContext) -> Conditioned:
        src_h, src_w = frames.shape[1:3]
        exp = expansion(src_w, src_h, left=request.expand_left, right=request.expand_right,
                        top=request.expand_top, bottom=request.expand_bottom, ratio=request.expand_ratio)
        # aspect_ratio=auto follows the enlarged canvas, not the source, and generates only its new sides.
        width, height = output_size(request, ctx, src_w, src_h, canvas_size(src_w, src_h, exp))
        follow = request.aspect_ratio == AUTO_ASPECT_RATIO
        return _placed(frames, outpaint_placement(src_w, src_h, exp, width, height, follow_canvas=follow))


class ReframePlan(_PlacedPlan):
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
        aspect: str = request.aspect_ratio
        if aspect == AUTO_ASPECT_RATIO:
            # Reframing to the input's own aspect ratio would leave nothing to generate: auto is the preset
            # of its orientation (16:9 or 9:16).
            aspect = orientation_aspect_ratio(src_w, src_h)
        width, height = ctx.sizes(request.resolution, aspect, src_w, src_h)
        placement = reframe_placement(src_w, src_h, width, height, request.zoom_factor)
        if fills_frame(placement):
            message = _nothing_to_reframe(request, aspect, src_w, src_h)
            raise InputError("aspect_ratio", message, "value_error")
        return _placed(frames, placement)


def _nothing_to_reframe(request: WanVACEInput, aspect: str, src_w: int, src_h: int) -> str:
    """Why a reframe that would only re-render its input is refused: a 14B run for a copy of the input."""
    others = ", ".join(a for a in ("16:9", "9:16", "1:1") if a != aspect)
    via = f" (auto chose {aspect})" if request.aspect_ratio == AUTO_ASPECT_RATIO else ""
    zoom = " or lower zoom_factor" if request.zoom_factor > 0 else ""
    return (f"reframe has nothing to generate: the {src_w}x{src_h} input fills the {aspect} output{via}; "
            f"set aspect_ratio to another one ({others}){zoom}")


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
