"""One request's GPU memory, checked before any GPU work: the cheapest fix, or a 422 naming what to reduce.

The arithmetic is pipelines/request_memory.py's; this module turns a request into its shape and a refusal
into fal's error format (server/contract/errors.py), so a request that cannot fit fails in seconds with the
largest num_frames and resolution that would, never out of memory minutes in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pipelines.memory import GiB, RequestShape, plan_of
from pipelines.request_memory import GpuMemory, RequestFit, model_size_of, request_fit
from preprocessors.sizing import RESOLUTION_SIZES
from server.contract.errors import InputError
from server.contract.inputs import WanVACEInput
from server.worker.capacity import largest_fitting_frames

TOO_LARGE = "output_too_large"
PRESETS = tuple(RESOLUTION_SIZES["16:9"])  # smallest to largest

SizeOf = Callable[[str], tuple[int, int]]  # a resolution preset -> this request's (width, height) at it


def request_shape(request: WanVACEInput, width: int, height: int, num_frames: int,
                  reference_images: int) -> RequestShape:
    return RequestShape(frame_area=width * height, num_frames=num_frames, reference_images=reference_images,
                        step_cache=request.acceleration != "none", cfg=request.guidance_scale > 1.0)


def check_request_memory(pipe: Any, gpu: GpuMemory | None, request: WanVACEInput, shape: RequestShape,
                         size_at: SizeOf, annotator_bytes: int = 0) -> RequestFit | None:
    """The fit to apply for this request (None on a CPU worker: nothing to check); InputError when none."""
    if gpu is None:
        return None
    size, plan = model_size_of(pipe), plan_of(pipe)
    fit = request_fit(gpu.usable, size, plan, shape, annotator_bytes)
    if fit.fits:
        return fit

    def fits(area: int, frames: int) -> bool:
        candidate = dataclasses.replace(shape, frame_area=area, num_frames=frames)
        return request_fit(gpu.usable, size, plan, candidate, annotator_bytes).fits

    raise too_large(request, shape, fit, fits, size_at)


def too_large(request: WanVACEInput, shape: RequestShape, fit: RequestFit, fits: Callable[[int, int], bool],
              size_at: SizeOf) -> InputError:
    """fal's 422 for a request over the card, with the largest frame count and resolution that would fit."""
    # Monotone in the frame count, and this request's own count does not fit: the largest that does is below.
    max_frames = largest_fitting_frames(lambda w, h, frames: fits(w * h, frames), shape.frame_area, 1) or None
    max_resolution = None
    for preset in PRESETS:
        width, height = size_at(preset)
        if width * height <= shape.frame_area and fits(width * height, shape.num_frames):
            max_resolution = preset
    resolution = request.resolution
    advice = []
    if max_frames is not None:
        advice.append(f"num_frames to {max_frames} or fewer at {resolution}")
    if max_resolution is not None:
        advice.append(f"resolution to {max_resolution} at {shape.num_frames} frames")
    if advice:
        remedy = f"Reduce {' or '.join(advice)}."
    else:
        remedy = ("No shorter or smaller request fits either: the model and its memory plan leave no room on "
                  "this server's GPU (tell its operator).")
    refs = f" and {shape.reference_images} reference image(s)" if shape.reference_images else ""
    message = (f"This request ({shape.num_frames} frames at {resolution}{refs}) needs an estimated "
               f"{fit.peak / GiB:.1f} GiB of GPU memory; this server has {fit.usable / GiB:.1f} GiB for it, "
               f"even with {', '.join(fit.fixes) or 'its current memory plan'}. {remedy}")
    ctx = {"num_frames": shape.num_frames, "resolution": resolution, "max_num_frames": max_frames,
           "max_resolution": max_resolution, "estimated_gib": round(fit.peak / GiB, 1),
           "usable_gib": round(fit.usable / GiB, 1)}
    return InputError("num_frames", message, TOO_LARGE, ctx)
