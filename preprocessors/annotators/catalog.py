"""Every annotator model, described once: one `AnnotatorModel` record each.

A record names the model's sub-folder of the annotators folder (e.g. weights/annotators/), where its files
come from, which files make a complete folder, its tiny random stand-in and how the worker loads it.
`vace download --annotators` (download.py), the worker's registry (registry.py) and the tiny builders
(tiny.py) all read these records, so adding an annotator means adding one record here plus its module.
Nothing here imports a model library: tiny builders and loaders import their module when called.
weights/README.md lists each model's source, files, size and licence for operators.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from preprocessors.annotators import sources

if TYPE_CHECKING:
    from preprocessors.annotators.registry import AnnotatorConfig

Role = Literal["depth", "pose", "interpolator", "safety", "prompt", "tracker"]

# Real OpenPose (VACE_POSE_MODEL=openpose) detects at 512 px (controlnet-aux's default); the tiny mode's
# full-size random network would take 1-2 s per 832x480 frame on a CPU there, and its output is noise anyway.
POSE_DETECT_RESOLUTION = 512
TINY_POSE_DETECT_RESOLUTION = 128
TINY_PROMPT_MAX_NEW_TOKENS = 24  # the tiny LLM's words are random: a short expansion shows the path works


@dataclass(frozen=True)
class AnnotatorModel:
    """One annotator model: everything the download command, the worker and the tiny mode need to know."""

    folder: str  # its sub-folder of the annotators folder, and its name in `vace download --models`
    role: Role
    choice: str | None  # its name in VACE_DEPTH_MODEL, VACE_POSE_MODEL or interpolator_model; None: no choice
    description: str  # printed by `vace download --annotators` while it downloads
    licence: str  # the model card's (weights/README.md has the details)
    in_default_download: bool  # False: fetched only when named
    required_files: tuple[str, ...]  # what a complete folder holds; "a|b" accepts either
    fetch: Callable[[Path], None]  # fills the given folder from the model's source
    build_tiny: Callable[[Path], Path]  # writes a tiny random stand-in in the same layout, returns the folder
    load: Callable[[Path, AnnotatorConfig], Any]  # the folder -> the annotator the worker uses


@dataclass(frozen=True)
class Deferred:
    """`preprocessors.<module>.<function>`, imported when first called (model libraries load slowly)."""

    module: str
    function: str

    def resolve(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(f"preprocessors.{self.module}"), self.function)

    def __call__(self, *args: Any) -> Any:
        return self.resolve()(*args)


@dataclass(frozen=True)
class OnDevice(Deferred):
    """A deferred loader whose only setting is the device: `function(folder, device)`."""

    def __call__(self, folder: Path, config: AnnotatorConfig) -> Any:
        return self.resolve()(folder, config.device)


def _load_openpose(folder: Path, config: AnnotatorConfig) -> Any:
    from preprocessors.annotators.pose_detect import load_openpose_body

    resolution = TINY_POSE_DETECT_RESOLUTION if config.tiny else POSE_DETECT_RESOLUTION
    return load_openpose_body(folder, config.device, resolution)


def _load_safety(folder: Path, config: AnnotatorConfig) -> Any:
    from preprocessors.annotators.safety import load_safety_checker

    return load_safety_checker(folder, config.device, threshold=config.safety_threshold)


def _load_prompt_expander(folder: Path, config: AnnotatorConfig) -> Any:
    from preprocessors.annotators.prompt_expansion import MAX_NEW_TOKENS, load_prompt_expander

    tokens = TINY_PROMPT_MAX_NEW_TOKENS if config.tiny else MAX_NEW_TOKENS
    return load_prompt_expander(folder, config.device, tokens)


_TRANSFORMERS_LAYOUT = ("config.json", "preprocessor_config.json", "model.safetensors")

DEPTH_ANYTHING = AnnotatorModel(
    folder="depth-anything-v2-large", role="depth", choice="depth-anything-v2",
    description="Depth-Anything-V2-Large (depth, VACE_DEPTH_MODEL=depth-anything-v2; CC-BY-NC-4.0)",
    licence="CC-BY-NC-4.0", in_default_download=False,  # non-commercial, and not the default depth model
    required_files=_TRANSFORMERS_LAYOUT,
    fetch=sources.hf_snapshot("depth-anything/Depth-Anything-V2-Large-hf", sources.TRANSFORMERS_FILES),
    build_tiny=Deferred("annotators.tiny", "build_tiny_depth_anything"),
    load=OnDevice("annotators.depth", "load_depth_anything"),
)
MIDAS = AnnotatorModel(
    folder="dpt-hybrid-midas", role="depth", choice="midas",
    description="MiDaS DPT-Hybrid (depth, default)",
    licence="Apache-2.0", in_default_download=True,
    required_files=("config.json", "preprocessor_config.json", "model.safetensors|pytorch_model.bin"),
    fetch=sources.midas,
    build_tiny=Deferred("annotators.tiny", "build_tiny_midas"),
    load=OnDevice("annotators.depth", "load_midas"),
)
DWPOSE = AnnotatorModel(
    folder="dwpose", role="pose", choice="dwpose",
    description="DWPose: YOLOX-L person detector + RTMPose-l wholebody (pose, default)",
    licence="Apache-2.0", in_default_download=True,
    required_files=sources.DWPOSE_FILES,
    fetch=sources.vace_pose,
    build_tiny=Deferred("annotators.tiny_dwpose", "build_tiny_dwpose"),
    load=OnDevice("annotators.dwpose", "load_dwpose"),
)
OPENPOSE = AnnotatorModel(
    folder="openpose", role="pose", choice="openpose",
    description="OpenPose body (pose, VACE_POSE_MODEL=openpose; non-commercial)",
    licence="CMU OpenPose licence: non-commercial", in_default_download=False,  # and not the default pose
    required_files=("body_pose_model.pth",),
    fetch=sources.hf_file("lllyasviel/Annotators", "body_pose_model.pth"),
    build_tiny=Deferred("annotators.tiny", "build_tiny_openpose_body"),
    load=_load_openpose,
)
FILM = AnnotatorModel(
    folder="film", role="interpolator", choice="film",
    description="FILM (frame interpolation)",
    licence="Apache-2.0", in_default_download=True,
    required_files=(sources.FILM_FILE,),
    fetch=sources.film,
    build_tiny=Deferred("annotators.tiny", "build_tiny_film"),
    load=OnDevice("interpolation.film", "load_film"),
)
RIFE = AnnotatorModel(
    folder="rife", role="interpolator", choice="rife",
    description="RIFE v4.26 (frame interpolation)",
    licence="MIT", in_default_download=True,
    required_files=("flownet.pkl",),
    fetch=sources.rife,
    build_tiny=Deferred("annotators.tiny", "build_tiny_rife"),
    load=OnDevice("interpolation.rife", "load_rife"),
)
NSFW = AnnotatorModel(
    folder="nsfw-image-detection", role="safety", choice=None,
    description="NSFW image classifier (safety checker)",
    licence="Apache-2.0", in_default_download=True,
    required_files=_TRANSFORMERS_LAYOUT,
    fetch=sources.hf_snapshot("Falconsai/nsfw_image_detection", sources.TRANSFORMERS_FILES),
    build_tiny=Deferred("annotators.tiny", "build_tiny_nsfw_classifier"),
    load=_load_safety,
)
PROMPT_LLM = AnnotatorModel(
    folder="qwen2.5-3b-instruct", role="prompt", choice=None,
    description="Qwen2.5-3B-Instruct (prompt expansion)",
    licence="Qwen Research licence: non-commercial", in_default_download=True,
    required_files=("config.json", "tokenizer_config.json", "model.safetensors.index.json"),
    fetch=sources.hf_snapshot("Qwen/Qwen2.5-3B-Instruct", sources.TRANSFORMERS_FILES),
    build_tiny=Deferred("annotators.tiny", "build_tiny_prompt_llm"),
    load=_load_prompt_expander,
)

SAM2 = AnnotatorModel(
    folder="sam2.1-hiera-large", role="tracker", choice=None,
    description="SAM 2.1 Hiera-L (mask tracking for inpainting's mask_image_url)",
    # VACE's own tracker (its masktrack mode); Apache-2.0, 224M parameters. EdgeTAM is 16x smaller but
    # tracks less well; SAM 3's tracker is gated behind its own licence.
    licence="Apache-2.0", in_default_download=True,
    required_files=("config.json", "processor_config.json", "model.safetensors"),
    fetch=sources.hf_snapshot("facebook/sam2.1-hiera-large", sources.TRANSFORMERS_FILES),
    build_tiny=Deferred("annotators.tiny_sam2", "build_tiny_sam2"),
    load=OnDevice("annotators.mask_tracking", "load_sam2_tracker"),
)

ALL: tuple[AnnotatorModel, ...] = (
    DEPTH_ANYTHING, MIDAS, DWPOSE, OPENPOSE, FILM, RIFE, NSFW, PROMPT_LLM, SAM2,
)


def by_folder(folder: str) -> AnnotatorModel:
    """The record whose sub-folder is `folder`; KeyError naming the known ones otherwise."""
    for model in ALL:
        if model.folder == folder:
            return model
    raise KeyError(f"unknown annotator model {folder!r}; known: {sorted(m.folder for m in ALL)}")


def choices(role: Role) -> dict[str, AnnotatorModel]:
    """The models of `role` by the name operators and requests choose them by."""
    return {model.choice: model for model in ALL if model.role == role and model.choice is not None}
