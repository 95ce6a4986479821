"""Inputs onto disk and into frames: fetch, probe against the operator's caps, decode, fit in time.

Containers are probed (the header, then the first frame) and images' headers read before anything is decoded,
so an input over a cap (server/contract/limits.py) fails before it costs memory. Memory stays bounded by what
the output needs: the source frame behind each output frame is known from the header (fps and the requested
timing), so only those frames are decoded and kept, each shrunk to the size the task works at as it is
decoded; and what a job will hold is added up against `max_decoded_bytes` before each input is decoded.
Downloads share one wall-clock budget per job and end as soon as the job is cancelled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from preprocessors.resolution import resolve_resolution
from preprocessors.sizing import target_size
from preprocessors.temporal import fitted_indices
from preprocessors.video_io import (
    IMAGE_FORMATS,  # the plugins read_image allows
    ImageDecodeError,
    VideoDecodeError,
    VideoInfo,
    probe_video,
    read_frames,
    read_image,
)
from server.contract.errors import InputError
from server.contract.inputs import WanVACEInput
from server.contract.limits import InputLimits, output_length_field
from server.contract.timing import interpolation_field
from server.worker.fetch import Fetcher
from server.worker.tasks import TaskPlan
from server.worker.types import FittedInput, SizeRule, Timing

MAX_FRAMES = 241  # the schema's upper bound; also bounds match_input_num_frames
RGB = 3  # bytes per decoded pixel


class InputReader:
    """One job's inputs: fetched into `scratch`, checked against `limits`, decoded.

    `should_cancel` is consulted while downloads wait (server/worker/watched_http.py); all of the job's
    downloads share the fetcher's wall-clock deadline; `decoded_bytes` counts what its decoded inputs hold.
    """

    def __init__(self, fetcher: Fetcher, limits: InputLimits, scratch: Path,
                 should_cancel: Callable[[], bool] | None = None) -> None:
        self.fetcher = fetcher
        self.limits = limits
        self.scratch = scratch
        self.should_cancel = should_cancel
        self.download_left_s = fetcher.total_timeout_s
        self.decoded_bytes = 0

    def fetch(self, url: str, name: str) -> Path:
        started = time.monotonic()
        try:
            return self.fetcher.fetch(url, name, self.scratch, should_cancel=self.should_cancel,
                                      deadline=started + self.download_left_s)
        finally:
            self.download_left_s -= time.monotonic() - started

    def video(self, url: str, field: str) -> tuple[Path, VideoInfo]:
        """Fetch and probe: the container's claims, checked before any frame is kept."""
        path = self.fetch(url, field)
        try:
            info = probe_video(path, check_size=lambda w, h: self.limits.check_frame_size(field, w, h))
        except VideoDecodeError as exc:
            raise InputError(field, str(exc), "unsupported_video_format") from exc
        self.limits.check_video(field, info.width, info.height, info.num_frames, info.duration, info.fps)
        return path, info

    def frames(self, path: Path, field: str, info: VideoInfo, timing: Timing, *,
               keep: Sequence[int] | None = None, size: tuple[int, int] | None = None,
               nearest: bool = False) -> np.ndarray:
        """The video at `timing`'s fps and length (its last frame held past its end), only the frames at the
        positions in `keep` (default all), each shrunk to `size` (width, height) as it is decoded."""
        indices = fitted_indices(info.fps, timing.fps, timing.num_frames)
        width, height = size or (info.width, info.height)
        count = timing.num_frames if keep is None else len(keep)
        self._reserve(field, count * width * height * RGB)
        try:
            return read_frames(path, indices, keep=keep, size=size, nearest=nearest,
                               check_size=lambda w, h: self.limits.check_frame_size(field, w, h))
        except VideoDecodeError as exc:
            raise InputError(field, str(exc), "unsupported_video_format") from exc

    def image(self, url: str, field: str, index: int | None = None,
              background: tuple[int, int, int] = (255, 255, 255), max_side: int | None = None) -> np.ndarray:
        """One image, shrunk to fit a `max_side` square as it is decoded when that is given."""
        name = field if index is None else f"{field}-{index}"
        path = self.fetch(url, name)
        size = self._image_size(path, field)
        if size is not None:
            width, height = size
            scale = 1.0 if max_side is None else min(1.0, max_side / max(width, height))
            self._reserve(field, math.ceil(width * scale) * math.ceil(height * scale) * RGB, image=True)
        try:
            return read_image(path, background=background, max_side=max_side)
        except ImageDecodeError as exc:
            raise InputError(field, str(exc), "unsupported_image_format") from exc

    def _reserve(self, field: str, nbytes: int, *, image: bool = False) -> None:
        """Count what decoding `field` will hold, refusing it (before decoding) past the job's budget."""
        self.limits.check_decoded(field, self.decoded_bytes + nbytes, image=image)
        self.decoded_bytes += nbytes

    def _image_size(self, path: Path, field: str) -> tuple[int, int] | None:
        """Pillow reads only the header here; anything it cannot parse is left to read_image to explain."""
        try:
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                width, height = img.size
        except Image.DecompressionBombError as exc:  # Pillow's own guard (on, at 2x MAX_IMAGE_PIXELS)
            raise InputError(field, f"{field}: {exc}", "image_too_large",
                             {"max_pixels": self.limits.max_pixels}) from exc
        except (OSError, ValueError, SyntaxError, EOFError):
            return None  # not an image Pillow can parse: read_image says so
        self.limits.check_image(field, width, height)
        return width, height


def fit_input(reader: InputReader, request: WanVACEInput, plan: TaskPlan,
              sizes: SizeRule = target_size) -> FittedInput:
    """The input video at the output fps and length (the size depends on the task), keyframes only when
    the plan generates fewer frames than it outputs; the output's length is checked against the cap first."""
    if request.video_url is None:  # server/worker/reference_input.py builds that input instead
        raise ValueError("fit_input needs a video_url")
    # Cheap refusals first: the count of reference images before any download.
    reader.limits.check_reference_count(len(request.ref_image_urls or []))
    path, info = reader.video(request.video_url, "video_url")
    request = with_concrete_resolution(request, info)
    timing = output_timing(request, info.fps, info.num_frames)
    timeline = plan.timeline(request, timing)
    # The output's length is known now (it may follow the input): refuse an over-long one before any work.
    field = output_length_field(timeline.upsample, follows_input=request.match_input_num_frames,
                                interpolation=interpolation_field(request))
    reader.limits.check_output(field, timeline.output_frames)
    frames = reader.frames(path, "video_url", info, timing, keep=timeline.key_indices(),
                           size=plan.decode_size(request, info.width, info.height, sizes))
    # References are letterboxed into the generation size by the pipeline: its longer side is enough.
    ref_side = max(sizes(request.resolution, request.aspect_ratio, info.width, info.height))
    references = [reader.image(url, "ref_image_urls", index=i, max_side=ref_side)
                  for i, url in enumerate(request.ref_image_urls or [])]
    return FittedInput(info=info, timing=timing, timeline=timeline, frames=frames, references=references)


def with_concrete_resolution(request: WanVACEInput, info: VideoInfo) -> WanVACEInput:
    """`resolution: "auto"` made a preset once, from the probed input's own size
    (preprocessors/resolution.py): later steps see frames shrunk as they were decoded, or trimmed of their
    borders, whose size could pick a smaller preset."""
    return request.model_copy(update={"resolution": resolve_resolution(request.resolution, info.width,
                                                                        info.height)})


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
