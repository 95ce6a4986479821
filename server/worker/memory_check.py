"""One request's GPU memory, checked before any GPU work: the cheapest fix, or a 422 naming what to reduce.

The arithmetic is pipelines/request_memory.py's; this module turns a request into its shape and a refusal
into fal's error format (server/contract/errors.py), so a request that cannot fit fails in seconds with the
largest num_frames and resolution that would, never out of memory minutes in. The check counts the frames
the pipeline generates; the refusal speaks in the client's own terms (server/contract/capacity.py's
conversion): its num_frames before temporal downsampling, or its input video when the length follows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pipelines.fast_mode import runs_fast
from pipelines.memory import GiB, RequestShape, plan_of
from pipelines.request_memory import GpuMemory, RequestFit, model_size_of, request_fit
from preprocessors.sizing import RESOLUTION_SIZES
from server.contract.capacity import longest_num_frames
from server.contract.errors import InputError
from server.contract.inputs import WanVACEInput
from server.worker.capacity import largest_fitting_frames

TOO_LARGE = "output_too_large"
PRESETS = tuple(RESOLUTION_SIZES["16:9"])  # smallest to largest

SizeOf = Callable[[str], tuple[int, int]]  # a resolution preset -> this request's (width, height) at it


@dataclasses.dataclass(frozen=True)
class RequestLength:
    """The request's length as the client set it: the base frame count (num_frames, or the input's length
    at the output fps when `follows_input`), before keeping every (downsample+1)-th frame for generation."""

    num_frames: int
    downsample: int = 0
    fps: float = 16.0
    follows_input: bool = False  # match_input_num_frames with an input video: num_frames is ignored


def request_shape(pipe: Any, request: WanVACEInput, width: int, height: int, num_frames: int,
                  reference_images: int) -> RequestShape:
    # pipelines/generate.py runs no step cache in fast mode, whatever `acceleration` says.
    fast = runs_fast(pipe, request.num_inference_steps, request.guidance_scale)
    return RequestShape(frame_area=width * height, num_frames=num_frames, reference_images=reference_images,
                        step_cache=request.acceleration != "none" and not fast,
                        cfg=request.guidance_scale > 1.0)


def check_request_memory(pipe: Any, gpu: GpuMemory | None, request: WanVACEInput, shape: RequestShape,
                         size_at: SizeOf, annotator_bytes: int = 0,
                         length: RequestLength | None = None) -> RequestFit | None:
    """The fit to apply for this request (None on a CPU worker: nothing to check); InputError when none.
    `length` is how the client set the length (default: num_frames is the pipeline's count)."""
    if gpu is None:
        return None
    size, plan = model_size_of(pipe), plan_of(pipe)
    fit = request_fit(gpu.usable, size, plan, shape, annotator_bytes)
    if fit.fits:
        return fit

    def fits(area: int, frames: int) -> bool:
        candidate = dataclasses.replace(shape, frame_area=area, num_frames=frames)
        return request_fit(gpu.usable, size, plan, candidate, annotator_bytes).fits

    raise too_large(request, shape, fit, fits, size_at, length or RequestLength(shape.num_frames))


def too_large(request: WanVACEInput, shape: RequestShape, fit: RequestFit, fits: Callable[[int, int], bool],
              size_at: SizeOf, length: RequestLength) -> InputError:
    """fal's 422 for a request over the card, with the largest frame count and resolution that would fit."""
    # Monotone in the frame count, and this request's own count does not fit: the largest that does is below.
    max_pipeline = largest_fitting_frames(lambda frames: fits(shape.frame_area, frames))
    # In the client's frames: what it may send as num_frames (or the input's length) at its downsampling.
    max_frames = longest_num_frames(max_pipeline, length.downsample) if max_pipeline else None
    max_resolution = None
    for preset in PRESETS:
        width, height = size_at(preset)
        if width * height <= shape.frame_area and fits(width * height, shape.num_frames):
            max_resolution = preset
    resolution = request.resolution
    advice = []
    if max_resolution is not None:
        advice.append(f"resolution to {max_resolution} at {length.num_frames} frames")
    if max_frames is not None and length.follows_input:
        # num_frames is ignored under match_input_num_frames: the input video sets the length.
        shorter = (f"Send a shorter input video (at most {max_frames} frames at {length.fps:g} fps, "
                   f"{max_frames / length.fps:.1f} s) or lower the frame rate at {resolution}")
        remedy = shorter + (f", or reduce {advice[0]}." if advice else ".")
    elif max_frames is not None or advice:
        if max_frames is not None:
            advice.insert(0, f"num_frames to {max_frames} or fewer at {resolution}")
        remedy = f"Reduce {' or '.join(advice)}."
    else:
        remedy = ("No shorter or smaller request fits either: the model and its memory plan leave no room on "
                  "this server's GPU (tell its operator).")
    refs = f" and {shape.reference_images} reference image(s)" if shape.reference_images else ""
    sampled = (f", {shape.num_frames} generated with temporal downsampling by {length.downsample + 1}"
               if length.downsample else "")
    message = (f"This request ({length.num_frames} frames{sampled} at {resolution}{refs}) needs an estimated "
               f"{fit.peak / GiB:.1f} GiB of GPU memory; this server has {fit.usable / GiB:.1f} GiB for it, "
               f"even with {', '.join(fit.fixes) or 'its current memory plan'}. {remedy}")
    ctx = {"num_frames": length.num_frames, "resolution": resolution, "max_num_frames": max_frames,
           "max_resolution": max_resolution, "estimated_gib": round(fit.peak / GiB, 1),
           "usable_gib": round(fit.usable / GiB, 1)}
    return InputError("video_url" if length.follows_input else "num_frames", message, TOO_LARGE, ctx)
