"""Cover-resize plus center crop to the exact generation size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from preprocessors.spatial import crop_to_aspect, resize_cover

RED, GREEN = (255, 0, 0), (0, 255, 0)


def banded(height: int, width: int, band: int, *, axis: int, frames: int = 2) -> np.ndarray:
    """Green frames with red bands of ``band`` pixels on both ends of ``axis`` (1 = rows, 2 = columns)."""
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    out[:] = GREEN
    edge = [slice(None)] * 4
    edge[axis] = slice(0, band)
    out[tuple(edge)] = RED
    edge[axis] = slice(out.shape[axis] - band, None)
    out[tuple(edge)] = RED
    return out


def test_matching_size_returns_the_same_array() -> None:
    frames = np.zeros((2, 48, 64, 3), dtype=np.uint8)

    assert resize_cover(frames, 64, 48) is frames


def test_wider_input_is_center_cropped_pixel_exact() -> None:
    # 80x48 -> 64x48: no scaling needed, 8 columns go from each side, taking the red bands with them.
    out = resize_cover(banded(48, 80, 8, axis=2), 64, 48)

    assert out.shape == (2, 48, 64, 3)
    assert (out == GREEN).all()


def test_taller_input_is_center_cropped_pixel_exact() -> None:
    out = resize_cover(banded(64, 64, 8, axis=1), 64, 48)

    assert out.shape == (2, 48, 64, 3)
    assert (out == GREEN).all()


def test_crop_is_centered_not_anchored() -> None:
    # A 9-pixel band on one side only would survive a crop anchored at the other side.
    frames = np.zeros((1, 48, 80, 3), dtype=np.uint8)
    frames[:, :, :8] = RED
    frames[:, :, -9:] = RED

    out = resize_cover(frames, 64, 48)

    assert (out[:, :, :-1] == 0).all()
    assert (out[:, :, -1] == RED).all()  # exactly the one band column past the 8 cropped


def test_downscale_then_crop_removes_the_scaled_bands_exactly() -> None:
    # 160x96 -> 64x48: scale 0.5 covers the height, width becomes 80, the 16-px bands become 8-px and
    # are cropped away.
    out = resize_cover(banded(96, 160, 16, axis=2), 64, 48)

    assert out.shape == (2, 48, 64, 3)
    assert (out == GREEN).all()


def test_shrinking_averages_areas() -> None:
    # A one-pixel checkerboard halved: area averaging gives flat mid-gray, sampling filters do not.
    board = (np.indices((48, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)[None]

    out = resize_cover(board, 32, 24)

    assert out.shape == (1, 24, 32)
    assert set(np.unique(out)) <= {127, 128}


def test_enlarging_is_bicubic_and_stays_in_range() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 12, 16, 3), dtype=np.uint8)

    out = resize_cover(frames, 64, 48)

    assert out.dtype == np.uint8
    expected = cv2.resize(frames[1], (64, 48), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(out[1], expected)


def test_solid_colour_survives_upscale_unchanged() -> None:
    frames = np.full((1, 24, 32, 3), (10, 200, 90), dtype=np.uint8)

    out = resize_cover(frames, 64, 48)

    assert (out == (10, 200, 90)).all()


def test_nearest_keeps_masks_binary() -> None:
    mask = np.zeros((3, 30, 40), dtype=np.uint8)
    mask[:, 10:20, 13:29] = 255

    smooth = resize_cover(mask, 64, 48)
    hard = resize_cover(mask, 64, 48, nearest=True)

    assert hard.shape == (3, 48, 64)
    assert set(np.unique(hard)) == {0, 255}
    assert len(np.unique(smooth)) > 2  # without nearest, edges blend (so the flag really matters)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        resize_cover(np.zeros((1, 8, 8, 3), dtype=np.float32), 16, 16)
    with pytest.raises(ValueError):
        resize_cover(np.zeros((1, 8, 8, 4), dtype=np.uint8), 16, 16)
    with pytest.raises(ValueError):
        resize_cover(np.zeros((1, 8, 8), dtype=np.uint8), 0, 16)


def test_crop_to_aspect_keeps_resize_covers_window_at_full_resolution() -> None:
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (2, 96, 256, 3), dtype=np.uint8)
    window = crop_to_aspect(frames, 96, 48)  # 2:1 out of 8:3: the middle 192 columns, every row
    assert window.shape == (2, 96, 192, 3)
    np.testing.assert_array_equal(window, frames[:, :, 32:224])
    # Scaling the window gives what resize_cover gives.
    np.testing.assert_array_equal(resize_cover(window, 96, 48), resize_cover(frames, 96, 48))
    assert crop_to_aspect(frames, 256, 96).shape == frames.shape  # already that aspect: all of it
