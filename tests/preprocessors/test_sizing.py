"""Generation sizes per resolution/aspect ratio, and the pipeline's 4k+1 frame grid."""

from __future__ import annotations

import pytest

from preprocessors.sizing import (
    RESOLUTION_SIZES,
    orientation_aspect_ratio,
    pipeline_num_frames,
    target_size,
)


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
        (1920, 1080, (832, 480)),  # 16:9 gets the 16:9 preset, in both orientations
        (1080, 1920, (480, 832)),
        (854, 480, (832, 480)),  # near 16:9 too
        (640, 480, (720, 544)),  # 4:3 keeps 4:3 (1.32) instead of being cropped to 16:9
        (480, 640, (544, 720)),
        (500, 500, (640, 624)),  # a square is as square as 16-pixel cells allow at this area
        (2560, 1080, (960, 416)),  # 21:9
    ],
)
def test_auto_keeps_the_input_aspect_ratio_at_the_preset_area(width: int, height: int,
                                                               expected: tuple[int, int]) -> None:
    assert target_size("480p", "auto", width, height) == expected


@pytest.mark.parametrize("resolution", ["240p", "360p", "480p", "580p", "720p"])
@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (640, 480), (1080, 1080), (1080, 1440),
                                               (3000, 1000), (1000, 4000), (1921, 1079), (7, 5)])
def test_auto_sizes_are_within_the_preset_area_at_the_input_aspect(resolution: str, width: int,
                                                                    height: int) -> None:
    preset_w, preset_h = RESOLUTION_SIZES["16:9"][resolution]
    w, h = target_size(resolution, "auto", width, height)
    assert w % 16 == 0 and h % 16 == 0
    assert w * h <= preset_w * preset_h  # never more tokens than the preset
    assert w * h >= 0.9 * preset_w * preset_h
    assert (w >= h) == (width >= height)
    # The aspect ratio is off by less than one 16-pixel cell on the short side.
    short, long = min(w, h), max(w, h)
    ideal_short = long * min(width, height) / max(width, height)
    assert abs(short - ideal_short) < 16 * long / short + 16


@pytest.mark.parametrize("resolution", ["240p", "360p", "480p", "580p", "720p"])
def test_auto_on_a_16_9_input_is_exactly_the_16_9_or_9_16_preset(resolution: str) -> None:
    assert target_size(resolution, "auto", 1920, 1080) == RESOLUTION_SIZES["16:9"][resolution]
    assert target_size(resolution, "auto", 1080, 1920) == RESOLUTION_SIZES["9:16"][resolution]


def test_auto_keeps_a_4_3_frame_that_16_9_would_crop() -> None:
    # Cover-cropping a 640x480 frame to the size: the share of the input that survives.
    def kept(size: tuple[int, int]) -> float:
        scale = max(size[0] / 640, size[1] / 480)
        return (size[0] * size[1]) / (640 * scale * 480 * scale)

    assert kept(target_size("480p", "16:9", 640, 480)) == pytest.approx(0.769, abs=1e-3)
    assert kept(target_size("480p", "auto", 640, 480)) > 0.99


def test_orientation_aspect_ratio_is_reframe_auto() -> None:
    assert orientation_aspect_ratio(1920, 1080) == "16:9"
    assert orientation_aspect_ratio(1080, 1920) == "9:16"
    assert orientation_aspect_ratio(500, 500) == "16:9"
    with pytest.raises(ValueError, match="positive"):
        orientation_aspect_ratio(0, 5)


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
