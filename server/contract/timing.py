"""Reframe's frame arithmetic, pure Python so the API process can check an output's length at submit
without numpy. The worker's bookkeeping (preprocessors/interpolation/timeline.py's `Timeline`, which may not
import server/) computes the same count; tests/server/test_output_cap.py keeps the two equal.
"""

from __future__ import annotations


def output_frames(num_frames: int, downsample: int = 0, upsample: int = 0) -> int:
    """Frames out for N base frames with factors d and u: floor((N-1) * (d+u+1) / (d+1)) + 1."""
    return (num_frames - 1) * (downsample + upsample + 1) // (downsample + 1) + 1
