"""Generation sizes per resolution/aspect ratio, and the pipeline's 4k+1 frame grid."""

from __future__ import annotations

import pytest

from preprocessors.sizing import RESOLUTION_SIZES, pipeline_num_frames, target_size


def test_every_preset_is_a_multiple_of_16() -> None:
    for aspect, sizes in RESOLUTION_SIZES.items():
        for resolution, (width, height) in sizes.items():
            assert width % 16 == 0 and height % 16 == 0, (aspect, resolution, width, height)


def test_landscape_presets() -> None:
    assert RESOLUTION_SIZES["16:9"] == {
        "240p": (416, 240),
        "360p": (640, 352),
        "480p": (832, 480),
        "580p": (1024, 576),
        "720p": (1280, 720),
    }


def test_portrait_is_the_landscape_swap_and_square_is_square() -> None:
    assert set(RESOLUTION_SIZES) == {"16:9", "9:16", "1:1"}
    for resolution, (width, height) in RESOLUTION_SIZES["16:9"].items():
        assert RESOLUTION_SIZES["9:16"][resolution] == (height, width)
        assert RESOLUTION_SIZES["1:1"][resolution] == (height, height)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1920, 1080, (832, 480)),  # landscape
        (1080, 1920, (480, 832)),  # portrait
        (500, 500, (832, 480)),  # square counts as landscape
        (641, 640, (832, 480)),
        (640, 641, (480, 832)),
    ],
)
def test_auto_follows_input_orientation(width: int, height: int, expected: tuple[int, int]) -> None:
    assert target_size("480p", "auto", width, height) == expected


def test_explicit_aspect_ignores_input_orientation() -> None:
    assert target_size("720p", "9:16", 1920, 1080) == (720, 1280)
    assert target_size("240p", "1:1", 1920, 1080) == (240, 240)
    assert target_size("580p", "16:9", 100, 1000) == (1024, 576)


@pytest.mark.parametrize(
    ("resolution", "aspect", "message"),
    [("1080p", "16:9", "resolution"), ("480p", "4:3", "aspect_ratio"), ("480p", "AUTO", "aspect_ratio")],
)
def test_unknown_presets_are_rejected(resolution: str, aspect: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        target_size(resolution, aspect, 640, 480)


def test_auto_needs_a_real_input_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        target_size("480p", "auto", 0, 480)


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (2, 5), (5, 5), (6, 9), (81, 81), (82, 85), (241, 241)])
def test_pipeline_num_frames_rounds_up_to_4k_plus_1(n: int, expected: int) -> None:
    assert pipeline_num_frames(n) == expected


def test_pipeline_num_frames_is_the_smallest_valid_count() -> None:
    for n in range(1, 300):
        rounded = pipeline_num_frames(n)
        assert rounded % 4 == 1 and rounded >= n and rounded - 4 < n


def test_pipeline_num_frames_rejects_empty() -> None:
    with pytest.raises(ValueError):
        pipeline_num_frames(0)
