"""Turning user mask images/videos into the hard 0/255 masks VACE uses (white = generate, black = keep).

The pipeline binarises at 0.5 (soft masks do nothing there), so masks are made hard here, by hysteresis:
- Luma >= 128 (HARD_THRESHOLD) is "generate": the user's mid-gray 128 counts, matching diffusers' rounding,
  and the threshold is robust to compression noise in a mask video's black areas.
- A soft edge (a feathered brush, anti-aliasing, a blurred matte) is grown into: every pixel of luma >= 16
  (SOFT_THRESHOLD) that is connected (8-neighbourhood, within its frame) to a hard pixel is "generate" too.
  VACE counts any non-zero mask pixel as "generate", so a plain 128 threshold would leave a soft edge's
  outer half kept, and with it a halo of the object being removed. Faint specks that touch no hard pixel
  (noise) stay "keep".
"""

from __future__ import annotations

import cv2
import numpy as np

HARD_THRESHOLD = 128
SOFT_THRESHOLD = 16


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma in integer arithmetic (same weights as OpenCV's RGB2GRAY), rounded."""
    r, g, b = (rgb[..., c].astype(np.uint32) for c in range(3))
    return ((r * 299 + g * 587 + b * 114 + 500) // 1000).astype(np.uint8)


def binarize_mask(frames: np.ndarray) -> np.ndarray:
    """Make a mask hard: uint8 ``(F, H, W)`` holding only 0 and 255, by the hysteresis the module describes.

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
    out = np.empty(frames.shape, dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.where(_grow_across_soft_edges(frame), np.uint8(255), np.uint8(0))
    return out


def _grow_across_soft_edges(luma: np.ndarray) -> np.ndarray:
    """One frame's "generate" pixels: the hard ones plus the soft regions connected to them."""
    hard = luma >= HARD_THRESHOLD
    soft = luma >= SOFT_THRESHOLD
    if not hard.any() or np.array_equal(hard, soft):
        return hard
    count, labels = cv2.connectedComponents(soft.astype(np.uint8), connectivity=8)
    touches_hard = np.zeros(count, dtype=bool)
    touches_hard[labels[hard]] = True  # every hard pixel is soft too, so its label is a region's
    return touches_hard[labels]
