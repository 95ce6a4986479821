"""Size caps: what the server refuses because it is too big, before it costs memory, disk or a GPU.

- `InputLimits`: input videos and images, checked by the worker from the probe (the container's header and
  first frame; an image's header) before the rest is decoded; a refusal is a 422 model error on the field.
  It also caps the output's length (`max_output_frames`, which interpolation can take past the
  schema's 241): refused at submit when the request alone fixes the length (server/contract/endpoints.py),
  else by the worker right after the probe, before anything is generated or interpolated.
- JSON request bodies are capped in the API process by server/api/middleware/body_limit.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.contract.errors import InputError
from server.settings import LARGEST_VALID_OUTPUT, MAX_INPUT_FRAMES, MAX_INPUT_PIXELS, MAX_INPUT_SECONDS

if TYPE_CHECKING:
    from server.settings import Settings

# The error type of a too-long output, at submit (server/contract/endpoints.py) and in the worker alike.
OUTPUT_TOO_LONG = "output_too_long"
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

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        return cls(settings.max_input_pixels, settings.max_input_seconds, settings.max_input_frames,
                   settings.max_output_frames)

    def check_video(self, field: str, width: int, height: int, num_frames: int, duration: float) -> None:
        """Raise InputError if a video is too large to decode safely (size first: it is what costs memory)."""
        if width * height > self.max_pixels:
            raise InputError(field, f"{field}: {width}x{height} frames are larger than this server accepts "
                             f"({self._pixels()} per frame)", "video_too_large", self._size(width, height))
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

    def check_image(self, field: str, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise InputError(field, f"{field}: a {width}x{height} image is larger than this server accepts "
                             f"({self._pixels()})", "image_too_large", self._size(width, height))

    def _pixels(self) -> str:
        side = int(self.max_pixels**0.5)
        return f"{self.max_pixels} pixels, e.g. {side}x{side}"

    def _size(self, width: int, height: int) -> dict[str, int]:
        return {"max_pixels": self.max_pixels, "width": width, "height": height}
