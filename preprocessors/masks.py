"""Turning user mask images/videos into the hard 0/255 masks VACE uses (white = generate, black = keep)."""

from __future__ import annotations

import numpy as np

# The pipeline binarises at 0.5 anyway (soft masks do nothing), so we threshold up front where the user's
# mid-gray 128 counts as "generate", matching diffusers' own rounding.
_THRESHOLD = 128


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma in integer arithmetic (same weights as OpenCV's RGB2GRAY), rounded."""
    r, g, b = (rgb[..., c].astype(np.uint32) for c in range(3))
    return ((r * 299 + g * 587 + b * 114 + 500) // 1000).astype(np.uint8)


def binarize_mask(frames: np.ndarray) -> np.ndarray:
    """Threshold a mask at luminance >= 128 into uint8 ``(F, H, W)`` holding only 0 and 255.

    Accepts ``(F, H, W)``, ``(F, H, W, 3)``, or one image ``(H, W)`` / ``(H, W, 3)`` (returned as one frame).
    A 3-D array whose last axis is 3 is read as one RGB image, never as a 3-pixel-wide mask video.
    """
    if frames.dtype != np.uint8:
        raise ValueError(f"mask must be uint8, got {frames.dtype}")
    if frames.ndim == 2 or (frames.ndim == 3 and frames.shape[-1] == 3):
        frames = frames[None]
    if frames.ndim == 4:
        if frames.shape[-1] != 3:
            raise ValueError(f"mask frames must be grayscale or RGB, got shape {frames.shape}")
        frames = _luminance(frames)
    if frames.ndim != 3:
        raise ValueError(f"mask must be (F, H, W) or (F, H, W, 3), got shape {frames.shape}")
    return np.where(frames >= _THRESHOLD, np.uint8(255), np.uint8(0))
