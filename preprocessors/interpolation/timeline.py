"""Reframe's temporal factors as frame bookkeeping: which input frames are generated, how many come out.

The request's own timing (fps F, N frames) is the *base* timeline. `temporal_downsample_factor` d keeps
every (d+1)-th base frame for generation; `temporal_upsample_factor` u asks for u more in-betweens. fal
applies one upsample step per downsample step automatically, so the generated frames are interpolated by
d + u new frames per gap. The output keeps the base duration:

- generated: indices 0, k, 2k, ... (k = d+1) until the last base frame is covered (held if past the end),
  M = ceil((N-1)/k) + 1 frames at F/k fps;
- output: fps F * (d+u+1) / k, frames floor((N-1) * (d+u+1) / k) + 1 (the in-betweens past the last base
  frame are trimmed).

With u = 0 the output is exactly the base timeline (N frames at F); with d = 0 it is N frames made
(u+1) times denser: (N-1)*(u+1)+1 frames at F*(u+1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def output_frames(num_frames: int, downsample: int = 0, upsample: int = 0) -> int:
    """Frames out for N base frames with factors d and u: floor((N-1) * (d+u+1) / (d+1)) + 1."""
    return (num_frames - 1) * (downsample + upsample + 1) // (downsample + 1) + 1


@dataclass(frozen=True)
class Timeline:
    fps: float  # base fps F
    num_frames: int  # base length N
    downsample: int = 0  # d
    upsample: int = 0  # u

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.fps <= 0 or self.downsample < 0 or self.upsample < 0:
            raise ValueError(f"invalid timeline {self}")

    @property
    def keep_every(self) -> int:
        return self.downsample + 1

    @property
    def factor(self) -> int:
        """New frames inserted between each pair of generated frames."""
        return self.downsample + self.upsample

    @property
    def generated_frames(self) -> int:
        return -(-(self.num_frames - 1) // self.keep_every) + 1

    @property
    def generated_fps(self) -> float:
        return self.fps / self.keep_every

    @property
    def output_frames(self) -> int:
        return output_frames(self.num_frames, self.downsample, self.upsample)

    @property
    def output_fps(self) -> float:
        return self.fps * (self.factor + 1) / self.keep_every

    def key_indices(self) -> list[int]:
        """Base-frame indices that are generated (the last one held when the step overshoots)."""
        last = self.num_frames - 1
        return [min(i * self.keep_every, last) for i in range(self.generated_frames)]

    def keyframes(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) != self.num_frames:
            raise ValueError(f"expected {self.num_frames} base frames, got {len(frames)}")
        return frames[self.key_indices()]
