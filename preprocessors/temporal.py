"""Changing a clip's frame rate and length without changing what it shows."""

from __future__ import annotations

import math

import numpy as np

# Guards floor() against products like 2.9999999 that are mathematically whole numbers.
_EPS = 1e-6


def resample_fps(frames: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Re-time ``frames`` from ``src_fps`` to ``dst_fps`` keeping the clip's duration.

    Output frame ``i`` is the source frame on screen at time ``i / dst_fps`` (nearest-earlier, no
    blending, so control videos and masks stay crisp). The output has as many frames as fit inside the
    source duration. Works for any array whose first axis is time; equal rates return ``frames`` itself.
    """
    if src_fps <= 0 or dst_fps <= 0:
        raise ValueError(f"frame rates must be positive, got {src_fps} -> {dst_fps}")
    if len(frames) == 0:
        raise ValueError("cannot resample a clip with no frames")
    if math.isclose(src_fps, dst_fps, rel_tol=1e-9):
        return frames
    ratio = src_fps / dst_fps
    count = max(1, math.ceil(len(frames) / ratio - _EPS))
    indices = np.floor(np.arange(count) * ratio + _EPS).astype(np.int64)
    return frames[np.minimum(indices, len(frames) - 1)]


def fitted_indices(src_fps: float, dst_fps: float, count: int) -> np.ndarray:
    """The source frame each of ``count`` output frames shows: ``fit_length(resample_fps(...), count)`` as
    indices, computed before anything is decoded.

    Output frame ``i`` is source frame ``floor(i * src_fps / dst_fps)`` (as in ``resample_fps``); an index
    past the end of the source means "hold the last frame shown", which only decoding can tell (see
    preprocessors/video_io.py's ``read_frames``). Equal rates give ``0 .. count-1``.
    """
    if src_fps <= 0 or dst_fps <= 0:
        raise ValueError(f"frame rates must be positive, got {src_fps} -> {dst_fps}")
    if count < 1:
        raise ValueError(f"length must be at least 1, got {count}")
    if math.isclose(src_fps, dst_fps, rel_tol=1e-9):
        return np.arange(count, dtype=np.int64)
    return np.floor(np.arange(count) * (src_fps / dst_fps) + _EPS).astype(np.int64)


def fit_length(frames: np.ndarray, n: int) -> np.ndarray:
    """Trim to ``n`` frames, or extend by holding the last frame.

    Holding the last frame is the least surprising extension for a control video or mask: the model keeps
    following the final pose/depth/mask instead of jumping back to the start (looping) or seeing black.
    """
    if n < 1:
        raise ValueError(f"length must be at least 1, got {n}")
    if len(frames) == 0:
        raise ValueError("cannot fit a clip with no frames")
    if len(frames) >= n:
        return frames[:n]
    hold = np.repeat(frames[-1:], n - len(frames), axis=0)
    return np.concatenate([frames, hold], axis=0)
