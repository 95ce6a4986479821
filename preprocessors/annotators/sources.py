"""How each annotator model is fetched from where it is published (catalog.py says which fetcher is whose).

Hugging Face repositories go through huggingface_hub (resumable, cached); FILM's TorchScript file is a GitHub
release asset, RIFE comes from its author's Hugging Face repo as a zip whose `train_log/flownet.pkl` is
extracted, and DWPose's two ONNX files from the `pose/` folder of VACE's annotator repository. Each fetcher
fills the folder it is given. weights/README.md lists the sources and licences.
"""

from __future__ import annotations

import shutil
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

Fetcher = Callable[[Path], None]

TRANSFORMERS_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]


def hf_snapshot(repo: str, patterns: list[str]) -> Fetcher:
    def fetch(folder: Path) -> None:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id=repo, local_dir=folder, allow_patterns=patterns)

    return fetch


def hf_file(repo: str, filename: str) -> Fetcher:
    def fetch(folder: Path) -> None:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo_id=repo, filename=filename, local_dir=folder)

    return fetch


MIDAS_REPO = "Intel/dpt-hybrid-midas"


def midas(folder: Path) -> None:
    # Older snapshots of the repo hold only pytorch_model.bin: fall back to it, never fetch both.
    hf_snapshot(MIDAS_REPO, TRANSFORMERS_FILES)(folder)
    if not (folder / "model.safetensors").is_file():
        hf_snapshot(MIDAS_REPO, ["pytorch_model.bin"])(folder)


VACE_ANNOTATORS_REPO = "ali-vilab/VACE-Annotators"
DWPOSE_FILES = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")


def vace_pose(folder: Path) -> None:
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
FILM_FILE = "film_net_fp32.pt"  # loads on CPUs and GPUs alike (the fp16 file is for GPUs only)
# Practical-RIFE v4.26 (same IFNet layout as v4.25; preprocessors/interpolation/rife.py says what loads).
RIFE_REPO, RIFE_ZIP = "hzwer/RIFE", "RIFEv4.26_0921.zip"


def film(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{FILM_FILE}.part"
    with (urllib.request.urlopen(FILM_URL.format(name=FILM_FILE), timeout=60) as response,
          open(part, "wb") as out):
        shutil.copyfileobj(response, out, length=1 << 20)
    part.replace(folder / FILM_FILE)


def rife(folder: Path) -> None:
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
