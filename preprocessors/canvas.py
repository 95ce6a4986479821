"""Where the source video lands in the output frame for outpainting and reframe, and painting it there.

Both tasks reduce to one geometry: a window of the source (all of it, or a centred crop for reframe's zoom) is
scaled and pasted as a rectangle inside the target frame; everything outside that rectangle is new area the
model generates (mask 255, grayed out later by ``inpainting_conditioning``).

- Outpainting: the source plus its expansion strips forms a larger canvas (pad per side =
  ``round(expand_ratio * source width)`` left/right, ``* source height`` top/bottom). With an explicit aspect
  ratio the canvas is CONTAINED in the target (scaled to fit, centred), never cropped, so no source pixel and
  no requested strip is lost; any leftover band from the aspect-ratio mismatch is generated too, like the
  strips. With ``aspect_ratio: auto`` the target already has the canvas's aspect ratio
  (preprocessors/sizing.py), and only the requested sides are generated.
- Reframe: the source is contained in the target frame, then magnified by ``1 + zoom_factor`` about the
  centre; whatever then falls outside the frame is cut off. ``zoom_factor=1`` is a 2x zoom (half of each side
  of the contained picture stays visible), so even the maximum never crops everything away.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

KEEP, GENERATE = np.uint8(0), np.uint8(255)


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Placement:
    """Paste ``crop`` (source pixels), scaled, into ``dest`` (target pixels) of a ``width x height`` frame."""

    width: int
    height: int
    crop: Box
    dest: Box


@dataclass(frozen=True)
class Expansion:
    """Outpainting strip widths in source pixels."""

    left: int
    right: int
    top: int
    bottom: int


def expansion(src_w: int, src_h: int, *, left: bool, right: bool, top: bool, bottom: bool,
              ratio: float) -> Expansion:
    """Strip widths of the requested sides: ``ratio`` of the source width (left/right) or height (top/bottom).

    A requested side with ``ratio > 0`` gets at least one pixel, so a tiny ratio never silently means "none".
    """
    def pad(requested: bool, side: int) -> int:
        return max(1, round(ratio * side)) if requested and ratio > 0 else 0

    return Expansion(pad(left, src_w), pad(right, src_w), pad(top, src_h), pad(bottom, src_h))


def canvas_size(src_w: int, src_h: int, exp: Expansion) -> tuple[int, int]:
    """The enlarged canvas in source pixels (its orientation picks the target size for aspect_ratio=auto)."""
    return src_w + exp.left + exp.right, src_h + exp.top + exp.bottom


def outpaint_placement(src_w: int, src_h: int, exp: Expansion, width: int, height: int, *,
                       follow_canvas: bool = False) -> Placement:
    """Where the source lands in a ``width x height`` frame.

    By default (an explicit aspect ratio) the enlarged canvas is contained in the frame and centred, so a
    band left over where the two aspect ratios differ is generated too. With ``follow_canvas`` (the frame
    was sized to the canvas's own aspect ratio, ``aspect_ratio: auto``) only the requested sides are
    generated: the source spans every axis that has no requested side, and the small rounding slack goes
    to the requested sides in proportion to their strips.
    """
    if follow_canvas:
        fitted = _placement_on_requested_sides(src_w, src_h, exp, width, height)
        if fitted is not None:
            return fitted
    canvas_w, canvas_h = canvas_size(src_w, src_h, exp)
    scale = min(width / canvas_w, height / canvas_h)
    # The scaled canvas, centred; the source sits inside it at its scaled strip offsets.
    placed_w, placed_h = min(width, round(canvas_w * scale)), min(height, round(canvas_h * scale))
    origin_x, origin_y = (width - placed_w) // 2, (height - placed_h) // 2
    x, y = origin_x + round(exp.left * scale), origin_y + round(exp.top * scale)
    w, h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    # Rounding may push the source one pixel past the canvas edge; pull it back inside the frame.
    w, h = min(w, width - x), min(h, height - y)
    return Placement(width, height, Box(0, 0, src_w, src_h), Box(x, y, w, h))


def _placement_on_requested_sides(src_w: int, src_h: int, exp: Expansion, width: int,
                                  height: int) -> Placement | None:
    """The source scaled so that every frame pixel outside it lies on a requested side, or None when the
    frame cannot hold it so (e.g. a 1-pixel strip lost to the rounding of the frame to 16 pixels)."""
    canvas_w, canvas_h = canvas_size(src_w, src_h, exp)
    horizontal, vertical = exp.left + exp.right > 0, exp.top + exp.bottom > 0
    if horizontal and vertical:
        scale = min(width / canvas_w, height / canvas_h)
    elif horizontal:
        scale = height / src_h  # no top/bottom strip: the source spans the height
    elif vertical:
        scale = width / src_w
    else:
        return None
    w, h = min(width, max(1, round(src_w * scale))), min(height, max(1, round(src_h * scale)))
    slack_x, slack_y = width - w, height - h
    if (slack_x and not horizontal) or (slack_y and not vertical):
        return None
    if (horizontal and not slack_x) or (vertical and not slack_y):
        return None  # a requested side would get nothing
    x = round(slack_x * exp.left / (exp.left + exp.right)) if horizontal else 0
    y = round(slack_y * exp.top / (exp.top + exp.bottom)) if vertical else 0
    return Placement(width, height, Box(0, 0, src_w, src_h), Box(x, y, w, h))


def reframe_placement(src_w: int, src_h: int, width: int, height: int, zoom_factor: float) -> Placement:
    """Contain the source in ``width x height``, magnify it by ``1 + zoom_factor`` about the centre and clip
    it to the frame."""
    if not 0.0 <= zoom_factor <= 1.0:
        raise ValueError(f"zoom_factor must be in [0, 1], got {zoom_factor}")
    scale = min(width / src_w, height / src_h) * (1.0 + zoom_factor)
    # The visible source window: all of a side that still fits, else the centred part the frame shows.
    crop_w, crop_h = min(src_w, max(1, round(width / scale))), min(src_h, max(1, round(height / scale)))
    crop = Box((src_w - crop_w) // 2, (src_h - crop_h) // 2, crop_w, crop_h)
    w, h = min(width, max(1, round(crop_w * scale))), min(height, max(1, round(crop_h * scale)))
    return Placement(width, height, crop, Box((width - w) // 2, (height - h) // 2, w, h))


def kept_fraction(placement: Placement) -> float:
    """The share of the frame the source covers (mask "keep"); the rest is generated."""
    dest = placement.dest
    return dest.width * dest.height / (placement.width * placement.height)


def fills_frame(placement: Placement, tolerance: int = 16) -> bool:
    """Whether the source covers the frame but for bands narrower than ``tolerance`` pixels per axis.

    16 pixels is one latent patch (VAE x8, patch 2x2): a thinner band is rounding, not new picture, so a
    reframe that leaves only such bands has nothing to generate (e.g. 854x480 into 832x480)."""
    dest = placement.dest
    return placement.width - dest.width < tolerance and placement.height - dest.height < tolerance


def place(frames: np.ndarray, placement: Placement) -> tuple[np.ndarray, np.ndarray]:
    """Paint uint8 ``(F, H, W, 3)`` source frames into the target frame.

    Returns ``(frames, mask)``: uint8 ``(F, height, width, 3)`` with the scaled crop at ``dest`` and black
    elsewhere (``inpainting_conditioning`` grays that out), and uint8 ``(F, height, width)`` that is 0 over
    the source and 255 everywhere else.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (F, H, W, 3) with F >= 1, got {frames.dtype} {frames.shape}")
    crop, dest = placement.crop, placement.dest
    if crop.x + crop.width > frames.shape[2] or crop.y + crop.height > frames.shape[1]:
        raise ValueError(f"crop {crop} does not fit in {frames.shape[2]}x{frames.shape[1]} frames")
    count = len(frames)
    out = np.zeros((count, placement.height, placement.width, 3), dtype=np.uint8)
    mask = np.full((count, placement.height, placement.width), GENERATE, dtype=np.uint8)
    window = frames[:, crop.y : crop.y + crop.height, crop.x : crop.x + crop.width]
    rows, cols = slice(dest.y, dest.y + dest.height), slice(dest.x, dest.x + dest.width)
    out[:, rows, cols] = _resize(window, dest.width, dest.height)
    mask[:, rows, cols] = KEEP
    return out, mask


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to exactly ``width x height`` (aspect is already right up to rounding): area to shrink, cubic to
    enlarge, as preprocessors/spatial.py does."""
    src_h, src_w = frames.shape[1:3]
    if (src_w, src_h) == (width, height):
        return frames
    shrink = width * height < src_w * src_h
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in frames])
