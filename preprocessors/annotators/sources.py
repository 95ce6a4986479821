"""`vace download --annotators`: fetch each annotator model into its sub-folder of the annotators folder.

Sources and licences are listed in weights/README.md. Hugging Face repositories go through huggingface_hub
(resumable, cached); FILM's TorchScript file is a GitHub release asset, RIFE comes from its author's
Hugging Face repo as a zip whose `train_log/flownet.pkl` is extracted, and DWPose's two ONNX files from the
`pose/` folder of VACE's annotator repository.
"""

from __future__ import annotations

import shutil
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from preprocessors.annotators import layout


@dataclass(frozen=True)
class Source:
    what: str
    fetch: Callable[[Path], None]  # fills the given folder
    required: tuple[str, ...]  # files that must exist afterwards; "a|b" accepts either


def _hf_snapshot(repo: str, patterns: list[str]) -> Callable[[Path], None]:
    def fetch(folder: Path) -> None:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id=repo, local_dir=folder, allow_patterns=patterns)

    return fetch


def _hf_file(repo: str, filename: str) -> Callable[[Path], None]:
    def fetch(folder: Path) -> None:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo_id=repo, filename=filename, local_dir=folder)

    return fetch


_TRANSFORMERS = ["*.json", "*.safetensors", "*.txt", "*.model"]


def _midas(folder: Path) -> None:
    # Older snapshots of the repo hold only pytorch_model.bin: fall back to it, never fetch both.
    _hf_snapshot("Intel/dpt-hybrid-midas", _TRANSFORMERS)(folder)
    if not (folder / "model.safetensors").is_file():
        _hf_snapshot("Intel/dpt-hybrid-midas", ["pytorch_model.bin"])(folder)


VACE_ANNOTATORS_REPO = "ali-vilab/VACE-Annotators"
DWPOSE_FILES = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")


def _vace_pose(folder: Path) -> None:
    """VACE's own DWPose files (`pose/` of its annotator repository), moved up into `folder`."""
    from huggingface_hub import hf_hub_download

    folder.mkdir(parents=True, exist_ok=True)
    for name in DWPOSE_FILES:
        if (folder / name).is_file():
            continue
        path = Path(hf_hub_download(repo_id=VACE_ANNOTATORS_REPO, filename=f"pose/{name}", local_dir=folder))
        path.replace(folder / name)
    shutil.rmtree(folder / "pose", ignore_errors=True)


FILM_URL = "https://github.com/dajes/frame-interpolation-pytorch/releases/download/v1.0.0/{name}"
# Practical-RIFE v4.26 (same IFNet layout as v4.25; preprocessors/interpolation/rife.py says what loads).
RIFE_REPO, RIFE_ZIP = "hzwer/RIFE", "RIFEv4.26_0921.zip"


def _film(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = "film_net_fp32.pt"  # loads on CPUs and GPUs alike (the fp16 file is for GPUs only)
    part = folder / f".{name}.part"
    with urllib.request.urlopen(FILM_URL.format(name=name), timeout=60) as response, open(part, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)
    part.replace(folder / name)


def _rife(folder: Path) -> None:
    from huggingface_hub import hf_hub_download

    folder.mkdir(parents=True, exist_ok=True)
    archive = Path(hf_hub_download(repo_id=RIFE_REPO, filename=RIFE_ZIP))
    with zipfile.ZipFile(archive) as zf:
        # Skip Finder metadata (__MACOSX/...), should the archive carry any.
        member = next((n for n in zf.namelist() if not n.startswith("__MACOSX/")
                       and (n.endswith("/flownet.pkl") or n == "flownet.pkl")), None)
        if member is None:
            raise FileNotFoundError(f"{RIFE_REPO}/{RIFE_ZIP} has no flownet.pkl")
        part = folder / ".flownet.pkl.part"
        with zf.open(member) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, length=1 << 20)
    part.replace(folder / "flownet.pkl")


SOURCES: dict[str, Source] = {
    layout.MIDAS: Source("MiDaS DPT-Hybrid (depth, default)", _midas,
                         ("config.json", "preprocessor_config.json", "model.safetensors|pytorch_model.bin")),
    layout.DEPTH_ANYTHING: Source(
        "Depth-Anything-V2-Large (depth, VACE_DEPTH_MODEL=depth-anything-v2; CC-BY-NC-4.0)",
        _hf_snapshot("depth-anything/Depth-Anything-V2-Large-hf", _TRANSFORMERS),
        ("config.json", "preprocessor_config.json", "model.safetensors"),
    ),
    layout.DWPOSE: Source("DWPose: YOLOX-L person detector + RTMPose-l wholebody (pose, default)",
                          _vace_pose, DWPOSE_FILES),
    layout.OPENPOSE: Source("OpenPose body (pose, VACE_POSE_MODEL=openpose; non-commercial)",
                            _hf_file("lllyasviel/Annotators", "body_pose_model.pth"),
                            ("body_pose_model.pth",)),
    layout.FILM: Source("FILM (frame interpolation)", _film, ("film_net_fp32.pt",)),
    layout.RIFE: Source("RIFE v4.26 (frame interpolation)", _rife, ("flownet.pkl",)),
    layout.NSFW: Source("NSFW image classifier (safety checker)",
                        _hf_snapshot("Falconsai/nsfw_image_detection", _TRANSFORMERS),
                        ("config.json", "preprocessor_config.json", "model.safetensors")),
    layout.PROMPT_LLM: Source("Qwen2.5-3B-Instruct (prompt expansion)",
                              _hf_snapshot("Qwen/Qwen2.5-3B-Instruct", _TRANSFORMERS),
                              ("config.json", "tokenizer_config.json", "model.safetensors.index.json")),
}
# Depth-Anything-V2-Large and OpenPose are non-commercial and not the default backends: fetched only when
# asked for.
OPTIONAL_MODELS = (layout.DEPTH_ANYTHING, layout.OPENPOSE)
DEFAULT_MODELS = tuple(name for name in layout.ALL if name not in OPTIONAL_MODELS)


def missing_files(dest: Path, name: str) -> list[str]:
    folder = Path(dest) / name
    return [f"{name}/{entry}" for entry in SOURCES[name].required
            if not any((folder / f).is_file() for f in entry.split("|"))]


def download_annotators(dest: Path, models: Iterable[str] | None = None,
                        report: Callable[[str], None] = print) -> Path:
    """Fetch `models` (default: all but Depth-Anything-V2 and OpenPose) into `dest/<sub-folder>`.

    Returns dest.

    Folders already complete are skipped, so a rerun resumes. Raises FileNotFoundError naming what is
    still missing when a source lacks a required file.
    """
    dest = Path(dest)
    names = tuple(models) if models is not None else DEFAULT_MODELS
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown annotator model(s) {unknown}; known: {sorted(SOURCES)}")
    for name in names:
        if not missing_files(dest, name):
            report(f"{name}: already complete")
            continue
        report(f"{name}: downloading {SOURCES[name].what}")
        SOURCES[name].fetch(dest / name)
        missing = missing_files(dest, name)
        if missing:
            raise FileNotFoundError(f"{name} downloaded into {dest / name} but lacks: {', '.join(missing)}")
    return dest
