"""`resolution: "auto"`: the preset a request gets from its input's size.

Rule (this server's reading; fal publishes none): the largest preset whose short side (240, 352, 480, 576,
720 pixels: preprocessors/sizing.py's sizes) is not above the input's short side, from 240p up to 720p; an
input smaller than 240p gets 240p. So nothing is upscaled past its own detail, and a 1080p input gets 720p.
"""

from __future__ import annotations

from preprocessors.sizing import RESOLUTION_SIZES

AUTO = "auto"
# Each preset's short side, smallest first (the 1:1 sizes: both sides equal the short side).
_SHORT_SIDES: list[tuple[int, str]] = sorted(
    (size[0], name) for name, size in RESOLUTION_SIZES["1:1"].items()
)


def auto_resolution(width: int, height: int) -> str:
    """The preset name for an input of `width` x `height`."""
    short = min(width, height)
    chosen = _SHORT_SIDES[0][1]
    for side, name in _SHORT_SIDES:
        if side <= short:
            chosen = name
    return chosen


def resolve_resolution(resolution: str, width: int, height: int) -> str:
    """`resolution` itself, or for "auto" the preset of an input of `width` x `height`."""
    return auto_resolution(width, height) if resolution == AUTO else resolution
