"""The worker's capacity table: for each resolution preset and aspect ratio, the longest video that fits.

The worker computes it once at start, after its memory plan is applied, and publishes it with its "ready"
registration (server/jobs/store.py's `set_worker_state`); the API refuses at submit a request that no live
worker can hold (server/contract/capacity.py). Values are pipeline frame counts on fal's 4k+1 grid within the
schema's 17..241, or 0 when not even 17 frames fit; `auto` holds the most permissive size an input's own
aspect ratio can give (preprocessors/sizing.py's `keep_aspect_size`). A worker with no GPU budget (CPU)
publishes no table: the API then refuses nothing on memory grounds.

The search and the table are pure (numbers in, numbers out); only `plan_fits` reads the loaded pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

from preprocessors.sizing import (
    ASPECT_TOLERANCE,
    AUTO_ASPECT_RATIO,
    MAX_ASPECT_RATIO,
    RESOLUTION_SIZES,
    SIDE_MULTIPLE,
    keep_aspect_size,
)
from server.contract.capacity import FRAME_GRID, CapacityTable

if TYPE_CHECKING:
    import torch

    from pipelines.memory import MemoryPlan, ModelSize

# fits(width, height, num_frames): whether one request of that size and pipeline length fits the worker.
Fits = Callable[[int, int, int], bool]


def largest_fitting_frames(fits: Callable[[int], bool]) -> int:
    """The largest count on FRAME_GRID for which `fits(num_frames)` holds, or 0 if none does.

    `fits` must be monotone in the frame count (a longer video never needs less memory), so a binary
    search over the 57 counts needs at most 6 calls.
    """
    low, high = 0, len(FRAME_GRID)  # invariant: FRAME_GRID[:low] fit; FRAME_GRID[high:] do not
    while low < high:
        mid = (low + high) // 2
        if fits(FRAME_GRID[mid]):
            low = mid + 1
        else:
            high = mid
    return FRAME_GRID[low - 1] if low else 0


@cache
def auto_sizes(resolution: str) -> frozenset[tuple[int, int]]:
    """Every (width, height) `aspect_ratio: auto` can give at `resolution`, both orientations.

    keep_aspect_size depends on the input only through its aspect ratio r = log(long / short), clamped at
    MAX_ASPECT_RATIO, and its choice changes only where a candidate's long side changes (round(s e^r): at
    r = log((L - 1/2) / s)) or enters or leaves the tolerance (r = log(L / s) +- ASPECT_TOLERANCE). So it is
    evaluated between each pair of neighbouring change points and at the rational ones themselves.
    """
    preset_w, preset_h = RESOLUTION_SIZES["16:9"][resolution]
    cells = preset_w * preset_h // (SIDE_MULTIPLE * SIDE_MULTIPLE)
    top = math.log(MAX_ASPECT_RATIO)
    points = {0.0, top}
    inputs: set[tuple[int, int]] = {(1, 1), (7, 1)}  # a square; past the clamp
    for short in range(1, math.isqrt(cells) + 1):
        for long in range(short, cells // short + 2):
            rounding = math.log((long - 0.5) / short)
            points.update(r for r in (rounding, math.log(long / short) - ASPECT_TOLERANCE,
                                      math.log(long / short) + ASPECT_TOLERANCE) if 0.0 <= r <= top)
            if 0.0 <= rounding <= top:
                inputs.add((2 * long - 1, 2 * short))  # exactly on a rounding tie
    ordered = sorted(points)
    scale = 1_000_000
    for low, high in zip(ordered, ordered[1:], strict=False):
        inputs.add((round(math.exp((low + high) / 2) * scale), scale))
    landscape = {keep_aspect_size(preset_w * preset_h, w, h) for w, h in inputs}
    return frozenset(landscape | {(h, w) for w, h in landscape})


def capacity_table(fits: Fits) -> CapacityTable:
    """For each preset and aspect ratio (16:9, 9:16, 1:1, auto), the largest pipeline frame count that fits.

    `auto` is the maximum over the sizes it can give: the input decides which, so only a request that fits
    none of them is certain not to fit.
    """
    table: CapacityTable = {}
    for resolution in RESOLUTION_SIZES["16:9"]:
        row = {aspect: _longest(fits, *sizes[resolution]) for aspect, sizes in RESOLUTION_SIZES.items()}
        row[AUTO_ASPECT_RATIO] = max(_longest(fits, w, h) for w, h in auto_sizes(resolution))
        table[resolution] = row
    return table


def _longest(fits: Fits, width: int, height: int) -> int:
    return largest_fitting_frames(lambda num_frames: fits(width, height, num_frames))


def plan_fits(pipe: torch.nn.Module) -> Fits | None:
    """`fits` for this worker's applied memory plan on its card, or None without a GPU budget (CPU)."""
    from pipelines.memory import plan_of
    from pipelines.request_memory import model_size_of, read_gpu_memory

    gpu = read_gpu_memory(pipe)
    return None if gpu is None else estimate_fits(plan_of(pipe), model_size_of(pipe), gpu.usable)


def estimate_fits(plan: MemoryPlan, size: ModelSize, usable: int) -> Fits:
    """The one place the capacity's notion of "fits" is defined: the worker's own per-request check
    (pipelines/request_memory.py's `request_fits`, every fix allowed: VAE tiling, annotators dropped, the text
    encoder sent to RAM) for the most permissive request of that size, `acceleration: none` (no step cache
    residuals). What this admits and a request's own settings do not fit is refused by the worker before any
    work; what it refuses, no request of that size can fit, so refusing it at submit is certain."""
    from pipelines.memory import RequestShape
    from pipelines.request_memory import request_fits

    def fits(width: int, height: int, num_frames: int) -> bool:
        return request_fits(usable, size, plan, RequestShape(width * height, num_frames, step_cache=False))

    return fits


def worker_capacity(pipe: torch.nn.Module) -> CapacityTable | None:
    """The table this worker publishes, or None (no limit) without a GPU budget."""
    fits = plan_fits(pipe)
    return None if fits is None else capacity_table(fits)
