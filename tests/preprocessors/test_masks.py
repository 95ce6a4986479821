"""Hard 0/255 masks from user images and videos (white = generate, black = keep)."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessors.masks import binarize_mask


def test_threshold_is_128_inclusive() -> None:
    frames = np.array([[[0, 127, 128, 255]]], dtype=np.uint8)

    np.testing.assert_array_equal(binarize_mask(frames), [[[0, 0, 255, 255]]])


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
