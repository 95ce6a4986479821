"""Reframe's temporal bookkeeping: generated frames, output length and fps keep the base duration."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from preprocessors.interpolation.base import output_length
from preprocessors.interpolation.timeline import Timeline, output_frames


@pytest.mark.parametrize(
    ("n", "down", "up", "keys", "out_frames", "out_fps"),
    [
        (9, 0, 0, list(range(9)), 9, 16.0),
        (9, 1, 0, [0, 2, 4, 6, 8], 9, 16.0),
        (8, 1, 0, [0, 2, 4, 6, 7], 8, 16.0),  # the step overshoots: the last frame is held
        (9, 0, 1, list(range(9)), 17, 32.0),
        (9, 1, 1, [0, 2, 4, 6, 8], 13, 24.0),
        (1, 3, 2, [0], 1, 24.0),
        (81, 5, 5, [*range(0, 79, 6), 80], 147, 16 * 11 / 6),
    ],
)
def test_timeline(n, down, up, keys, out_frames, out_fps) -> None:
    t = Timeline(16.0, n, down, up)
    assert t.key_indices() == keys and t.generated_frames == len(keys)
    assert t.generated_fps == 16.0 / (down + 1)
    assert (t.output_frames, t.output_fps) == (out_frames, pytest.approx(out_fps))
    # Interpolating the generated frames always yields at least the output length (the rest is trimmed).
    assert output_length(t.generated_frames, t.factor) >= t.output_frames
    # Same duration as the base timeline, up to the trimmed tail (less than one generated step).
    assert 0 <= (n - 1) / 16.0 - (t.output_frames - 1) / t.output_fps < (down + 1) / 16.0


def test_keyframes_pick_and_check_length() -> None:
    frames = np.arange(8, dtype=np.uint8)[:, None, None, None].repeat(3, axis=3)
    assert Timeline(16.0, 8, 2).keyframes(frames)[:, 0, 0, 0].tolist() == [0, 3, 6, 7]
    with pytest.raises(ValueError):
        Timeline(16.0, 9, 2).keyframes(frames)
    with pytest.raises(ValueError):
        Timeline(16.0, 0)


def test_output_frames_function_matches_the_timeline():
    for n in (1, 2, 7, 81, 241):
        for d in range(6):
            for u in range(6):
                timeline = Timeline(16.0, n, d, u)
                assert output_frames(n, d, u) == timeline.output_frames
                # Independently: the base duration (n-1)/F at the output fps F(d+u+1)/(d+1), plus frame 0 ...
                duration_in_frames = Fraction(n - 1) * (d + u + 1) / (d + 1)
                assert output_frames(n, d, u) == math.floor(duration_in_frames) + 1
                # ... which never needs more frames than interpolating the generated ones gives.
                assert output_frames(n, d, u) <= output_length(timeline.generated_frames, timeline.factor)
    assert output_frames(241, 0, 5) == 1441 and output_frames(241, 5, 5) == 441
