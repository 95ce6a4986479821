"""Response models of the `fal-ai/wan-vace-14b` endpoints, as fal's endpoint page describes them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class File(BaseModel):
    url: str = Field(description="The URL where the file can be downloaded from.")
    content_type: str | None = Field(default=None, description="The mime type of the file.")
    file_name: str | None = Field(
        default=None, description="The name of the file. It will be auto-generated if not provided."
    )
    file_size: int | None = Field(default=None, description="The size of the file in bytes.")
    # Only set when the client asked for inline data; leaving a null out keeps responses as fal sends them.
    file_data: str | None = Field(default=None, description="File data", exclude_if=lambda v: v is None)


def _absent_if_none(value: object) -> bool:
    return value is None


class VideoFile(File):
    """fal's VideoFile: a File plus what the video is (server/worker/publish.py fills every field)."""

    width: int | None = Field(default=None, description="The width of the video", exclude_if=_absent_if_none)
    height: int | None = Field(
        default=None, description="The height of the video", exclude_if=_absent_if_none
    )
    fps: float | None = Field(default=None, description="The FPS of the video", exclude_if=_absent_if_none)
    duration: float | None = Field(
        default=None, description="The duration of the video", exclude_if=_absent_if_none
    )
    num_frames: int | None = Field(
        default=None, description="The number of frames in the video", exclude_if=_absent_if_none
    )


_OUTPUT_CONFIG = ConfigDict(
    json_schema_extra={"x-fal-order-properties": ["video", "prompt", "seed", "frames_zip"]}
)


class WanVACEResponse(BaseModel):
    model_config = _OUTPUT_CONFIG

    video: VideoFile = Field(description="The generated video file.")
    prompt: str = Field(description="The prompt used for generation.")
    seed: int = Field(description="The seed used for generation.")
    frames_zip: File | None = Field(
        default=None, description="ZIP archive of all video frames if requested.", exclude_if=_absent_if_none
    )


class WanVACEDepthResponse(WanVACEResponse):
    video: VideoFile = Field(description="The generated depth video file.")


class WanVACEPoseResponse(WanVACEResponse):
    video: VideoFile = Field(description="The generated pose video file.")


class WanVACEInpaintingResponse(WanVACEResponse):
    video: VideoFile = Field(description="The generated inpainting video file.")


class WanVACEOutpaintingResponse(WanVACEResponse):
    video: VideoFile = Field(description="The generated outpainting video file.")


class WanVACEReframeResponse(WanVACEResponse):
    video: VideoFile = Field(description="The generated reframe video file.")
