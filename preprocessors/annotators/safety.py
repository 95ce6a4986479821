"""NSFW check on a few evenly spaced frames, with a transformers image classifier from a local folder.

Made for the layout of Falconsai/nsfw_image_detection (a ViT with labels `normal` / `nsfw`), but any
`AutoModelForImageClassification` folder works whose id2label names the unsafe classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from preprocessors.annotators._common import (
    check_frames,
    default_dtype,
    require_folder,
    resolve_device,
    to_nchw,
)

UNSAFE_LABELS = frozenset({"nsfw"})
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class SafetyVerdict:
    flagged: bool
    score: float  # the highest unsafe probability among the sampled frames
    frame_index: int  # the input frame with that score


def sample_indices(num_frames: int, sample: int) -> list[int]:
    """`sample` evenly spaced frame indices including the first and the last (all frames if fewer)."""
    if num_frames < 1 or sample < 1:
        raise ValueError(f"need at least one frame and one sample, got {num_frames} and {sample}")
    if sample >= num_frames:
        return list(range(num_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, sample)})


class SafetyChecker:
    def __init__(
        self,
        model,
        processor,
        device: torch.device,
        threshold: float = DEFAULT_THRESHOLD,
        unsafe_labels: frozenset[str] = UNSAFE_LABELS,
    ) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.threshold = threshold
        self.dtype = next(model.parameters()).dtype
        labels = {int(i): str(name).lower() for i, name in model.config.id2label.items()}
        self.unsafe_ids = sorted(i for i, name in labels.items() if name in unsafe_labels)
        if not self.unsafe_ids:
            names = sorted(labels.values())
            raise ValueError(f"none of the model's labels {names} is in {sorted(unsafe_labels)}")

    @torch.inference_mode()
    def unsafe_scores(self, frames: np.ndarray) -> np.ndarray:
        """Probability mass on the unsafe labels, one float per frame (all frames in one batch)."""
        check_frames(frames)
        inputs = self.processor(images=to_nchw(frames, self.device), return_tensors="pt", device=self.device)
        logits = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype)).logits
        probs = logits.float().softmax(dim=-1)
        return probs[:, self.unsafe_ids].sum(dim=-1).cpu().numpy()

    def check_frames(self, frames: np.ndarray, sample: int = 8) -> SafetyVerdict:
        check_frames(frames)
        indices = sample_indices(len(frames), sample)
        scores = self.unsafe_scores(frames[indices])
        worst = int(np.argmax(scores))
        score = float(scores[worst])
        return SafetyVerdict(flagged=score >= self.threshold, score=score, frame_index=indices[worst])


def load_safety_checker(
    folder: Path, device=None, threshold: float = DEFAULT_THRESHOLD, unsafe_labels=UNSAFE_LABELS
) -> SafetyChecker:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder = require_folder(folder, "NSFW classifier", ("config.json", "preprocessor_config.json"))
    dev = resolve_device(device)
    model = AutoModelForImageClassification.from_pretrained(
        folder, local_files_only=True, dtype=default_dtype(dev)
    )
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    return SafetyChecker(model.to(dev).eval(), processor, dev, threshold, frozenset(unsafe_labels))
