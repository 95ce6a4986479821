"""The small typed vocabulary the runner's steps pass to each other (server/worker/runner.py).

Each step takes and returns one of these, so a step can be read, tested or replaced on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from preprocessors.conditioning import Conditioning
from preprocessors.interpolation.timeline import Timeline
from preprocessors.video_io import VideoInfo
from server.worker.progress import Progress

log = logging.getLogger("vace.execute")

# (resolution, aspect_ratio, input width, input height) -> (width, height) to generate at.
SizeRule = Callable[[str, str, int, int], tuple[int, int]]


@dataclass(frozen=True)
class JobHooks:
    """How a running job talks back to its worker: log lines, cancellation, warnings."""

    log: Callable[[str], None]
    should_cancel: Callable[[], bool]
    warn: Callable[[str], None] | None = None  # a WARN line in the job's logs; defaults to `log`
    # Phases, steps and previews (server/worker/progress.py); by default one that logs through `log`.
    progress: Progress = field(default_factory=Progress)
    # Store a preview image's bytes under a file name, return its URL (server/worker/loop.py); None: no
    # previews.
    store_preview: Callable[[bytes, str], str] | None = None
    preview_every: int = 0  # denoising steps between previews; 0: none

    def __post_init__(self) -> None:
        self.progress.attach_log(self.log)

    def warning(self, message: str) -> None:
        log.warning(message)  # the operator sees it in the worker's log too
        (self.warn or self.log)(message)


@dataclass(frozen=True)
class Timing:
    """Where the output lands in time: its fps and how many frames the user gets."""

    fps: float
    num_frames: int


@dataclass(frozen=True)
class FittedInput:
    """The input video fitted to the output fps and length (size untouched), the frames to generate from
    (reframe keeps every (d+1)-th), and the reference images."""

    info: VideoInfo  # the container's own claims, for the log line
    timing: Timing  # the output's base timeline (before reframe's interpolation)
    timeline: Timeline
    frames: np.ndarray  # uint8 (F, H, W, 3), F = timeline.generated_frames
    references: list[np.ndarray]  # uint8 (H, W, 3) each

    @property
    def generated(self) -> Timing:
        return Timing(fps=self.timeline.generated_fps, num_frames=self.timeline.generated_frames)


@dataclass(frozen=True)
class Conditioned:
    """A task's conditioning at the generation size, plus the source pixels there (for paste-back)."""

    conditioning: Conditioning
    source: np.ndarray  # uint8 (F, H, W, 3): what the kept (mask 0) pixels were
    width: int
    height: int


@dataclass(frozen=True)
class Generated:
    """A job's output before encoding: exactly the frames the MP4 will hold."""

    task: str
    frames: np.ndarray  # uint8 (F, H, W, 3), trimmed to the requested length (and pasted back if asked)
    timing: Timing
    prompt: str
    seed: int
