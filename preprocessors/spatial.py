"""Fitting frames to the exact generation size."""

from __future__ import annotations

import cv2
import numpy as np


def _interpolation(scale: float, nearest: bool) -> int:
    """Area averaging to shrink (no aliasing), bicubic to enlarge, nearest for masks (keeps values binary)."""
    if nearest:
        return cv2.INTER_NEAREST
    return cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC


def cover_size(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int]:
    """The size ``resize_cover`` scales a ``src_w x src_h`` frame to before it crops ``width x height``.

    The worker shrinks frames to this size as they are decoded (server/worker/inputs.py), so the later
    ``resize_cover`` only crops: the same pixels as one resize of the full-size frame, in a fraction of the
    memory.
    """
    scale = max(width / src_w, height / src_h)
    # max() guards against rounding just below the target on the covering side.
    return max(width, round(src_w * scale)), max(height, round(src_h * scale))


def shrink_to_cover(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int]:
    """``cover_size`` when that shrinks the frame, else the frame's own size: what a decoder may scale a frame
    to without losing anything ``resize_cover(..., width, height)`` would keep (it never enlarges)."""
    if max(width / src_w, height / src_h) >= 1:
        return src_w, src_h
    return cover_size(src_w, src_h, width, height)


def resize_cover(frames: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    """Scale uint8 ``(F, H, W[, 3])`` frames to cover ``width x height`` keeping aspect, then center-crop.

    The pipeline needs the control video at exactly the generation size (a smaller one is silently
    zero-padded in token space and misaligned), and cropping rather than letterboxing keeps the whole
    target frame meaningful. Returns ``frames`` itself when the size already matches.
    """
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(f"frames must be uint8 (F, H, W) or (F, H, W, 3), got {frames.dtype} {frames.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    src_h, src_w = frames.shape[1], frames.shape[2]
    if (src_w, src_h) == (width, height):
        return frames

    scale = max(width / src_w, height / src_h)
    scaled_w, scaled_h = cover_size(src_w, src_h, width, height)
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    interpolation = _interpolation(scale, nearest)

    rescale = (scaled_w, scaled_h) != (src_w, src_h)  # False when only a crop is needed
    out = np.empty((len(frames), height, width, *frames.shape[3:]), dtype=np.uint8)
    for i, frame in enumerate(frames):
        # cv2 saturates uint8 results, so bicubic overshoot is clipped to 0..255 rather than wrapping.
        scaled = cv2.resize(frame, (scaled_w, scaled_h), interpolation=interpolation) if rescale else frame
        out[i] = scaled[top : top + height, left : left + width]
    return out


def crop_to_aspect(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """The centred window of ``frames`` with ``width:height``'s aspect ratio, at the frames' own resolution.

    The window ``resize_cover`` would keep, without its scaling: annotators run on it at the input's own
    resolution, as VACE runs them, and their output is then resized to the generation size.
    """
    if frames.ndim not in (3, 4) or width < 1 or height < 1:
        raise ValueError(f"need (F, H, W[, 3]) frames and a positive size, got {frames.shape}, "
                         f"{width}x{height}")
    src_h, src_w = frames.shape[1], frames.shape[2]
    scale = max(width / src_w, height / src_h)
    crop_w, crop_h = min(src_w, max(1, round(width / scale))), min(src_h, max(1, round(height / scale)))
    left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
    return frames[:, top : top + crop_h, left : left + crop_w]
