"""The common interpolation API and the frame bookkeeping every backend shares.

`interpolate(frames, factor)` inserts `factor` new frames between each pair of neighbours: N frames become
(N - 1) * (factor + 1) + 1, and original frame i is copied unchanged to index i * (factor + 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import numpy as np
import torch


class Interpolator(Protocol):
    def interpolate(self, frames: np.ndarray, factor: int) -> np.ndarray:
        """uint8 (N, H, W, 3) -> uint8 ((N - 1) * (factor + 1) + 1, H, W, 3)."""
        ...


def output_length(num_frames: int, factor: int) -> int:
    return (num_frames - 1) * (factor + 1) + 1


def check_input(frames: np.ndarray, factor: int) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) with N >= 1, got {frames.dtype} {frames.shape}")
    if not isinstance(factor, int) or factor < 0:
        raise ValueError(f"factor must be a non-negative int, got {factor!r}")


class PairInterpolator(ABC):
    """Backends implement `_between`: the frames at times `ts` in (0, 1) between batches of neighbours."""

    device: torch.device

    @abstractmethod
    def _between(self, img0: torch.Tensor, img1: torch.Tensor, ts: list[float]) -> list[torch.Tensor]:
        """img0, img1: float (B, 3, H, W) in [0, 1] on `device` -> one such tensor per t."""

    batch_size: int = 4

    @torch.inference_mode()
    def interpolate(self, frames: np.ndarray, factor: int) -> np.ndarray:
        check_input(frames, factor)
        n, h, w, _ = frames.shape
        out = np.empty((output_length(n, factor), h, w, 3), dtype=np.uint8)
        step = factor + 1
        out[::step] = frames  # originals are copied, never re-rendered
        if factor == 0 or n == 1:
            return out
        ts = [j / step for j in range(1, step)]
        for start in range(0, n - 1, self.batch_size):
            stop = min(start + self.batch_size, n - 1)
            pair = torch.from_numpy(frames[start : stop + 1]).to(self.device)
            pair = pair.permute(0, 3, 1, 2).float() / 255
            mids = self._between(pair[:-1], pair[1:], ts)
            for j, mid in enumerate(mids, start=1):
                img = (mid.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                out[start * step + j : stop * step : step] = img
        return out
