"""Pixel-exact geometry of outpainting and reframe: where the source lands, mask polarity, the gray fill."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessors.canvas import (
    Box,
    Expansion,
    Placement,
    canvas_size,
    expansion,
    fills_frame,
    kept_fraction,
    outpaint_placement,
    place,
    reframe_placement,
)
from preprocessors.conditioning import GRAY, inpainting_conditioning
from preprocessors.sizing import target_size


def blocks(count: int, width: int, height: int, block: int = 1, seed: int = 0) -> np.ndarray:
    """Random uint8 frames made of constant block x block squares, so an exact k-times shrink is lossless."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (count, height // block, width // block, 3), dtype=np.uint8)
    return small.repeat(block, axis=1).repeat(block, axis=2)


# --- outpainting --------------------------------------------------------------------------------------------


def test_expansion_is_ratio_of_the_source_side_per_requested_side() -> None:
    exp = expansion(200, 100, left=True, right=False, top=False, bottom=True, ratio=0.3)
    assert exp == Expansion(left=60, right=0, top=0, bottom=30)
    assert canvas_size(200, 100, exp) == (260, 130)


def test_expansion_full_ratio_doubles_each_requested_side() -> None:
    exp = expansion(64, 32, left=True, right=True, top=True, bottom=True, ratio=1.0)
    assert exp == Expansion(64, 64, 32, 32)
    assert canvas_size(64, 32, exp) == (192, 96)


def test_expansion_tiny_ratio_still_expands_by_a_pixel() -> None:
    assert expansion(64, 32, left=True, right=False, top=False, bottom=False, ratio=0.001).left == 1
    assert expansion(64, 32, left=True, right=False, top=False, bottom=False, ratio=0.0).left == 0


@pytest.mark.parametrize(
    ("side", "dest"),
    [
        # Source 64x32, ratio 0.5: pad 32 px left/right or 16 px top/bottom; target = canvas, so scale 1.
        ("left", Box(32, 0, 64, 32)),
        ("right", Box(0, 0, 64, 32)),
        ("top", Box(0, 16, 64, 32)),
        ("bottom", Box(0, 0, 64, 32)),
    ],
)
def test_outpaint_each_side_places_source_opposite_the_new_strip(side: str, dest: Box) -> None:
    flags = {name: name == side for name in ("left", "right", "top", "bottom")}
    exp = expansion(64, 32, ratio=0.5, **flags)
    width, height = canvas_size(64, 32, exp)
    placement = outpaint_placement(64, 32, exp, width, height)
    assert placement == Placement(width, height, Box(0, 0, 64, 32), dest)

    src = blocks(2, 64, 32)
    frames, mask = place(src, placement)
    inside = (slice(None), slice(dest.y, dest.y + 32), slice(dest.x, dest.x + 64))
    np.testing.assert_array_equal(frames[inside], src)  # pasted unscaled, bit for bit
    assert (mask[inside] == 0).all()  # 0 = keep over the original
    outside = np.ones(mask.shape, dtype=bool)
    outside[inside] = False
    assert outside.sum() == 2 * (width * height - 64 * 32)
    assert (mask[outside] == 255).all()  # 255 = generate the new strip


def test_outpaint_canvas_is_contained_and_leftover_is_generated() -> None:
    # 64x32 source + right strip of 32 -> 96x32 canvas (3:1) in a 96x64 frame: scale 1, canvas centred
    # vertically (16 rows above and below), source at its left end.
    exp = expansion(64, 32, left=False, right=True, top=False, bottom=False, ratio=0.5)
    placement = outpaint_placement(64, 32, exp, 96, 64)
    assert placement.dest == Box(0, 16, 64, 32)
    src = blocks(1, 64, 32)
    frames, mask = place(src, placement)
    np.testing.assert_array_equal(frames[:, 16:48, :64], src)
    expected = np.full((1, 64, 96), 255, dtype=np.uint8)
    expected[:, 16:48, :64] = 0
    np.testing.assert_array_equal(mask, expected)


def test_outpaint_canvas_is_scaled_down_to_fit_without_losing_source_pixels() -> None:
    # 64x32 + left and right strips of 16 -> 96x32 canvas, contained in 48x32: scale 1/2, canvas 48x16 at y=8,
    # source 32x16 at x=8. Source of 2x2 blocks, so the area shrink is exact.
    exp = expansion(64, 32, left=True, right=True, top=False, bottom=False, ratio=0.25)
    assert exp == Expansion(16, 16, 0, 0)
    placement = outpaint_placement(64, 32, exp, 48, 32)
    assert placement.dest == Box(8, 8, 32, 16)
    src = blocks(1, 64, 32, block=2)
    frames, mask = place(src, placement)
    np.testing.assert_array_equal(frames[:, 8:24, 8:40], src[:, ::2, ::2])
    assert (mask[:, 8:24, 8:40] == 0).all() and (mask == 0).sum() == 32 * 16


