"""Paste-back: keep the original pixels exactly where the mask said "keep".

VACE regenerates the whole frame, so even kept regions come back slightly changed (VAE round trip, drift).
Copying the control video's own pixels back over them makes kept areas bit-identical to the input (before
the H.264 encode), at the price of a possible seam at the mask edge.
"""

from __future__ import annotations

import numpy as np


def paste_back(generated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``generated`` where ``mask`` is non-zero (generate), ``original`` where it is 0 (keep).

    ``generated`` and ``original`` are uint8 ``(F, H, W, 3)``; ``mask`` is ``(F, H, W)`` of any numeric dtype
    (the 0/255 uint8 masks or the 0/1 float conditioning masks). Returns a new array.
    """
    if generated.dtype != np.uint8 or original.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {generated.dtype} and {original.dtype}")
    if generated.shape != original.shape or generated.ndim != 4 or generated.shape[-1] != 3:
        raise ValueError(
            f"frames must both be (F, H, W, 3) of one shape, got {generated.shape} and {original.shape}"
        )
    if mask.shape != generated.shape[:3]:
        raise ValueError(f"mask must be (F, H, W) = {generated.shape[:3]}, got {mask.shape}")
    keep = (mask == 0)[..., None]
    return np.where(keep, original, generated)
