"""Inputs onto disk and into frames: fetch, probe against the operator's caps, decode, fit in time.

Containers are probed (first frame only) and images' headers read before anything is decoded, so an input
over a cap (server/contract/limits.py) fails before it costs memory.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from preprocessors.temporal import fit_length, resample_fps
from preprocessors.video_io import (
    IMAGE_FORMATS,  # the plugins read_image allows
    ImageDecodeError,
    VideoDecodeError,
    VideoInfo,
    probe_video,
    read_image,
    read_video,
)
from server.contract.errors import InputError
from server.contract.inputs import WanVACEInput
from server.contract.limits import InputLimits, output_length_field
from server.contract.timing import interpolation_field
from server.worker.fetch import Fetcher
from server.worker.tasks import TaskPlan
from server.worker.types import FittedInput, Timing

MAX_FRAMES = 241  # the schema's upper bound; also bounds match_input_num_frames


class InputReader:
    """One job's inputs: fetched into `scratch`, checked against `limits`, decoded."""

    def __init__(self, fetcher: Fetcher, limits: InputLimits, scratch: Path) -> None:
        self.fetcher = fetcher
        self.limits = limits
        self.scratch = scratch

    def video(self, url: str, field: str) -> tuple[Path, VideoInfo]:
        """Fetch and probe: the container's claims, checked before read_video runs."""
        path = self.fetcher.fetch(url, field, self.scratch)
        try:
            info = probe_video(path)
        except VideoDecodeError as exc:
            raise InputError(field, str(exc), "unsupported_video_format") from exc
        self.limits.check_video(field, info.width, info.height, info.num_frames, info.duration)
        return path, info

    def frames(self, path: Path, field: str, src_fps: float, timing: Timing) -> np.ndarray:
        """Decode only what the output needs, resample to the target fps, fit the length; size untouched."""
        needed = math.ceil(timing.num_frames * src_fps / timing.fps) + 1
        try:
            frames, fps = read_video(path, max_frames=needed)
        except VideoDecodeError as exc:
            raise InputError(field, str(exc), "unsupported_video_format") from exc
        return fit_length(resample_fps(frames, fps, timing.fps), timing.num_frames)

    def image(self, url: str, field: str, index: int | None = None,
              background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
        name = field if index is None else f"{field}-{index}"
        path = self.fetcher.fetch(url, name, self.scratch)
        self._check_image_size(path, field)
        try:
            return read_image(path, background=background)
        except ImageDecodeError as exc:
            raise InputError(field, str(exc), "unsupported_image_format") from exc

    def _check_image_size(self, path: Path, field: str) -> None:
        """Pillow reads only the header here; anything it cannot parse is left to read_image to explain."""
        try:
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                width, height = img.size
        except Image.DecompressionBombError as exc:  # Pillow's own guard (on, at 2x MAX_IMAGE_PIXELS)
            raise InputError(field, f"{field}: {exc}", "image_too_large",
                             {"max_pixels": self.limits.max_pixels}) from exc
        except (OSError, ValueError, SyntaxError, EOFError):
            return  # not an image Pillow can parse: read_image says so
        self.limits.check_image(field, width, height)


def fit_input(reader: InputReader, request: WanVACEInput, plan: TaskPlan) -> FittedInput:
    """The input video at the output fps and length (the size depends on the task), keyframes only when
    the plan generates fewer frames than it outputs; the output's length is checked against the cap first."""
    if request.video_url is None:  # server/worker/reference_input.py builds that input instead
        raise ValueError("fit_input needs a video_url")
    path, info = reader.video(request.video_url, "video_url")
    timing = output_timing(request, info.fps, info.num_frames)
    timeline = plan.timeline(request, timing)
    # The output's length is known now (it may follow the input): refuse an over-long one before any work.
    field = output_length_field(timeline.upsample, follows_input=request.match_input_num_frames,
                                interpolation=interpolation_field(request))
    reader.limits.check_output(field, timeline.output_frames)
    frames = timeline.keyframes(reader.frames(path, "video_url", info.fps, timing))
    references = [reader.image(url, "ref_image_urls", index=i)
                  for i, url in enumerate(request.ref_image_urls or [])]
    return FittedInput(info=info, timing=timing, timeline=timeline, frames=frames, references=references)


def output_timing(request: WanVACEInput, input_fps: float, input_frames: int) -> Timing:
    """Output fps and length from the request: either the input's or the requested ones."""
    # frames_per_second null follows the input too (this server's reading of fal's nullable field).
    follow = request.match_input_frames_per_second or request.frames_per_second is None
    fps = input_fps if follow else float(request.frames_per_second or input_fps)
    if request.match_input_num_frames:
        # The input's duration at the output fps, capped by the schema's maximum length.
        count = max(1, min(MAX_FRAMES, math.floor(input_frames * fps / input_fps)))
    else:
        count = request.num_frames
    return Timing(fps=fps, num_frames=count)