def test_new_area_becomes_exact_mid_gray_with_mask_one() -> None:
    exp = expansion(64, 32, left=True, right=False, top=False, bottom=False, ratio=0.5)
    src = blocks(3, 64, 32)
    frames, mask = place(src, outpaint_placement(64, 32, exp, 96, 32))
    cond = inpainting_conditioning(frames, mask)
    assert GRAY == 0.5
    assert (cond.video[:, :, :32] == np.float32(0.5)).all()
    assert (cond.mask[:, :, :32] == 1.0).all() and (cond.mask[:, :, 32:] == 0.0).all()
    np.testing.assert_array_equal(cond.video[:, :, 32:], src.astype(np.float32) / 255)


def _generated_sides(mask: np.ndarray) -> set[str]:
    """Which frame edges are generated (255) along their whole length, i.e. have a generated band."""
    edges = {"left": mask[:, :, 0], "right": mask[:, :, -1], "top": mask[:, 0, :], "bottom": mask[:, -1, :]}
    return {side for side, edge in edges.items() if (edge == 255).all()}


def test_fal_typical_outpaint_at_480p_auto_generates_only_the_requested_third() -> None:
    # fal's typical request: a 16:9 source at 480p, left and right, 0.25. The canvas is 1.5x as wide.
    src_w, src_h = 832, 480
    exp = expansion(src_w, src_h, left=True, right=True, top=False, bottom=False, ratio=0.25)
    canvas = canvas_size(src_w, src_h, exp)
    before = outpaint_placement(src_w, src_h, exp, *target_size("480p", "16:9", *canvas))
    after_size = target_size("480p", "auto", *canvas)
    after = outpaint_placement(src_w, src_h, exp, *after_size, follow_canvas=True)
    assert (before.width, before.height) == (832, 480)
    assert 1 - kept_fraction(before) == pytest.approx(0.555, abs=1e-3)  # bands above and below too
    assert after_size == (1024, 384)  # 2.67:1 for the canvas's 2.6:1, within sizing's 3% tolerance
    assert 1 - kept_fraction(after) == pytest.approx(1 / 3, abs=0.02)
    assert after.dest.height == 384 and after.dest.y == 0  # the source spans the height
    frames = blocks(1, src_w, src_h, block=16)
    _, mask = place(frames, after)
    assert _generated_sides(mask) == {"left", "right"}
    right_of_source = after.dest.x + after.dest.width
    assert (mask[0, :, : after.dest.x] == 255).all() and (mask[0, :, right_of_source:] == 255).all()
    _, mask_before = place(frames, before)
    assert _generated_sides(mask_before) == {"left", "right", "top", "bottom"}


@pytest.mark.parametrize(
    ("flags", "sides"),
    [
        ({"left": True}, {"left"}),
        ({"right": True}, {"right"}),
        ({"top": True}, {"top"}),
        ({"bottom": True, "right": True}, {"bottom", "right"}),
        ({"left": True, "right": True, "top": True, "bottom": True}, {"left", "right", "top", "bottom"}),
    ],
)
@pytest.mark.parametrize(("src_w", "src_h"), [(1280, 720), (640, 480), (720, 1280), (500, 500)])
def test_outpaint_auto_generates_only_requested_sides(flags: dict[str, bool], sides: set[str], src_w: int,
                                                       src_h: int) -> None:
    all_flags = {name: flags.get(name, False) for name in ("left", "right", "top", "bottom")}
    exp = expansion(src_w, src_h, ratio=0.25, **all_flags)
    width, height = target_size("480p", "auto", *canvas_size(src_w, src_h, exp))
    placement = outpaint_placement(src_w, src_h, exp, width, height, follow_canvas=True)
    _, mask = place(blocks(1, src_w, src_h), placement)
    assert _generated_sides(mask) == sides
    # The kept source is as large as the canvas allows: its share of the frame is the canvas's.
    ideal = src_w * src_h / (canvas_size(src_w, src_h, exp)[0] * canvas_size(src_w, src_h, exp)[1])
    assert kept_fraction(placement) == pytest.approx(ideal, abs=0.03)


