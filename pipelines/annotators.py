"""The worker's annotator models (depth, pose, interpolators, safety checker, prompt LLM).

Each is loaded on first use from its sub-folder of one annotators folder (names in
preprocessors/annotators/layout.py), on the worker's device, and kept for later jobs. A missing folder raises
AnnotatorNotFoundError naming `vace download --annotators`. With the tiny model the folder is
`<data_dir>/models/annotators` and each tiny model is built there on first use (the OpenPose one is a 210 MB
file, so nothing is built at worker start). `Annotators.offload()` frees the GPU memory they hold before the
14B pipeline runs.

Operator settings come from the environment (read once, when the worker starts):
- VACE_ANNOTATORS_DIR: the folder (default weights/annotators; ignored with the tiny model).
- VACE_DEPTH_MODEL: midas (default) or depth-anything-v2.
- VACE_POSE_MODEL: dwpose (default: VACE's own annotator, body + face) or openpose (body only).
- VACE_SAFETY_MISSING: warn (default: run unchecked, with a WARN line in the job's logs) or refuse.
- VACE_SAFETY_THRESHOLD: NSFW probability at or above which a video is flagged (default 0.5; 0 flags all).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from preprocessors.annotators import layout
from preprocessors.annotators._common import DOWNLOAD_HINT, AnnotatorNotFoundError

log = logging.getLogger(__name__)

DEFAULT_ANNOTATORS_DIR = Path("weights") / "annotators"
TINY_SUBDIR = Path("models") / "annotators"
# server/settings.py states these choices and defaults again for the API process, which cannot import this
# module (numpy); tests/server/test_settings_sources.py keeps the two equal.
# MiDaS by default: it is VACE's own `depth` annotator and Apache-2.0, while Depth-Anything-V2-Large (VACE's
# `depthv2`) is CC-BY-NC-4.0, not usable commercially.
DEPTH_BACKENDS = {"midas": layout.MIDAS, "depth-anything-v2": layout.DEPTH_ANYTHING}
DEFAULT_DEPTH_BACKEND = "midas"
# DWPose by default: it is VACE's own pose annotator (body + face) and Apache-2.0; OpenPose's body network
# draws no face and its weights are non-commercial.
POSE_BACKENDS = {"dwpose": layout.DWPOSE, "openpose": layout.OPENPOSE}
DEFAULT_POSE_BACKEND = "dwpose"
SAFETY_MISSING_CHOICES = ("warn", "refuse")
DEFAULT_SAFETY_MISSING = "warn"
DEFAULT_SAFETY_THRESHOLD = 0.5
INTERPOLATORS = {"rife": layout.RIFE, "film": layout.FILM}
# Real OpenPose (VACE_POSE_MODEL=openpose) detects at 512 px (controlnet-aux's default); the tiny mode's
# full-size random network would take 1-2 s per 832x480 frame on a CPU there, and its output is noise anyway.
POSE_DETECT_RESOLUTION = 512
TINY_POSE_DETECT_RESOLUTION = 128
TINY_PROMPT_MAX_NEW_TOKENS = 24  # the tiny LLM's words are random: a short expansion shows the path works

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

    def __post_init__(self) -> None:
        if self.depth_backend not in DEPTH_BACKENDS:
            raise ValueError(f"VACE_DEPTH_MODEL must be one of {sorted(DEPTH_BACKENDS)}, "
                             f"got {self.depth_backend!r}")
        if self.pose_backend not in POSE_BACKENDS:
            raise ValueError(f"VACE_POSE_MODEL must be one of {sorted(POSE_BACKENDS)}, "
                             f"got {self.pose_backend!r}")
        if self.safety_missing not in SAFETY_MISSING_CHOICES:
            raise ValueError(f"VACE_SAFETY_MISSING must be one of {SAFETY_MISSING_CHOICES}, "
                             f"got {self.safety_missing!r}")
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
        )


class Annotators:
    """Lazily loaded, cached annotator models for one worker (one job at a time: no locking needed)."""

    def __init__(self, config: AnnotatorConfig) -> None:
        self.config = config
        self._loaded: dict[str, Any] = {}

    def folder(self, name: str) -> Path:
        """The model's folder, built first in tiny mode; raises AnnotatorNotFoundError when absent."""
        if self.config.root is None:
            raise AnnotatorNotFoundError(f"No annotators folder is configured for the {name} model. "
                                         f"{DOWNLOAD_HINT}.")
        if self.config.tiny:
            from preprocessors.annotators.tiny import ensure_tiny_annotator

            return ensure_tiny_annotator(self.config.root, name)
        return self.config.root / name

    def control(self, task: str) -> ControlAnnotator:
        """The depth or pose annotator as a frames -> control video function."""
        if task == "depth":
            return self.depth().estimate
        if task == "pose":
            return self.pose().annotate
        raise ValueError(f"no control annotator for task {task!r}")

    def depth(self) -> Any:
        name = DEPTH_BACKENDS[self.config.depth_backend]

        def load() -> Any:
            from preprocessors.annotators.depth import load_depth_anything, load_midas

            loader = load_midas if name == layout.MIDAS else load_depth_anything
            return loader(self.folder(name), self.config.device)

        return self._get(name, load)

    def pose(self) -> Any:
        name = POSE_BACKENDS[self.config.pose_backend]

        def load() -> Any:
            if name == layout.DWPOSE:
                from preprocessors.annotators.dwpose import load_dwpose

                return load_dwpose(self.folder(name), self.config.device)
            from preprocessors.annotators.pose_detect import load_openpose_body

            resolution = TINY_POSE_DETECT_RESOLUTION if self.config.tiny else POSE_DETECT_RESOLUTION
            return load_openpose_body(self.folder(name), self.config.device, resolution)

        return self._get(name, load)

    def interpolator(self, model: str) -> Any:
        if model not in INTERPOLATORS:
            raise ValueError(f"unknown interpolator {model!r}; known: {sorted(INTERPOLATORS)}")
        name = INTERPOLATORS[model]

        def load() -> Any:
            if name == layout.RIFE:
                from preprocessors.interpolation.rife import load_rife

                return load_rife(self.folder(name), self.config.device)
            from preprocessors.interpolation.film import load_film

            return load_film(self.folder(name), self.config.device)

        return self._get(name, load)

    def safety(self) -> Any:
        def load() -> Any:
            from preprocessors.annotators.safety import load_safety_checker

            return load_safety_checker(self.folder(layout.NSFW), self.config.device,
                                       threshold=self.config.safety_threshold)

        return self._get(layout.NSFW, load)

    def prompt_expander(self) -> Any:
        def load() -> Any:
            from preprocessors.annotators.prompt_expansion import MAX_NEW_TOKENS, load_prompt_expander

            tokens = TINY_PROMPT_MAX_NEW_TOKENS if self.config.tiny else MAX_NEW_TOKENS
            return load_prompt_expander(self.folder(layout.PROMPT_LLM), self.config.device, tokens)

        return self._get(layout.PROMPT_LLM, load)

    def loaded(self) -> list[str]:
        """Names (layout folders) of the models loaded now."""
        return list(self._loaded)

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

    def _get(self, name: str, load: Callable[[], Any]) -> Any:
        if name not in self._loaded:
            model = load()  # raises AnnotatorNotFoundError with the download command; nothing is cached
            log.info("Loaded annotator %s from %s", name, self.config.root)
            self._loaded[name] = model
        return self._loaded[name]
