"""Depth control video: Depth-Anything-V2 or MiDaS DPT-Hybrid through transformers.

VACE's depth annotator turns each frame's depth map into an image normalised per frame to 0..255 with
near = bright, replicated to 3 channels and resized back to the frame size. Both models predict
relative *inverse* depth (disparity: bigger = nearer), so min-max normalising their raw output already gives
near = bright; no inversion is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from preprocessors.annotators._common import (
    check_frames,
    default_dtype,
    require_folder,
    resolve_device,
    to_nchw,
)


def depth_to_image(depth: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Disparity maps (F, h, w), bigger = nearer -> uint8 (F, H, W, 3) with `size` = (H, W).

    Resized first (bilinear), then min-max normalised per frame, so every non-constant frame spans exactly
    0..255 at the output size. A constant frame (no depth information) becomes black.
    """
    depth = torch.as_tensor(depth)
    if depth.ndim != 3:
        raise ValueError(f"depth must be (F, h, w), got {tuple(depth.shape)}")
    depth = depth.float()
    if tuple(depth.shape[1:]) != tuple(size):
        depth = F.interpolate(depth[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = depth.amin(dim=(1, 2), keepdim=True)
    hi = depth.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    # Constant frames (up to float noise from resizing) would stretch that noise to 0..255: make them black.
    flat = span <= 1e-5 * torch.maximum(hi.abs(), lo.abs()) + 1e-12
    scaled = torch.where(flat, 0.0, (depth - lo) / torch.where(flat, 1.0, span) * 255.0)
    image = scaled.round().clamp_(0, 255).to(torch.uint8)
    return image[..., None].expand(-1, -1, -1, 3).cpu().numpy().copy()


class TransformersDepthEstimator:
    """Any transformers depth-estimation model whose output has `predicted_depth` as disparity."""

    def __init__(self, model, processor, device: torch.device, batch_size: int = 8) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.batch_size = batch_size
        self.dtype = next(model.parameters()).dtype

    @torch.inference_mode()
    def estimate(self, frames: np.ndarray) -> np.ndarray:
        check_frames(frames)
        size = frames.shape[1:3]
        out = []
        for start in range(0, len(frames), self.batch_size):
            chunk = to_nchw(frames[start : start + self.batch_size], self.device)
            # The folder's own image processor does the model's resize/normalise, on `device`.
            inputs = self.processor(images=chunk, return_tensors="pt", device=self.device)
            pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
            disparity = self.model(pixel_values=pixel_values).predicted_depth
            out.append(depth_to_image(disparity, size))
        return np.concatenate(out, axis=0)


_FILES = ("config.json", "preprocessor_config.json")


def _load(folder: Path, device, what: str, model_cls, batch_size: int) -> TransformersDepthEstimator:
    from transformers import AutoImageProcessor

    folder = require_folder(folder, what, _FILES)
    dev = resolve_device(device)
    model = model_cls.from_pretrained(folder, local_files_only=True, dtype=default_dtype(dev))
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    return TransformersDepthEstimator(model.to(dev).eval(), processor, dev, batch_size)


def load_depth_anything(folder: Path, device=None, batch_size: int = 8) -> TransformersDepthEstimator:
    """Depth-Anything-V2 in transformers layout (e.g. depth-anything/Depth-Anything-V2-Large-hf)."""
    from transformers import AutoModelForDepthEstimation

    return _load(folder, device, "Depth-Anything-V2", AutoModelForDepthEstimation, batch_size)


def load_midas(folder: Path, device=None, batch_size: int = 8) -> TransformersDepthEstimator:
    """MiDaS v3 DPT-Hybrid in transformers layout (Intel/dpt-hybrid-midas)."""
    from transformers import DPTForDepthEstimation

    return _load(folder, device, "MiDaS DPT-Hybrid", DPTForDepthEstimation, batch_size)
