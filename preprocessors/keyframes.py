"""first_frame_url / last_frame_url: an image placed as a kept frame of the conditioning (VACE's first/last
frame extension: mask 0 = keep those pixels, the rest of the video is generated around them).

`transparency_mode` decides the image's transparent pixels: "white" / "black" fill them with that colour
and keep the whole frame; "content_aware" leaves them to be generated (gray, mask 1), keeping only the
opaque pixels. The kept pixels are pasted over the output frame after generation, so the output's first
(last) frame is the image itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocessors.conditioning import GRAY, Conditioning
from preprocessors.spatial import resize_cover

ALPHA_KEEP = 0.5  # content_aware: a pixel at least half opaque is kept


@dataclass(frozen=True)
class FrameImage:
    """One image at the generation size: its pixels and where they are kept."""

    index: int  # the frame it becomes, on the generated timeline
    pixels: np.ndarray  # uint8 (H, W, 3)
    keep: np.ndarray  # bool (H, W)


def frame_image(index: int, on_black: np.ndarray, on_white: np.ndarray, mode: str, width: int,
                height: int) -> FrameImage:
    """An image from its two composites (over black and over white; they differ exactly where it is
    transparent), scaled to cover `width` x `height` and centre-cropped like the input video."""
    if mode == "white":
        pixels, keep = on_white, np.ones(on_white.shape[:2], dtype=bool)
    elif mode == "black":
        pixels, keep = on_black, np.ones(on_black.shape[:2], dtype=bool)
    elif mode == "content_aware":
        # white - black = 255 * (1 - alpha) for every channel of a composite.
        alpha = 1.0 - (on_white.astype(np.float32) - on_black.astype(np.float32)).mean(axis=-1) / 255.0
        keep = alpha >= ALPHA_KEEP
        # The opaque colour: the composite over black divided by alpha, where there is some.
        safe = np.maximum(alpha, 1e-3)[..., None]
        pixels = np.clip(np.rint(on_black.astype(np.float32) / safe), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown transparency_mode {mode!r}")
    pixels = resize_cover(pixels[None], width, height)[0]
    keep_u8 = resize_cover((keep * np.uint8(255))[None].astype(np.uint8), width, height, nearest=True)[0]
    return FrameImage(index, pixels, keep_u8 > 0)


def place_frame_images(conditioning: Conditioning, source: np.ndarray, images: list[FrameImage]) -> None:
    """Write each image into the conditioning (and the source used for paste-back), in place."""
    for image in images:
        keep = image.keep
        video = conditioning.video[image.index]
        video[keep] = image.pixels[keep].astype(np.float32) / 255.0
        video[~keep] = GRAY
        conditioning.mask[image.index] = (~keep).astype(np.float32)
        source[image.index][keep] = image.pixels[keep]


def paste_frame_images(output: np.ndarray, images: list[FrameImage]) -> np.ndarray:
    """The output with each image's kept pixels copied over its frame."""
    if not images:
        return output
    output = output.copy()
    for image in images:
        if image.index < len(output):
            output[image.index][image.keep] = image.pixels[image.keep]
    return output
