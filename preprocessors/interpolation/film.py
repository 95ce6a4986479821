"""FILM through its TorchScript export (dajes/frame-interpolation-pytorch: `film_net_fp16.pt`, `..._fp32.pt`).

The scripted model is called as `model(img0, img1, dt)` with img tensors (B, 3, H, W) in [0, 1] and dt
(B, 1). FILM was trained for the midpoint, so when `factor + 1` is a power of two the in-betweens are made by
recursive bisection (every call at dt = 0.5); other factors ask for each time directly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from preprocessors.annotators._common import (
    require_folder,
    resolve_device,
)
from preprocessors.interpolation.base import PairInterpolator

FILM_FILES = ("film_net_fp16.pt", "film_net_fp32.pt")
# The feature pyramid halves the image several times; padding to a multiple of this keeps every level whole.
PAD_MULTIPLE = 64


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class FilmInterpolator(PairInterpolator):
    def __init__(self, model: torch.jit.ScriptModule, device: torch.device, batch_size: int = 4) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        param = next(iter(model.parameters()), None)
        self.dtype = param.dtype if param is not None else torch.float32

    def _run(self, img0: torch.Tensor, img1: torch.Tensor, t: float) -> torch.Tensor:
        h, w = img0.shape[-2:]
        pad = (0, -w % PAD_MULTIPLE, 0, -h % PAD_MULTIPLE)
        a = F.pad(img0, pad, mode="replicate").to(self.dtype)
        b = F.pad(img1, pad, mode="replicate").to(self.dtype)
        dt = torch.full((len(a), 1), t, device=self.device, dtype=self.dtype)
        return self.model(a, b, dt)[..., :h, :w].float()

    def _between(self, img0, img1, ts):
        step = len(ts) + 1
        if not _is_power_of_two(step):
            return [self._run(img0, img1, t) for t in ts]
        frames = {0: img0, step: img1}
        span = step
        while span > 1:  # fill midpoints level by level: 1/2, then 1/4 and 3/4, ...
            for left in range(0, step, span):
                frames[left + span // 2] = self._run(frames[left], frames[left + span], 0.5)
            span //= 2
        return [frames[j] for j in range(1, step)]


def load_film(folder: Path, device=None, batch_size: int = 4) -> FilmInterpolator:
    """Load the TorchScript FILM file from `folder` (fp16 on GPUs, fp32 otherwise, whichever exists)."""
    dev = resolve_device(device)
    folder = require_folder(folder, "FILM")
    order = FILM_FILES if dev.type == "cuda" else FILM_FILES[::-1]
    path = next((folder / name for name in order if (folder / name).is_file()), None)
    if path is None:
        from preprocessors.annotators._common import DOWNLOAD_HINT, AnnotatorNotFoundError

        raise AnnotatorNotFoundError(f"No {' or '.join(FILM_FILES)} in {folder}. {DOWNLOAD_HINT}.")
    model = torch.jit.load(str(path), map_location=dev).eval()
    if dev.type != "cuda":
        model = model.float()  # CPUs lack fast fp16 kernels; the fp16 file still works
    return FilmInterpolator(model, dev, batch_size)
