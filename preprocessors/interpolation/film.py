"""FILM through its TorchScript export (dajes/frame-interpolation-pytorch: `film_net_fp16.pt`, `..._fp32.pt`).

Checked against that repository's README and `inference.py` / `util.py` (commit
33bf477ea2c65a2ed1b5f2280ee1f02be06910e8): the scripted model is called as `model(img0, img1, dt)` with img
tensors (B, 3, H, W) in [0, 1] and dt (B, 1), all in the model's dtype, and returns (B, 3, H, W). Inputs are
zero-padded, centred, to a multiple of 64 (`util.load_image(align=64)`, as Google's own FILM eval does) and
the result is cropped back; every prediction is clamped to [0, 1] before it is returned or reused.

FILM was trained for the midpoint, so in-betweens come from recursion as in the export's `inference.py`:
repeatedly, of the times still missing, the one nearest the middle of an interval between two frames already
known is made from that interval's ends (dt = its relative position). When `factor + 1` is a power of two
this is plain bisection (every call at dt = 0.5).
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F

from preprocessors.annotators._common import (
    require_folder,
    resolve_device,
)
from preprocessors.interpolation.base import PairInterpolator

FILM_FILES = ("film_net_fp16.pt", "film_net_fp32.pt")
# The image pyramid has 7 levels (6 halvings): the export's own inference pads to a multiple of 64 (align=64).
PAD_MULTIPLE = 64


class FilmInterpolator(PairInterpolator):
    def __init__(self, model: torch.jit.ScriptModule, device: torch.device, batch_size: int = 4) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        param = next(iter(model.parameters()), None)
        self.dtype = param.dtype if param is not None else torch.float32

    def _run(self, img0: torch.Tensor, img1: torch.Tensor, t: float) -> torch.Tensor:
        h, w = img0.shape[-2:]
        ph, pw = -h % PAD_MULTIPLE, -w % PAD_MULTIPLE
        top, left = ph // 2, pw // 2
        pad = (left, pw - left, top, ph - top)
        a = F.pad(img0, pad).to(self.dtype)
        b = F.pad(img1, pad).to(self.dtype)
        dt = torch.full((len(a), 1), t, device=self.device, dtype=self.dtype)
        return self.model(a, b, dt)[..., top : top + h, left : left + w].float().clamp(0, 1)

    def _between(self, img0, img1, ts):
        step = len(ts) + 1
        frames = {0: img0, step: img1}
        for left, target, right in recursion_order(step):
            frames[target] = self._run(frames[left], frames[right], (target - left) / (right - left))
        return [frames[j] for j in range(1, step)]


def recursion_order(step: int) -> list[tuple[int, int, int]]:
    """(left, target, right) frame indices out of 0..step, in the order FILM makes them.

    Each time, among the missing indices and the known neighbours around them, the one whose relative
    position is nearest 0.5 is made next (ties: the leftmost), so dt stays as close to FILM's 0.5 as it can.
    """
    known, order = [0, step], []
    missing = list(range(1, step))
    while missing:
        best = None
        for left, right in itertools.pairwise(known):
            for target in missing:
                if left < target < right:
                    distance = abs(Fraction(target - left, right - left) - Fraction(1, 2))
                    if best is None or distance < best[0]:
                        best = (distance, left, target, right)
        _, left, target, right = best
        order.append((left, target, right))
        missing.remove(target)
        known = sorted((*known, target))
    return order


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
