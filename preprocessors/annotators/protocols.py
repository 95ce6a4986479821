"""What the worker calls on each kind of annotator model: the registry (registry.py) returns these.

Each model module's class satisfies one of them structurally (depth.py's `TransformersDepthEstimator`,
dwpose.py's `DWPoseDetector` and pose_detect.py's `OpenPoseBodyDetector`, safety.py's `SafetyChecker`,
prompt_expansion.py's `PromptExpander`,
mask_tracking.py's `Sam2MaskTracker`); interpolators follow preprocessors/interpolation/base.py's
`Interpolator`. Frames are uint8 numpy arrays (F, H, W, 3) throughout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from preprocessors.annotators.safety import SafetyVerdict


class DepthEstimator(Protocol):
    def estimate(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (F, H, W, 3) frames -> uint8 (F, H, W, 3) depth images (near = bright)."""
        ...


class PoseAnnotator(Protocol):
    def annotate(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (F, H, W, 3) frames -> uint8 (F, H, W, 3) pose drawings on black."""
        ...


class SupportsSafetyCheck(Protocol):
    def check_frames(self, frames: np.ndarray, sample: int = ...) -> SafetyVerdict:
        """Whether a video is unsafe, judged on `sample` of its frames, evenly spaced."""
        ...


class SupportsPromptExpansion(Protocol):
    def expand_prompt(self, prompt: str, task: str | None = None) -> str:
        """A longer, more detailed prompt for the same video, written for `task`."""
        ...


class MaskTracker(Protocol):
    def track(self, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
        """uint8 (F, H, W, 3) frames and a uint8 0/255 (H, W) object mask in frame 0 -> uint8 0/255
        (F, H, W) masks of that object in every frame."""
        ...
