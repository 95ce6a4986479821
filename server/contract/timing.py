"""The output timeline's arithmetic, pure Python so the API process can check an output's length at submit
without numpy. The worker's bookkeeping (preprocessors/interpolation/timeline.py's `Timeline`, which may not
import server/) computes the same count; tests/server/test_output_cap.py keeps the two equal.
"""

from __future__ import annotations

from typing import Protocol

MAX_FACTOR = 5  # the schema's bound on temporal_downsample_factor


class TimelineFields(Protocol):
    """The request fields the timeline reads, as the root model (which has every field) holds them."""

    num_interpolated_frames: int
    temporal_upsample_factor: int  # the seed page's name of num_interpolated_frames (root and reframe)
    temporal_downsample_factor: int
    enable_auto_downsample: bool
    auto_downsample_min_fps: float


def output_frames(num_frames: int, downsample: int = 0, upsample: int = 0) -> int:
    """Frames out for N base frames with factors d and u: floor((N-1) * (d+u+1) / (d+1)) + 1."""
    return (num_frames - 1) * (downsample + upsample + 1) // (downsample + 1) + 1


def interpolated_frames(request: TimelineFields) -> int:
    """num_interpolated_frames, or the seed's name for it (`temporal_upsample_factor`) when only that is set.

    Sending both with different values is refused at submit (server/contract/endpoints.py)."""
    return request.num_interpolated_frames or request.temporal_upsample_factor


def interpolation_field(request: TimelineFields) -> str:
    """The name the request gave its interpolation under (for messages that blame it)."""
    if not request.num_interpolated_frames and request.temporal_upsample_factor:
        return "temporal_upsample_factor"
    return "num_interpolated_frames"


def auto_downsample_factor(fps: float, min_fps: float) -> int:
    """enable_auto_downsample's factor: the largest d (up to 5) whose generated fps, fps / (d+1), stays at
    or above `min_fps`; 0 when the output fps is already at or below it."""
    factor = 0
    while factor < MAX_FACTOR and fps / (factor + 2) >= min_fps:
        factor += 1
    return factor


def downsample_factor(request: TimelineFields, fps: float) -> int:
    """The factor a request generates with at output fps `fps`: the explicit one wins over auto."""
    if request.temporal_downsample_factor or not request.enable_auto_downsample:
        return request.temporal_downsample_factor
    return auto_downsample_factor(fps, request.auto_downsample_min_fps)
