"""Depth control video: Depth-Anything-V2 or MiDaS DPT-Hybrid through transformers.

VACE's depth annotator turns each frame's depth map into an image normalised per frame to 0..255 with
near = bright, replicated to 3 channels and resized back to the frame size. Both models predict
relative *inverse* depth (disparity: bigger = nearer), so min-max normalising their raw output already gives
near = bright; no inversion is needed.
"""

from __future__ import annotations

from pathlib import Path

import cv2
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
from preprocessors.annotators.pose_render import vace_canvas_size


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


# VACE's depth annotator runs MiDaS on the frame with its short side at most this long (vace/annotators/
# depth.py): the frame's own size up to 1024, sides rounded to multiples of 64.
VACE_DEPTH_MAX_SHORT_SIDE = 1024


def vace_depth_size(height: int, width: int) -> tuple[int, int]:
    """(H, W) VACE's MiDaS sees a ``height x width`` frame at: 832x480 -> 832x512, 1280x720 -> 1280x704."""
    return vace_canvas_size(height, width, min(VACE_DEPTH_MAX_SHORT_SIDE, height, width))


class TransformersDepthEstimator:
    """Any transformers depth-estimation model whose output has `predicted_depth` as disparity.

    With ``native_size`` the frames are resized to `vace_depth_size` (area averaging, as VACE does) and
    the processor only normalises them; otherwise the folder's own processor resizes them too.
    """

    def __init__(self, model, processor, device: torch.device, batch_size: int = 8,
                 native_size: bool = False) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.batch_size = batch_size
        self.native_size = native_size
        self.hybrid = bool(getattr(model.config, "is_hybrid", False))  # DPT-Hybrid: see hybrid_disparity
        self.dtype = next(model.parameters()).dtype

    @torch.inference_mode()
    def estimate(self, frames: np.ndarray) -> np.ndarray:
        check_frames(frames)
        size = frames.shape[1:3]
        model_size = vace_depth_size(*size) if self.native_size else None
        out = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start : start + self.batch_size]
            if model_size is not None and model_size != size:
                target = (model_size[1], model_size[0])
                chunk = np.stack([cv2.resize(f, target, interpolation=cv2.INTER_AREA) for f in chunk])
            # The folder's own image processor does the model's normalisation (and resize), on `device`.
            resize = {"do_resize": False} if model_size is not None else {}
            inputs = self.processor(images=to_nchw(chunk, self.device), return_tensors="pt",
                                    device=self.device, **resize)
            pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
            out.append(depth_to_image(self._disparity(pixel_values), size))
        return np.concatenate(out, axis=0)

    def _disparity(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not self.hybrid:
            return self.model(pixel_values=pixel_values).predicted_depth
        return hybrid_disparity(self.model, pixel_values)


def hybrid_disparity(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """DPT-Hybrid (MiDaS v3) at any size whose sides are multiples of 16.

    transformers' DPTForDepthEstimation runs the hybrid model at its config's square image_size only: the
    embeddings refuse other sizes unless asked to interpolate their position embeddings (which DPTModel
    never asks), and the neck then reshapes the tokens as a square grid. The original MiDaS, which VACE
    runs, interpolates the position embeddings bilinearly to the token grid (`forward_flex`). This is
    DPTForDepthEstimation.forward's hybrid path with both fixed: the same weights and layers, the position
    embeddings interpolated by the embeddings' own `_resize_pos_embed`, the grid passed to the neck.
    """
    height, width = pixel_values.shape[-2:]
    patch = model.config.patch_size
    if height % patch or width % patch:
        raise ValueError(f"DPT-Hybrid needs sides that are multiples of {patch}, got {width}x{height}")
    embeddings = model.dpt.embeddings
    original = embeddings.image_size
    embeddings.image_size = (height, width)  # the size check; the embeddings resize to any grid anyway
    try:
        outputs = model.dpt(pixel_values, output_hidden_states=True)
    finally:
        embeddings.image_size = original
    # As DPTForDepthEstimation.forward does for hybrids: the backbone's early maps, then the chosen layers.
    hidden_states = list(outputs.intermediate_activations)
    hidden_states += [feature for index, feature in enumerate(outputs.hidden_states[1:])
                      if index in model.config.backbone_out_indices[2:]]
    features = model.neck(hidden_states, height // patch, width // patch)
    return model.head(features)


_FILES = ("config.json", "preprocessor_config.json")


def _load(folder: Path, device, what: str, model_cls, batch_size: int,
          native_size: bool = False) -> TransformersDepthEstimator:
    from transformers import AutoImageProcessor

    folder = require_folder(folder, what, _FILES)
    dev = resolve_device(device)
    model = model_cls.from_pretrained(folder, local_files_only=True, dtype=default_dtype(dev))
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    return TransformersDepthEstimator(model.to(dev).eval(), processor, dev, batch_size, native_size)


def load_depth_anything(folder: Path, device=None, batch_size: int = 8) -> TransformersDepthEstimator:
    """Depth-Anything-V2 in transformers layout (e.g. depth-anything/Depth-Anything-V2-Large-hf)."""
    from transformers import AutoModelForDepthEstimation

    return _load(folder, device, "Depth-Anything-V2", AutoModelForDepthEstimation, batch_size)


def load_midas(folder: Path, device=None, batch_size: int = 8) -> TransformersDepthEstimator:
    """MiDaS v3 DPT-Hybrid in transformers layout (Intel/dpt-hybrid-midas), run as VACE runs it: at the
    frame's own aspect ratio and near its size (`vace_depth_size`), not squashed to its config's 384x384."""
    from transformers import DPTForDepthEstimation

    return _load(folder, device, "MiDaS DPT-Hybrid", DPTForDepthEstimation, batch_size, native_size=True)
