"""Paste-back is pixel-exact: original where the mask keeps, generated where it generates."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessors.composite import paste_back


def frames(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)


@pytest.mark.parametrize("generate_value", [np.uint8(255), np.float32(1.0)])
def test_keeps_original_where_mask_is_zero(generate_value: np.generic) -> None:
    generated, original = frames(1), frames(2)
    mask = np.zeros((3, 8, 10), dtype=type(generate_value))
    mask[:, 2:5, 3:7] = generate_value
    mask[1] = generate_value  # a whole frame to generate
    out = paste_back(generated, original, mask)
    keep = mask == 0
    np.testing.assert_array_equal(out[keep], original[keep])
    np.testing.assert_array_equal(out[~keep], generated[~keep])
    assert out is not generated and out.dtype == np.uint8


def test_all_ones_mask_changes_nothing() -> None:
    generated = frames(1)
    out = paste_back(generated, frames(2), np.ones((3, 8, 10), dtype=np.float32))
    np.testing.assert_array_equal(out, generated)


def test_shape_mismatches_are_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        paste_back(frames(1), frames(2)[:2], np.zeros((3, 8, 10)))
    with pytest.raises(ValueError, match="mask"):
        paste_back(frames(1), frames(2), np.zeros((3, 8, 9)))
    with pytest.raises(ValueError, match="uint8"):
        paste_back(frames(1).astype(np.float32), frames(2), np.zeros((3, 8, 10)))
