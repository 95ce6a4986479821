"""The video/mask pair handed to WanVACEPipeline for control and inpainting tasks."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessors.conditioning import GRAY, control_conditioning, inpainting_conditioning

F, H, W = 3, 8, 10


def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(F, H, W, 3), dtype=np.uint8)


def test_gray_is_zero_in_the_models_range() -> None:
    assert np.float32(GRAY) * 2 - 1 == 0


def test_control_uses_the_video_as_is_and_generates_everywhere() -> None:
    video = frames()

    cond = control_conditioning(video)

    assert cond.video.dtype == np.float32 and cond.video.shape == (F, H, W, 3)
    np.testing.assert_array_equal(cond.video, video.astype(np.float32) / 255)
    assert cond.video.min() >= 0 and cond.video.max() <= 1
    assert cond.mask.dtype == np.float32 and cond.mask.shape == (F, H, W)
    assert (cond.mask == 1).all()


def test_inpainting_grays_out_the_hole_and_keeps_the_rest() -> None:
    video = frames()
    mask = np.zeros((F, H, W), dtype=np.uint8)
    mask[:, 2:5, 3:7] = 255
    mask[1, 0, 0] = 255  # a per-frame difference, to prove masks are applied frame by frame
    hole = mask == 255

    cond = inpainting_conditioning(video, mask)

    assert (cond.video[hole] == 0.5).all()
    np.testing.assert_array_equal(cond.video[~hole], video[~hole].astype(np.float32) / 255)
    np.testing.assert_array_equal(cond.mask, hole.astype(np.float32))
    assert cond.mask.dtype == np.float32
    assert cond.video[0, 0, 0].tolist() != [0.5, 0.5, 0.5]  # frame 0 keeps the pixel frame 1 regenerates


def test_inpainting_does_not_modify_its_inputs() -> None:
    video = frames()
    original = video.copy()
    mask = np.full((F, H, W), 255, dtype=np.uint8)

    inpainting_conditioning(video, mask)

    np.testing.assert_array_equal(video, original)


def test_frame_count_mismatch_is_explained() -> None:
    with pytest.raises(ValueError, match="mask has 2 frames but the video has 3"):
        inpainting_conditioning(frames(), np.zeros((2, H, W), dtype=np.uint8))


def test_size_mismatch_is_explained() -> None:
    with pytest.raises(ValueError, match="mask is 12x8 but the video is 10x8"):
        inpainting_conditioning(frames(), np.zeros((F, H, 12), dtype=np.uint8))


def test_soft_masks_are_refused() -> None:
    mask = np.zeros((F, H, W), dtype=np.uint8)
    mask[0, 0, 0] = 200

    with pytest.raises(ValueError, match="binarize_mask"):
        inpainting_conditioning(frames(), mask)
