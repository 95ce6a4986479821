"""Output size and length rules: fal's resolution/aspect-ratio presets and the pipeline's 4k+1 frame grid."""

from __future__ import annotations

import math

# (width, height) for landscape 16:9. Every side is a multiple of 16 because WanVACEPipeline rejects
# anything else (VAE x8 downsampling times the 2x2 patch). 580p is 1024x576: 580 is not a multiple of 16.
_LANDSCAPE: dict[str, tuple[int, int]] = {
    "240p": (416, 240),
    "360p": (640, 352),
    "480p": (832, 480),
    "580p": (1024, 576),
    "720p": (1280, 720),
}

RESOLUTION_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "16:9": dict(_LANDSCAPE),
    "9:16": {name: (h, w) for name, (w, h) in _LANDSCAPE.items()},
    "1:1": {
        "240p": (240, 240),
        "360p": (352, 352),
        "480p": (480, 480),
        "580p": (576, 576),
        "720p": (720, 720),
    },
}

AUTO_ASPECT_RATIO = "auto"
SIDE_MULTIPLE = 16


def target_size(resolution: str, aspect_ratio: str, input_width: int, input_height: int) -> tuple[int, int]:
    """The (width, height) to generate at: the one place a preset and an aspect ratio become a size.

    An explicit ``aspect_ratio`` (16:9, 9:16, 1:1) is the preset table's entry. ``auto`` keeps the input's
    own aspect ratio (``input_width x input_height``: the video, or outpainting's enlarged canvas) at the
    16:9 preset's pixel area, as VACE sizes its inputs (``keep_aspect_size``), so nothing is cropped beyond
    the rounding to multiples of 16.
    """
    sizes = RESOLUTION_SIZES.get(aspect_ratio)
    if sizes is None and aspect_ratio != AUTO_ASPECT_RATIO:
        choices = ", ".join([*RESOLUTION_SIZES, AUTO_ASPECT_RATIO])
        raise ValueError(f"unknown aspect_ratio {aspect_ratio!r}; expected one of: {choices}")
    if resolution not in _LANDSCAPE:
        raise ValueError(f"unknown resolution {resolution!r}; expected one of: {', '.join(_LANDSCAPE)}")
    if sizes is not None:
        return sizes[resolution]
    preset_w, preset_h = _LANDSCAPE[resolution]
    return keep_aspect_size(preset_w * preset_h, input_width, input_height)


def orientation_aspect_ratio(width: int, height: int) -> str:
    """The preset of the input's orientation: 16:9 for landscape, 9:16 for portrait, a square as landscape.

    Reframe's ``auto``: reframing to the input's own aspect ratio would leave nothing to generate."""
    _check_positive(width, height)
    return "16:9" if width >= height else "9:16"


# How far (as |log| of the ratio of ratios) a size's aspect ratio may stray from the input's: 832x480, the
# 480p preset, is itself 2.5% off 16:9 (and 2.6% off 854x480), the cover-crop 16:9 video already accepts.
ASPECT_TOLERANCE = 0.03
# Inputs more elongated than this get this ratio (and are cover-cropped to it): a 100:1 strip would
# otherwise become a 16-pixel-high video, far outside anything the model was trained on.
MAX_ASPECT_RATIO = 6.0


def keep_aspect_size(area: int, width: int, height: int) -> tuple[int, int]:
    """The largest size of at most ``area`` pixels, sides multiples of 16, whose aspect ratio is within
    ASPECT_TOLERANCE of ``width:height``'s (the closest one when no size is: tiny areas). Ratios beyond
    MAX_ASPECT_RATIO count as MAX_ASPECT_RATIO.

    Largest first keeps the model's token budget (the preset's area, as VACE keeps its ``max_area``), and it
    reproduces every preset: a 16:9 input gets exactly 832x480, 1280x720, ... under ``auto`` as under 16:9.
    """
    _check_positive(width, height)
    cells = area // (SIDE_MULTIPLE * SIDE_MULTIPLE)
    if cells < 1:
        raise ValueError(f"area must hold at least one {SIDE_MULTIPLE}x{SIDE_MULTIPLE} cell, got {area}")
    ratio = math.log(min(MAX_ASPECT_RATIO, max(width, height) / min(width, height)))  # long / short
    best: tuple[bool, int, float, int, int] | None = None
    for short in range(1, math.isqrt(cells) + 1):
        # For this short side, the long side nearest the input's ratio and the longest within tolerance.
        nearest = min(cells // short, max(short, round(short * math.exp(ratio))))
        widest = min(cells // short, math.floor(short * math.exp(ratio + ASPECT_TOLERANCE)))
        for long in {nearest, max(short, widest)}:
            error = abs(math.log(long / short) - ratio)
            within = error <= ASPECT_TOLERANCE
            # Within tolerance: the largest area (then the smaller error); otherwise the smaller error.
            key = (within, short * long if within else 0, -error, short, long)
            if best is None or key > best:
                best = key
    assert best is not None
    short_px, long_px = best[3] * SIDE_MULTIPLE, best[4] * SIDE_MULTIPLE
    return (long_px, short_px) if width >= height else (short_px, long_px)


def _check_positive(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"input size must be positive, got {width}x{height}")


def pipeline_num_frames(n: int) -> int:
    """The smallest ``4k+1 >= n``.

    WanVACEPipeline silently rounds other counts *down* (and then crashes if the control video is
    longer), so we round up ourselves, pad the control video to this length and trim the output back.
    """
    if n < 1:
        raise ValueError(f"frame count must be at least 1, got {n}")
    return (n + 2) // 4 * 4 + 1
