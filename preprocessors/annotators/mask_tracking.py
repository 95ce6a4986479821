"""Mask tracking for inpainting's `mask_image_url`: the mask marks an object in the first frame, and a video
segmentation model follows that object through the video (fal: "salient mask tracking").

The model is SAM 2.1 (Hiera-L) through transformers' `Sam2VideoModel`, the tracker VACE itself uses for its
`masktrack` inpainting mode (`sam2/sam2.1_hiera_large.pt`), Apache-2.0. It is given the first frame's mask as
its prompt, propagates it forward through every frame, and its masks are dilated slightly (DILATE_FRACTION
of the short side): a tracked outline hugs the object, and the generated region must also cover its soft
edges and the pixels the model's low-resolution masks (a quarter of 1024 px) miss.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from preprocessors.annotators._common import check_frames, require_folder, resolve_device
from preprocessors.annotators.protocols import MaskTracker

OBJECT_ID = 1
DILATE_FRACTION = 0.01  # of the frame's short side: 5 px at 480p, 7 px at 720p
MIN_DILATE_PX = 2


def dilate_masks(masks: np.ndarray, fraction: float = DILATE_FRACTION) -> np.ndarray:
    """Grow each uint8 0/255 mask of ``(F, H, W)`` by ``fraction`` of the short side (at least
    MIN_DILATE_PX pixels), with an elliptical kernel so corners round off as a brush would draw them."""
    radius = max(MIN_DILATE_PX, round(fraction * min(masks.shape[1:3])))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return np.stack([cv2.dilate(mask, kernel) for mask in masks])


class Sam2MaskTracker:
    """transformers' SAM 2 video model and processor, on one device."""

    def __init__(self, model, processor, device: torch.device) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = next(model.parameters()).dtype

    @torch.inference_mode()
    def track(self, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
        """uint8 ``(F, H, W, 3)`` frames and the object's uint8 0/255 ``(H, W)`` mask in frame 0 -> uint8
        0/255 ``(F, H, W)`` masks of that object in every frame (before dilation)."""
        check_frames(frames)
        count, height, width = frames.shape[:3]
        if first_mask.shape != (height, width):
            raise ValueError(f"the first mask is {first_mask.shape[::-1]}, the frames {width}x{height}")
        session = self.processor.init_video_session(video=list(frames), inference_device=self.device,
                                                    dtype=self.dtype)
        self.processor.add_inputs_to_inference_session(inference_session=session, frame_idx=0,
                                                       obj_ids=OBJECT_ID, input_masks=first_mask > 0)
        out = np.zeros((count, height, width), dtype=np.uint8)
        for output in self.model.propagate_in_video_iterator(session, start_frame_idx=0):
            masks = self.processor.post_process_masks([output.pred_masks], original_sizes=[[height, width]],
                                                      binarize=True)[0]
            out[output.frame_idx] = np.where(masks[0, 0].cpu().numpy(), np.uint8(255), np.uint8(0))
        return out


def track_mask(tracker: MaskTracker, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
    """The object of ``first_mask`` followed through ``frames`` and dilated: uint8 0/255 ``(F, H, W)``."""
    return dilate_masks(tracker.track(frames, first_mask))


_FILES = ("config.json", "processor_config.json", "model.safetensors")


def load_sam2_tracker(folder: Path, device=None) -> Sam2MaskTracker:
    """SAM 2.1 in transformers layout (e.g. facebook/sam2.1-hiera-large)."""
    from transformers import Sam2VideoModel, Sam2VideoProcessor

    folder = require_folder(folder, "SAM 2.1 mask tracking", _FILES)
    dev = resolve_device(device)
    # bfloat16 on GPUs, as SAM 2 is published to run (fp16's range is narrower); float32 on the CPU.
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = Sam2VideoModel.from_pretrained(folder, local_files_only=True, dtype=dtype)
    processor = Sam2VideoProcessor.from_pretrained(folder, local_files_only=True)
    return Sam2MaskTracker(model.to(dev).eval(), processor, dev)
