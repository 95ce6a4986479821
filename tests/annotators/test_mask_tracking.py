"""SAM 2.1 mask tracking (preprocessors/annotators/mask_tracking.py) with the tiny random model, and the
dilation applied to its masks."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessors.annotators import catalog
from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.mask_tracking import dilate_masks, load_sam2_tracker, track_mask
from preprocessors.annotators.registry import AnnotatorConfig, Annotators


@pytest.fixture(scope="module")
def tracker(tiny_dir):
    return Annotators(AnnotatorConfig(root=tiny_dir, device="cpu", tiny=True)).tracker()


def test_dilation_grows_by_one_percent_of_the_short_side():
    masks = np.zeros((2, 480, 832), np.uint8)
    masks[0, 200:280, 300:400] = 255
    grown = dilate_masks(masks)
    rows = np.flatnonzero(grown[0].any(axis=1))
    cols = np.flatnonzero(grown[0].any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (195, 284, 295, 404)  # 5 px = 1% of 480
    assert (grown[0][masks[0] == 255] == 255).all() and set(np.unique(grown)) == {0, 255}
    assert not grown[1].any()
    small = np.zeros((1, 40, 40), np.uint8)
    small[0, 20, 20] = 255
    grown_small = dilate_masks(small)[0] > 0  # at least 2 px: a radius-2 disc (OpenCV's 5x5 ellipse)
    assert grown_small[18, 20] and grown_small[20, 18] and not grown_small[17, 20] and grown_small.sum() == 17


def test_tiny_sam2_tracks_a_first_frame_mask_through_the_video(tracker):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 48, 96, 3), dtype=np.uint8)
    first = np.zeros((48, 96), np.uint8)
    first[10:20, 10:30] = 255
    masks = tracker.track(frames, first)
    assert masks.shape == (5, 48, 96) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 255}
    # On the prompted frame SAM 2 returns the given mask (through its 32x32 mask resolution here).
    inter = ((masks[0] > 0) & (first > 0)).sum()
    union = ((masks[0] > 0) | (first > 0)).sum()
    assert inter / union > 0.9
    dilated = track_mask(tracker, frames, first)
    assert (dilated >= masks).all() and dilated[0].sum() > masks[0].sum()


def test_a_wrong_sized_first_mask_is_refused(tracker):
    with pytest.raises(ValueError, match="first mask"):
        tracker.track(np.zeros((2, 32, 32, 3), np.uint8), np.zeros((16, 16), np.uint8))


def test_missing_folder_names_the_download_command(tmp_path):
    with pytest.raises(AnnotatorNotFoundError, match="vace download --annotators"):
        load_sam2_tracker(tmp_path / "nothing")
    assert catalog.SAM2.in_default_download and catalog.SAM2.licence == "Apache-2.0"
