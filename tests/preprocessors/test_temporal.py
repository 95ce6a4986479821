"""Frame-rate resampling by display time, and fitting a clip to an exact length."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessors.temporal import fit_length, resample_fps


def indexed_frames(count: int, *, color: bool = True) -> np.ndarray:
    """Frames whose every pixel holds the frame's own index, so the output tells which frame it is."""
    shape = (count, 4, 6, 3) if color else (count, 4, 6)
    index = np.arange(count, dtype=np.uint8).reshape(-1, *[1] * (len(shape) - 1))
    return np.broadcast_to(index, shape).copy()


def picked(frames: np.ndarray) -> list[int]:
    return [int(frame.flat[0]) for frame in frames]


def test_30_to_16_fps_keeps_duration_and_picks_the_frame_on_screen() -> None:
    out = resample_fps(indexed_frames(30), 30, 16)

    # Output frame i is shown at i/16 s; the source frame on screen then is floor(i * 30 / 16).
    assert picked(out) == [0, 1, 3, 5, 7, 9, 11, 13, 15, 16, 18, 20, 22, 24, 26, 28]
    assert len(out) / 16 == 30 / 30  # one second in, one second out


@pytest.mark.parametrize(("src", "dst"), [(15, 11), (7, 5), (16, 49), (24, 30), (30, 24), (25, 16)])
def test_picks_match_exact_rational_arithmetic(src: int, dst: int) -> None:
    # In floats 11 * (15 / 11) is 14.999999999999998; the exact answer (frame 15) must still win.
    count = 60
    out = resample_fps(indexed_frames(count), src, dst)

    expected_len = -(-count * dst // src)  # ceil(count * dst / src): the output instants inside the clip
    assert picked(out) == [min(i * src // dst, count - 1) for i in range(expected_len)]


def test_24_to_8_fps_keeps_every_third_frame() -> None:
    assert picked(resample_fps(indexed_frames(24), 24, 8)) == [0, 3, 6, 9, 12, 15, 18, 21]


def test_partial_last_interval_still_gets_a_frame() -> None:
    # 31 frames at 30 fps last 1.033 s; the output frame at t = 1.0 s falls inside it.
    out = resample_fps(indexed_frames(31), 30, 16)

    assert len(out) == 17
    assert picked(out)[-1] == 30


def test_works_on_grayscale_masks() -> None:
    out = resample_fps(indexed_frames(30, color=False), 30, 16)

    assert out.shape == (16, 4, 6)
    assert picked(out)[:4] == [0, 1, 3, 5]


def test_same_rate_returns_the_same_array() -> None:
    frames = indexed_frames(5)

    assert resample_fps(frames, 16, 16.0) is frames


@pytest.mark.parametrize(("src", "dst"), [(0, 16), (16, 0), (-1, 16)])
def test_non_positive_rates_are_rejected(src: float, dst: float) -> None:
    with pytest.raises(ValueError):
        resample_fps(indexed_frames(3), src, dst)


def test_fit_length_pads_by_repeating_the_last_frame() -> None:
    frames = indexed_frames(3)

    out = fit_length(frames, 7)

    assert picked(out) == [0, 1, 2, 2, 2, 2, 2]
    np.testing.assert_array_equal(out[3:], np.repeat(frames[-1:], 4, axis=0))


def test_fit_length_trims_from_the_end() -> None:
    assert picked(fit_length(indexed_frames(9), 5)) == [0, 1, 2, 3, 4]


def test_fit_length_exact_length_is_unchanged() -> None:
    frames = indexed_frames(5, color=False)

    np.testing.assert_array_equal(fit_length(frames, 5), frames)


def test_fit_length_rejects_empty_inputs() -> None:
    with pytest.raises(ValueError):
        fit_length(indexed_frames(3), 0)
    with pytest.raises(ValueError):
        fit_length(indexed_frames(0), 3)
