"""Hard 0/255 masks from user images and videos (white = generate, black = keep)."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessors.masks import binarize_mask


def test_threshold_is_128_inclusive() -> None:
    # Each value in its own frame, so no soft pixel touches a hard one.
    frames = np.array([0, 127, 128, 255], dtype=np.uint8).reshape(4, 1, 1)

    np.testing.assert_array_equal(binarize_mask(frames).ravel(), [0, 0, 255, 255])


def feathered_disc(size: int = 64, radius: float = 12.0, feather: float = 8.0) -> np.ndarray:
    """A white disc whose edge fades linearly to black over `feather` pixels, as a soft brush draws it."""
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(xx - size / 2, yy - size / 2)
    ramp = np.clip((radius + feather - distance) / feather, 0.0, 1.0)
    return np.rint(ramp * 255).astype(np.uint8)


def test_a_soft_edge_is_grown_into_not_cut_at_128() -> None:
    disc = feathered_disc()
    out = binarize_mask(disc)[0] == 255
    hard_only = disc >= 128
    soft = disc >= 16
    # The whole feather down to luma 16 is "generate" (VACE: anything non-zero), not just its inner half.
    np.testing.assert_array_equal(out, soft)
    assert out.sum() > 1.5 * hard_only.sum()
    assert not out[disc < 16].any()


def test_faint_noise_away_from_the_mask_stays_keep() -> None:
    frame = feathered_disc()
    rng = np.random.default_rng(3)
    noise = np.zeros_like(frame)
    noise[:, :8] = rng.integers(0, 60, (64, 8), dtype=np.uint8)  # compression noise in a far black corner
    frame = np.maximum(frame, noise)
    out = binarize_mask(frame)[0] == 255
    assert not out[:, :8].any()
    np.testing.assert_array_equal(out, feathered_disc() >= 16)


def test_growth_stays_within_each_frame() -> None:
    # Frame 0 has only a faint region; frame 1 has a hard pixel at the same place: only frame 1 grows.
    frames = np.zeros((2, 8, 8), np.uint8)
    frames[:, 2:6, 2:6] = 60
    frames[1, 3, 3] = 255
    out = binarize_mask(frames)
    assert not out[0].any()
    assert (out[1, 2:6, 2:6] == 255).all() and out[1].sum() == 16 * 255


@pytest.mark.parametrize(
    ("rgb", "expected"),
    [
        ((0, 255, 0), 255),  # green carries most luminance (150)
        ((255, 0, 0), 0),  # red is dark (76)
        ((0, 0, 255), 0),  # blue is darker (29)
        ((128, 128, 128), 255),
        ((127, 127, 127), 0),
        ((255, 255, 0), 255),  # yellow (226)
    ],
)
def test_rgb_masks_use_luminance(rgb: tuple[int, int, int], expected: int) -> None:
    frames = np.full((2, 4, 5, 3), rgb, dtype=np.uint8)

    out = binarize_mask(frames)

    assert out.shape == (2, 4, 5)
    assert (out == expected).all()


def test_single_images_become_one_frame() -> None:
    gray = np.full((6, 7), 200, dtype=np.uint8)
    rgb = np.zeros((6, 7, 3), dtype=np.uint8)

    assert binarize_mask(gray).shape == (1, 6, 7)
    assert binarize_mask(rgb).shape == (1, 6, 7)
    assert (binarize_mask(gray) == 255).all() and (binarize_mask(rgb) == 0).all()


def test_output_is_uint8_with_only_0_and_255() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)

    out = binarize_mask(frames)

    assert out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 255}


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 4, 4), dtype=np.float32), np.zeros((2, 4, 4, 4), dtype=np.uint8), np.zeros((4,), np.uint8)],
)
def test_rejects_unsupported_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        binarize_mask(bad)
