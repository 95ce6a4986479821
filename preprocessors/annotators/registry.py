"""The worker's annotator models (depth, pose, interpolators, safety checker, prompt LLM, mask tracker).

Each is loaded on first use from its sub-folder of one annotators folder (the records in catalog.py say
which sub-folder and how to load it), on the worker's device, and kept for later jobs. A missing folder
raises AnnotatorNotFoundError naming `vace download --annotators`. With the tiny model the folder is
`<data_dir>/models/annotators` and each tiny model is built there on first use (the OpenPose one is a 210 MB
file, so nothing is built at worker start). `Annotators.offload()` frees the GPU memory they hold before the
14B pipeline runs.

Operator settings come from the environment (read once, when the worker starts):
- VACE_ANNOTATORS_DIR: the folder (default weights/annotators; ignored with the tiny model).
- VACE_DEPTH_MODEL: midas (default) or depth-anything-v2.
- VACE_POSE_MODEL: dwpose (default: VACE's own annotator, body + face) or openpose (body only).
- VACE_SAFETY_MISSING: warn (default: run unchecked, with a WARN line in the job's logs) or refuse.
- VACE_SAFETY_THRESHOLD: NSFW probability at or above which a video is flagged (default 0.5; 0 flags all).
- VACE_MASK_TRACKING: track (default: inpainting's mask_image_url marks an object in the first frame, which
  SAM 2.1 follows through the video) or static (the mask image applies unchanged to every frame).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from preprocessors.annotators import catalog
from preprocessors.annotators._common import DOWNLOAD_HINT, AnnotatorNotFoundError
from preprocessors.annotators.catalog import AnnotatorModel
from preprocessors.annotators.protocols import (
    DepthEstimator,
    MaskTracker,
    PoseAnnotator,
    SupportsPromptExpansion,
    SupportsSafetyCheck,
)

if TYPE_CHECKING:
    from preprocessors.interpolation.base import Interpolator

log = logging.getLogger(__name__)

DEFAULT_ANNOTATORS_DIR = Path("weights") / "annotators"
TINY_SUBDIR = Path("models") / "annotators"
# server/settings.py states these choices and defaults again for the API process, which cannot import this
# module (numpy); tests/server/test_settings_sources.py keeps the two equal.
# MiDaS by default: it is VACE's own `depth` annotator and Apache-2.0, while Depth-Anything-V2-Large (VACE's
# `depthv2`) is CC-BY-NC-4.0, not usable commercially.
DEFAULT_DEPTH_BACKEND = "midas"
# DWPose by default: it is VACE's own pose annotator (body + face) and Apache-2.0; OpenPose's body network
# draws no face and its weights are non-commercial.
DEFAULT_POSE_BACKEND = "dwpose"
SAFETY_MISSING_CHOICES = ("warn", "refuse")
DEFAULT_SAFETY_MISSING = "warn"
DEFAULT_SAFETY_THRESHOLD = 0.5
MASK_TRACKING_CHOICES = ("track", "static")
DEFAULT_MASK_TRACKING = "track"

# A control annotator turns uint8 (F, H, W, 3) frames into a control video of the same shape.
ControlAnnotator = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class AnnotatorConfig:
    root: Path | None  # None: no folder configured, every model is missing
    device: str | None = None  # None: CUDA when available, else CPU
    tiny: bool = False  # build tiny random models on first use
    depth_backend: str = DEFAULT_DEPTH_BACKEND
    pose_backend: str = DEFAULT_POSE_BACKEND
    safety_missing: str = DEFAULT_SAFETY_MISSING
    safety_threshold: float = DEFAULT_SAFETY_THRESHOLD
    mask_tracking: str = DEFAULT_MASK_TRACKING

    def __post_init__(self) -> None:
        if self.depth_backend not in catalog.choices("depth"):
            raise ValueError(f"VACE_DEPTH_MODEL must be one of {sorted(catalog.choices('depth'))}, "
                             f"got {self.depth_backend!r}")
        if self.pose_backend not in catalog.choices("pose"):
            raise ValueError(f"VACE_POSE_MODEL must be one of {sorted(catalog.choices('pose'))}, "
                             f"got {self.pose_backend!r}")
        if self.safety_missing not in SAFETY_MISSING_CHOICES:
            raise ValueError(f"VACE_SAFETY_MISSING must be one of {SAFETY_MISSING_CHOICES}, "
                             f"got {self.safety_missing!r}")
        if self.mask_tracking not in MASK_TRACKING_CHOICES:
            raise ValueError(f"VACE_MASK_TRACKING must be one of {MASK_TRACKING_CHOICES}, "
                             f"got {self.mask_tracking!r}")
        if not 0.0 <= self.safety_threshold <= 1.0:
            raise ValueError(f"VACE_SAFETY_THRESHOLD must be between 0 and 1, got {self.safety_threshold}")

    @classmethod
    def for_worker(cls, model: str, data_dir: Path, device: str | None,
                   environ: Mapping[str, str] = os.environ) -> AnnotatorConfig:
        """The worker's configuration: tiny annotators for the tiny model, else the operator's folder."""
        tiny = model == "tiny"
        root = Path(data_dir) / TINY_SUBDIR if tiny else Path(
            environ.get("VACE_ANNOTATORS_DIR") or DEFAULT_ANNOTATORS_DIR
        )
        threshold = environ.get("VACE_SAFETY_THRESHOLD")
        return cls(
            root=root, device=device, tiny=tiny,
            depth_backend=environ.get("VACE_DEPTH_MODEL") or DEFAULT_DEPTH_BACKEND,
            pose_backend=environ.get("VACE_POSE_MODEL") or DEFAULT_POSE_BACKEND,
            safety_missing=environ.get("VACE_SAFETY_MISSING") or DEFAULT_SAFETY_MISSING,
            safety_threshold=float(threshold) if threshold else DEFAULT_SAFETY_THRESHOLD,
            mask_tracking=environ.get("VACE_MASK_TRACKING") or DEFAULT_MASK_TRACKING,
        )


class Annotators:
    """Lazily loaded, cached annotator models for one worker (one job at a time: no locking needed)."""

    def __init__(self, config: AnnotatorConfig) -> None:
        self.config = config
        self._loaded: dict[str, Any] = {}
        self._gpu_bytes: dict[str, int] = {}  # what each loaded model added to torch's CUDA allocations

    def folder(self, name: str) -> Path:
        """The model's folder, built first in tiny mode; raises AnnotatorNotFoundError when absent."""
        if self.config.root is None:
            raise AnnotatorNotFoundError(f"No annotators folder is configured for the {name} model. "
                                         f"{DOWNLOAD_HINT}.")
        if self.config.tiny:
            from preprocessors.annotators.tiny import ensure_tiny_annotator

            return ensure_tiny_annotator(self.config.root, name)
        return self.config.root / name

    def depth(self) -> DepthEstimator:
        return self._get(catalog.choices("depth")[self.config.depth_backend])

    def pose(self) -> PoseAnnotator:
        return self._get(catalog.choices("pose")[self.config.pose_backend])

    def interpolator(self, model: str) -> Interpolator:
        interpolators = catalog.choices("interpolator")
        if model not in interpolators:
            raise ValueError(f"unknown interpolator {model!r}; known: {sorted(interpolators)}")
        return self._get(interpolators[model])

    def safety(self) -> SupportsSafetyCheck:
        return self._get(catalog.NSFW)

    def prompt_expander(self) -> SupportsPromptExpansion:
        return self._get(catalog.PROMPT_LLM)

    def tracker(self) -> MaskTracker:
        return self._get(catalog.SAM2)

    def loaded(self) -> list[str]:
        """Sub-folder names (catalog.py) of the models loaded now."""
        return list(self._loaded)

    def gpu_bytes(self) -> int:
        """GPU bytes the loaded models hold, as torch's allocator counted them while each loaded (0 on a CPU;
        onnxruntime's own allocations are outside torch's and already missing from the card's free memory)."""
        return sum(self._gpu_bytes.get(name, 0) for name in self._loaded)

    def offload(self) -> list[str]:
        """Free the GPU memory the annotators hold, e.g. before the 14B pipeline runs under a tight plan.

        On a GPU worker every loaded model is dropped (torch modules and DWPose's onnxruntime sessions alike;
        moving them to the CPU would only trade GPU memory for host memory), then the garbage collector runs
        and torch's CUDA cache is emptied. The next use loads the model again, on the GPU, from local files.
        On a CPU worker it keeps everything: there is no GPU memory to free. Returns the names dropped.
        """
        dropped = list(self._loaded) if self._uses_gpu() else []
        for name in dropped:
            del self._loaded[name]
        if dropped:
            gc.collect()
            log.info("Offloaded annotators %s", ", ".join(dropped))
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return dropped

    def _uses_gpu(self) -> bool:
        from preprocessors.annotators._common import resolve_device

        return resolve_device(self.config.device).type != "cpu"

    def _get(self, model: AnnotatorModel) -> Any:
        name = model.folder
        if name not in self._loaded:
            # Raises AnnotatorNotFoundError with the download command; nothing is cached then.
            before = _cuda_allocated()
            annotator = model.load(self.folder(name), self.config)
            log.info("Loaded annotator %s from %s", name, self.config.root)
            self._loaded[name] = annotator
            self._gpu_bytes[name] = max(0, _cuda_allocated() - before)
        return self._loaded[name]


def _cuda_allocated() -> int:
    """Bytes torch's CUDA allocator hands out now (0 without CUDA): the per-request memory check
    (pipelines/request_memory.py) counts the annotators left on the GPU from this."""
    import torch

    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
