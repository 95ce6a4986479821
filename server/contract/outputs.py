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


_OUTPUT_CONFIG = ConfigDict(json_schema_extra={"x-fal-order-properties": ["video", "prompt", "seed"]})


class WanVACEResponse(BaseModel):
    model_config = _OUTPUT_CONFIG

    video: File = Field(description="The generated video file.")
    prompt: str = Field(description="The prompt used for generation.")
    seed: int = Field(description="The seed used for generation.")


class WanVACEDepthResponse(WanVACEResponse):
    video: File = Field(description="The generated depth video file.")


class WanVACEPoseResponse(WanVACEResponse):
    video: File = Field(description="The generated pose video file.")


class WanVACEInpaintingResponse(WanVACEResponse):
    video: File = Field(description="The generated inpainting video file.")


class WanVACEOutpaintingResponse(WanVACEResponse):
    video: File = Field(description="The generated outpainting video file.")


class WanVACEReframeResponse(WanVACEResponse):
    video: File = Field(description="The generated reframe video file.")
