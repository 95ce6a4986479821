"""`trim_borders` (reframe): find letterbox / pillarbox bars, so reframing places only the picture.

A bar is a run of rows (or columns) from an edge inward whose pixels stay one flat colour in every frame:
each row's spread (max - min over its pixels and all frames, per channel) is at most `tolerance`, and its
colour is within `tolerance` of the outermost row's (one bar colour, usually black). At most a third of
each side may go, so a flat picture (a plain sky) is never trimmed to nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOLERANCE = 24  # uint8 levels: H.264 noise on a black bar stays well below this
MAX_FRACTION = 1 / 3


@dataclass(frozen=True)
class Borders:
    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @property
    def any(self) -> bool:
        return bool(self.top or self.bottom or self.left or self.right)


def _bar_length(lines: np.ndarray, limit: int, tolerance: int) -> int:
    """How many of `lines` (L, N, 3), outermost first, belong to one flat bar."""
    lines = lines.astype(np.int16)
    reference = lines[0].reshape(-1, 3).mean(axis=0)
    count = 0
    for line in lines[:limit]:
        pixels = line.reshape(-1, 3)
        spread = int((pixels.max(axis=0) - pixels.min(axis=0)).max())
        if spread > tolerance or np.abs(pixels.mean(axis=0) - reference).max() > tolerance:
            break
        count += 1
    return count


def detect_borders(frames: np.ndarray, tolerance: int = TOLERANCE) -> Borders:
    """The bars around uint8 (F, H, W, 3) frames; Borders() when there are none."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    rows = frames.transpose(1, 0, 2, 3)  # (H, F, W, 3): one "line" per row, across every frame
    cols = frames.transpose(2, 0, 1, 3)  # (W, F, H, 3)
    max_rows, max_cols = int(height * MAX_FRACTION), int(width * MAX_FRACTION)
    return Borders(
        top=_bar_length(rows, max_rows, tolerance),
        bottom=_bar_length(rows[::-1], max_rows, tolerance),
        left=_bar_length(cols, max_cols, tolerance),
        right=_bar_length(cols[::-1], max_cols, tolerance),
    )


def trim(frames: np.ndarray, borders: Borders) -> np.ndarray:
    height, width = frames.shape[1:3]
    return frames[:, borders.top : height - borders.bottom, borders.left : width - borders.right]