def test_outpaint_auto_falls_back_to_containing_when_a_strip_rounds_away() -> None:
    # A 1-pixel strip on a 1280-wide source: the 16-pixel frame grid cannot show it on the requested side.
    exp = expansion(1280, 720, left=True, right=False, top=False, bottom=False, ratio=0.0005)
    width, height = target_size("480p", "auto", *canvas_size(1280, 720, exp))
    placement = outpaint_placement(1280, 720, exp, width, height, follow_canvas=True)
    assert placement == outpaint_placement(1280, 720, exp, width, height)


def test_fills_frame_tolerates_bands_thinner_than_a_latent_patch() -> None:
    assert fills_frame(reframe_placement(854, 480, 832, 480, 0.0))  # 6-pixel bands: rounding
    assert not fills_frame(reframe_placement(640, 480, 832, 480, 0.0))  # 4:3 in 16:9: 96-pixel bands
    assert fills_frame(reframe_placement(640, 480, 832, 480, 0.5))  # zoomed until it fills
    assert kept_fraction(reframe_placement(640, 480, 832, 480, 0.0)) == pytest.approx(640 / 832, abs=1e-3)


# --- reframe ------------------------------------------------------------------------------------------------


def test_reframe_landscape_into_portrait_is_letterboxed_top_and_bottom() -> None:
    # 2:1 source 64x32 into a 32x64 portrait frame: contained at scale 1/2 -> 32x16, rows 24..40.
    placement = reframe_placement(64, 32, 32, 64, 0.0)
    assert placement == Placement(32, 64, Box(0, 0, 64, 32), Box(0, 24, 32, 16))
    src = blocks(2, 64, 32, block=2)
    frames, mask = place(src, placement)
    np.testing.assert_array_equal(frames[:, 24:40], src[:, ::2, ::2])
    expected = np.full((2, 64, 32), 255, dtype=np.uint8)
    expected[:, 24:40] = 0
    np.testing.assert_array_equal(mask, expected)


def test_reframe_16_9_to_9_16_at_real_sizes() -> None:
    # 416x240 into 240x416: scale 240/416, picture 240 wide and round(240 * 240/416) = 138 high, centred.
    placement = reframe_placement(416, 240, 240, 416, 0.0)
    assert placement.crop == Box(0, 0, 416, 240)
    assert placement.dest == Box(0, (416 - 138) // 2, 240, 138)


def test_reframe_same_aspect_is_the_whole_frame() -> None:
    placement = reframe_placement(64, 32, 64, 32, 0.0)
    assert placement.dest == Box(0, 0, 64, 32) and placement.crop == Box(0, 0, 64, 32)
    src = blocks(1, 64, 32)
    frames, mask = place(src, placement)
    np.testing.assert_array_equal(frames, src)
    assert (mask == 0).all()


def test_zoom_one_is_a_2x_magnification_about_the_centre() -> None:
    # 64x32 into 32x64: contained scale 1/2, times 2 = 1. The frame shows the middle 32 columns at full size;
    # the height still fits, so bands of 16 rows stay above and below.
    placement = reframe_placement(64, 32, 32, 64, 1.0)
    assert placement.crop == Box(16, 0, 32, 32)
    assert placement.dest == Box(0, 16, 32, 32)
    src = blocks(1, 64, 32)
    frames, mask = place(src, placement)
    np.testing.assert_array_equal(frames[:, 16:48], src[:, :, 16:48])
    assert (mask[:, 16:48] == 0).all() and (mask[:, :16] == 255).all() and (mask[:, 48:] == 255).all()


def test_zoom_on_same_aspect_crops_the_centre_to_the_full_frame() -> None:
    # 64x32 into 64x32 with zoom 1: the middle 32x16 fills the frame, nothing left to generate.
    placement = reframe_placement(64, 32, 64, 32, 1.0)
    assert placement.crop == Box(16, 8, 32, 16) and placement.dest == Box(0, 0, 64, 32)
    _, mask = place(blocks(1, 64, 32), placement)
    assert (mask == 0).all()


@pytest.mark.parametrize("zoom", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_zoom_never_crops_more_than_half_of_a_side(zoom: float) -> None:
    for src, frame in (((416, 240), (240, 416)), ((240, 416), (416, 240)), ((1920, 1080), (1280, 720))):
        crop = reframe_placement(*src, *frame, zoom).crop
        assert crop.width >= src[0] // 2 and crop.height >= src[1] // 2


def test_zoom_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="zoom_factor"):
        reframe_placement(64, 32, 32, 64, 1.5)


def test_place_rejects_non_uint8_frames() -> None:
    with pytest.raises(ValueError, match="uint8"):
        place(np.zeros((1, 32, 64, 3), dtype=np.float32), reframe_placement(64, 32, 64, 32, 0.0))
