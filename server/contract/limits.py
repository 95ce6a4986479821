"""Size caps: what the server refuses because it is too big, before it costs memory, disk or a GPU.

- `InputLimits`: input videos and images, checked by the worker from the probe (the container's header and
  first frame; an image's header) before the rest is decoded; a refusal is a 422 model error on the field.
  Pixels are checked on the stream's header before its first frame is decoded and again on every decoded
  frame (a stream may change size mid-way); the frame rate must be plausible; and what a job decodes (the
  frames it keeps, at the size it works at, plus its images) must fit `max_decoded_bytes`, checked before
  each input is decoded (server/worker/inputs.py). The count of reference images is capped at submit.
  It also caps the output's length (`max_output_frames`, which interpolation can take past the
  schema's 241): refused at submit when the request alone fixes the length (server/contract/endpoints.py),
  else by the worker right after the probe, before anything is generated or interpolated.
- JSON request bodies are capped in the API process by server/api/middleware/body_limit.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.contract.errors import InputError
from server.settings import (
    LARGEST_VALID_OUTPUT,
    MAX_DECODED_BYTES,
    MAX_INPUT_FPS,
    MAX_INPUT_FRAMES,
    MAX_INPUT_PIXELS,
    MAX_INPUT_SECONDS,
    MAX_REFERENCE_IMAGES,
    MIN_INPUT_FPS,
)

if TYPE_CHECKING:
    from server.settings import Settings

# The error type of a too-long output, at submit (server/contract/endpoints.py) and in the worker alike.
OUTPUT_TOO_LONG = "output_too_long"
# fal's error type for a list with too many items, used for ref_image_urls at submit and in the worker.
TOO_MANY_REFERENCES = "sequence_too_long"
_INTERPOLATION_ADVICE = ("each generated gap gets temporal_downsample_factor + {0} new frames: lower {0} or "
                         "num_frames")


def output_length_field(upsample_factor: int, follows_input: bool,
                        interpolation: str = "num_interpolated_frames") -> str:
    """The request field a too-long output is blamed on: the upsampling, else what set the length.

    (Downsampling alone does not lengthen the output: it interpolates back to about the input's length.)
    """
    if upsample_factor:
        return interpolation  # num_interpolated_frames, or its old name when the request used that
    return "video_url" if follows_input else "num_frames"


@dataclass(frozen=True)
class InputLimits:
    max_pixels: int = MAX_INPUT_PIXELS
    max_seconds: float = MAX_INPUT_SECONDS
    max_frames: int = MAX_INPUT_FRAMES
    # Frames in the returned video, after interpolation: what the worker holds and encodes.
    max_output_frames: int = LARGEST_VALID_OUTPUT
    min_fps: float = MIN_INPUT_FPS
    max_fps: float = MAX_INPUT_FPS
    max_reference_images: int = MAX_REFERENCE_IMAGES
    # RGB bytes one job's decoded inputs may hold: the frames kept, at the size the task works at, and images.
    max_decoded_bytes: int = MAX_DECODED_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        return cls(settings.max_input_pixels, settings.max_input_seconds, settings.max_input_frames,
                   settings.max_output_frames, settings.min_input_fps, settings.max_input_fps,
                   settings.max_reference_images, settings.max_decoded_bytes)

    def check_frame_size(self, field: str, width: int, height: int) -> None:
        """Raise InputError if a video's frames (a header's claim, one decoded frame) exceed the pixel cap."""
        if width * height > self.max_pixels:
            raise InputError(field, f"{field}: {width}x{height} frames are larger than this server accepts "
                             f"({self._pixels()} per frame)", "video_too_large", self._size(width, height))

    def check_video(self, field: str, width: int, height: int, num_frames: int, duration: float,
                    fps: float | None = None) -> None:
        """Raise InputError if a video is too large to decode safely (size first: it is what costs memory)."""
        self.check_frame_size(field, width, height)
        if fps is not None and not self.min_fps <= fps <= self.max_fps:
            # A rate outside this range is a broken or hostile header (0.02 fps would hold one frame for 50
            # output frames; 600 fps decodes 120 frames per output frame at 5 fps), not a real recording.
            raise InputError(field, f"{field}: the video's frame rate is {fps:g} fps; this server accepts "
                             f"{self.min_fps:g} to {self.max_fps:g} fps", "unsupported_video_format",
                             {"min_fps": self.min_fps, "max_fps": self.max_fps, "fps": round(fps, 3)})
        if duration > self.max_seconds:
            raise InputError(field, f"{field}: the video lasts {duration:.0f} s; this server accepts at "
                             f"most {self.max_seconds:g} s", "video_duration_too_long",
                             {"max_duration": self.max_seconds, "duration": round(duration, 3)})
        if num_frames > self.max_frames:
            raise InputError(field, f"{field}: the video has {num_frames} frames; this server accepts at "
                             f"most {self.max_frames}", "video_duration_too_long",
                             {"max_frames": self.max_frames, "num_frames": num_frames})

    def output_refusal(self, output_frames: int, field: str) -> str | None:
        """Why an output of `output_frames` frames is refused, or None; the submit check and the worker's.

        `field` is what the length is blamed on (`output_length_field`), and the advice follows it.
        """
        if output_frames <= self.max_output_frames:
            return None
        advice = {
            "num_interpolated_frames": _INTERPOLATION_ADVICE.format("num_interpolated_frames"),
            "temporal_upsample_factor": _INTERPOLATION_ADVICE.format("temporal_upsample_factor"),
            "video_url": "the length follows the input video: use a shorter video, or set "
                         "match_input_num_frames to false and choose num_frames",
        }.get(field, f"lower {field}")
        return (f"the output video would have {output_frames} frames; this server returns at most "
                f"{self.max_output_frames}: {advice}")

    def check_output(self, field: str, output_frames: int) -> None:
        """Raise InputError if the output would be longer than max_output_frames (before any work on it)."""
        reason = self.output_refusal(output_frames, field)
        if reason is not None:
            raise InputError(field, reason, OUTPUT_TOO_LONG,
                             {"max_output_frames": self.max_output_frames, "output_frames": output_frames})

    def reference_count_refusal(self, count: int) -> str | None:
        """Why `count` reference images are refused, or None; the submit check and the worker's."""
        if count <= self.max_reference_images:
            return None
        return (f"ref_image_urls has {count} images; this server accepts at most "
                f"{self.max_reference_images}")

    def check_reference_count(self, count: int) -> None:
        reason = self.reference_count_refusal(count)
        if reason is not None:
            raise InputError("ref_image_urls", reason, TOO_MANY_REFERENCES,
                             {"max_length": self.max_reference_images, "length": count})

    def check_decoded(self, field: str, total_bytes: int, *, image: bool = False) -> None:
        """Raise InputError if a job's decoded inputs, `field`'s included, would exceed max_decoded_bytes."""
        if total_bytes <= self.max_decoded_bytes:
            return
        mib = 1024**2
        raise InputError(field, f"{field}: decoding it would bring this request's decoded inputs to "
                         f"{total_bytes // mib} MiB; this server decodes at most "
                         f"{self.max_decoded_bytes // mib} MiB per request (use a shorter, smaller or lower "
                         "frame rate input, or fewer images)",
                         "image_too_large" if image else "video_too_large",
                         {"max_decoded_bytes": self.max_decoded_bytes, "decoded_bytes": total_bytes})

    def check_image(self, field: str, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise InputError(field, f"{field}: a {width}x{height} image is larger than this server accepts "
                             f"({self._pixels()})", "image_too_large", self._size(width, height))

    def _pixels(self) -> str:
        side = int(self.max_pixels**0.5)
        return f"{self.max_pixels} pixels, e.g. {side}x{side}"

    def _size(self, width: int, height: int) -> dict[str, int]:
        return {"max_pixels": self.max_pixels, "width": width, "height": height}
