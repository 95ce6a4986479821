"""Shared checks for the annotator modules: frame validation, model folders, devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DOWNLOAD_HINT = "Run `vace download --annotators` or pass the folder explicitly"


class AnnotatorNotFoundError(FileNotFoundError):
    """A model folder or file an annotator needs is missing."""


def require_folder(folder: Path, what: str, must_contain: tuple[str, ...] = ()) -> Path:
    """Return `folder` as a Path, or raise AnnotatorNotFoundError naming the download command."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise AnnotatorNotFoundError(f"No {what} model at {folder}. {DOWNLOAD_HINT}.")
    missing = [name for name in must_contain if not (folder / name).is_file()]
    if missing:
        raise AnnotatorNotFoundError(
            f"The {what} model folder {folder} lacks {', '.join(missing)}. {DOWNLOAD_HINT}."
        )
    return folder


def check_frames(frames: np.ndarray) -> None:
    """Raise ValueError unless `frames` is uint8 (F, H, W, 3) with F >= 1."""
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[-1] != 3
        or len(frames) == 0
    ):
        got = f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}"
        raise ValueError(f"frames must be uint8 (F, H, W, 3) with F >= 1, got {got}")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` means the first GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    # fp16 halves memory and time on GPUs; CPUs have slow half kernels.
    return torch.float16 if device.type == "cuda" else torch.float32


def to_nchw(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (F, H, W, 3) numpy -> uint8 (F, 3, H, W) tensor on `device` (the copy happens once, as uint8)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)
