"""resolution "auto", trim_borders' bar detection, first/last frame images, and the timeline arithmetic every
task shares now (server/contract/timing.py), on small arrays."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from preprocessors.borders import Borders, detect_borders, trim
from preprocessors.conditioning import GRAY, control_conditioning
from preprocessors.keyframes import frame_image, paste_frame_images, place_frame_images
from preprocessors.resolution import auto_resolution, resolve_resolution
from server.contract.timing import auto_downsample_factor, downsample_factor, interpolated_frames


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1920, 1080), "720p"), ((1280, 720), "720p"), ((1024, 576), "580p"), ((1000, 575), "480p"),
     ((640, 360), "360p"), ((640, 352), "360p"), ((640, 351), "240p"), ((192, 96), "240p"),
     ((720, 1280), "720p"), ((480, 854), "480p")],
)
def test_auto_resolution_is_the_largest_preset_not_above_the_short_side(size: tuple[int, int],
                                                                          expected: str) -> None:
    assert auto_resolution(*size) == expected
    assert resolve_resolution("auto", *size) == expected
    assert resolve_resolution("580p", *size) == "580p"  # an explicit preset is kept


def _letterboxed(bar: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = rng.integers(40, 220, size=(3, 40, 64, 3), dtype=np.uint8)
    if bar:
        frames[:, :bar] = 2  # black bars top and bottom, with a little noise as H.264 leaves it
        frames[:, -bar:] = 0
        frames[:, :bar, ::7] = 5
    return frames


def test_letterbox_bars_are_found_and_trimmed() -> None:
    frames = _letterboxed()
    borders = detect_borders(frames)
    assert borders == Borders(top=6, bottom=6, left=0, right=0)
    assert trim(frames, borders).shape == (3, 28, 64, 3)


def test_pillarbox_bars_are_found() -> None:
    frames = _letterboxed(0).copy()
    frames[:, :, :8] = 255
    frames[:, :, -10:] = 255
    assert detect_borders(frames) == Borders(left=8, right=10)


def test_a_picture_without_bars_and_a_flat_one_are_not_trimmed_away() -> None:
    assert not detect_borders(_letterboxed(0)).any
    flat = np.full((2, 30, 30, 3), 10, np.uint8)
    borders = detect_borders(flat)
    assert (borders.top, borders.left) == (10, 10)  # at most a third of each side
    assert trim(flat, borders).shape[1:3] == (10, 10)


def test_a_bar_that_changes_over_time_is_picture() -> None:
    frames = _letterboxed()
    frames[1, :6] = 200  # the "bar" lights up in one frame: it is part of the picture
    assert detect_borders(frames).top == 0


def _rgba_composites() -> tuple[np.ndarray, np.ndarray]:
    """A 4x4 red image whose left half is transparent, composited over black and over white."""
    on_black = np.zeros((4, 4, 3), np.uint8)
    on_black[:, 2:] = (200, 0, 0)
    on_white = on_black.copy()
    on_white[:, :2] = 255
    return on_black, on_white


@pytest.mark.parametrize(("mode", "fill", "kept"),
                         [("white", 255, 4), ("black", 0, 4), ("content_aware", None, 2)])
def test_transparency_mode(mode: str, fill: int | None, kept: int) -> None:
    on_black, on_white = _rgba_composites()
    image = frame_image(0, on_black, on_white, mode, 4, 4)
    assert image.keep.sum(axis=1).tolist() == [kept] * 4
    if fill is not None:
        assert (image.pixels[:, :2] == fill).all()
    assert (image.pixels[:, 2:] == (200, 0, 0)).all()


def test_frame_images_are_kept_frames_of_the_conditioning_and_of_the_output() -> None:
    on_black, on_white = _rgba_composites()
    first = frame_image(0, on_black, on_white, "content_aware", 4, 4)
    last = frame_image(4, on_black, on_white, "white", 4, 4)
    frames = np.full((5, 4, 4, 3), 90, np.uint8)
    conditioning = control_conditioning(frames)
    source = frames.copy()
    place_frame_images(conditioning, source, [first, last])
    assert conditioning.mask[0].tolist() == [[1, 1, 0, 0]] * 4  # transparent half generated
    assert np.allclose(conditioning.video[0, :, :2], GRAY) and np.allclose(conditioning.video[0, :, 2:, 0],
                                                                          200 / 255)
    assert (conditioning.mask[4] == 0).all() and (conditioning.mask[1:4] == 1).all()
    output = paste_frame_images(np.zeros((5, 4, 4, 3), np.uint8), [first, last])
    assert (output[0, :, 2:] == (200, 0, 0)).all() and (output[0, :, :2] == 0).all()
    assert (output[4, :, :2] == 255).all() and (output[1:4] == 0).all()


def _timeline(**fields: object) -> SimpleNamespace:
    base = {"num_interpolated_frames": 0, "temporal_upsample_factor": 0, "temporal_downsample_factor": 0,
            "enable_auto_downsample": False, "auto_downsample_min_fps": 15.0}
    return SimpleNamespace(**(base | fields))


@pytest.mark.parametrize(("fps", "min_fps", "factor"),
                         [(16, 15, 0), (30, 15, 1), (30, 10, 2), (60, 10, 5), (60, 1, 5), (10, 15, 0)])
def test_auto_downsample_keeps_the_generated_fps_at_or_above_the_minimum(fps: float, min_fps: float,
                                                                        factor: int) -> None:
    assert auto_downsample_factor(fps, min_fps) == factor
    assert fps / (factor + 1) >= min_fps or factor == 0


def test_explicit_downsampling_wins_over_auto_and_the_old_upsample_name_is_an_alias() -> None:
    assert downsample_factor(_timeline(enable_auto_downsample=True), 30.0) == 1
    assert downsample_factor(_timeline(enable_auto_downsample=True, temporal_downsample_factor=3), 30.0) == 3
    assert downsample_factor(_timeline(), 30.0) == 0
    assert interpolated_frames(_timeline(temporal_upsample_factor=2)) == 2
    assert interpolated_frames(_timeline(num_interpolated_frames=3)) == 3
