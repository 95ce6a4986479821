"""Where the source video lands in the output frame for outpainting and reframe, and painting it there.

Both tasks reduce to one geometry: a window of the source (all of it, or a centred crop for reframe's zoom) is
scaled and pasted as a rectangle inside the target frame; everything outside that rectangle is new area the
model generates (mask 255, grayed out later by ``inpainting_conditioning``).

- Outpainting: the source plus its expansion strips forms a larger canvas (pad per side =
  ``round(expand_ratio * source width)`` left/right, ``* source height`` top/bottom). The canvas is CONTAINED
  in the target (scaled to fit, centred), never cropped, so no source pixel and no requested strip is lost;
  any leftover band from the aspect-ratio mismatch is generated too, like the strips.
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


def outpaint_placement(src_w: int, src_h: int, exp: Expansion, width: int, height: int) -> Placement:
    """Contain the enlarged canvas in ``width x height`` (centred) and return where the source lands."""
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
