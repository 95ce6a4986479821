"""The ``video`` and ``mask`` WanVACEPipeline receives, per task.

Float arrays rather than uint8/PIL because VACE was trained with "missing" pixels at exactly 0 in [-1, 1],
i.e. 127.5/255, which uint8 cannot hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Mid-gray in [0, 1]: maps to exactly 0 in the pipeline's [-1, 1] range, the value VACE was trained with
# for "no information here" (ali-vilab/VACE#107). 128 would be slightly off.
GRAY = 0.5


@dataclass
class Conditioning:
    """Inputs for one generation, both at the generation's exact frame count and size."""

    video: np.ndarray  # float32 (F, H, W, 3) in [0, 1]
    mask: np.ndarray  # float32 (F, H, W) in {0, 1}; 1 = generate, 0 = keep


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (F, H, W, 3) with F >= 1, got {frames.dtype} {frames.shape}")


def _to_unit(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) / np.float32(255)


def control_conditioning(frames_uint8: np.ndarray) -> Conditioning:
    """Depth/pose control video used as is: the model should generate everywhere, so the mask is all ones."""
    _check_frames(frames_uint8)
    mask = np.ones(frames_uint8.shape[:3], dtype=np.float32)
    return Conditioning(video=_to_unit(frames_uint8), mask=mask)


def inpainting_conditioning(frames_uint8: np.ndarray, mask_uint8_binary: np.ndarray) -> Conditioning:
    """Source video with the region to regenerate (mask == 255) grayed out, plus that region as the mask.

    Graying the hole matters: the pipeline feeds ``video * mask`` to the model too, so leaving the
    original pixels there leaks what should be replaced (e.g. subtitles come back).
    """
    _check_frames(frames_uint8)
    if mask_uint8_binary.dtype != np.uint8 or mask_uint8_binary.ndim != 3:
        raise ValueError(
            f"mask must be uint8 (F, H, W), got {mask_uint8_binary.dtype} {mask_uint8_binary.shape}"
        )
    if len(mask_uint8_binary) != len(frames_uint8):
        raise ValueError(
            f"the mask has {len(mask_uint8_binary)} frames but the video has {len(frames_uint8)}; "
            "resample both to the same length first"
        )
    if mask_uint8_binary.shape[1:] != frames_uint8.shape[1:3]:
        mh, mw = mask_uint8_binary.shape[1:]
        vh, vw = frames_uint8.shape[1:3]
        raise ValueError(
            f"the mask is {mw}x{mh} but the video is {vw}x{vh}; resize both to the same size first"
        )
    if np.any((mask_uint8_binary != 0) & (mask_uint8_binary != 255)):
        raise ValueError("the mask must contain only 0 and 255; pass it through binarize_mask first")

    generate = mask_uint8_binary == 255
    video = _to_unit(frames_uint8)
    video[generate] = GRAY
    return Conditioning(video=video, mask=generate.astype(np.float32))
