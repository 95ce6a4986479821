"""The field groups fal's request models are made of (server/contract/inputs.py assembles them per endpoint).

Names, types, ranges, defaults and descriptions follow fal's current schema (the fields `@fal-ai/client`
types and fal's per-endpoint OpenAPI lists; docs/fal-current-schema.md in the shared docs). What each field
does on this server is in the README's request table.

Imported by the API process: keep it free of torch and other heavy imports.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from server.contract.fields import (
    DEFAULT_NEGATIVE_PROMPT,
    Acceleration,
    AspectRatio,
    InputUrl,
    InterpolatorModel,
    OptionalInputUrl,
    Resolution,
    Sampler,
    TransparencyMode,
    VideoQuality,
    VideoWriteMode,
)

PROMPT = "The text prompt to guide video generation."
MATCH_FRAMES = (
    "If true, the number of frames in the generated video will match the number of frames in the input "
    "video. If false, the number of frames will be determined by the num_frames parameter."
)
MATCH_FPS = (
    "If true, the frames per second of the generated video will match the input video. If false, the frames "
    "per second will be determined by the frames_per_second parameter."
)
VIDEO_URL = "URL to the source video file."
_REF_IMAGES = "Urls to source reference image. If provided, the model will use this image as reference."


class VACEBase(BaseModel):
    """Fields every endpoint has."""

    # Unknown fields are accepted and dropped, as fal does; the API names them in the job's logs
    # (server/contract/endpoints.py's `unknown_fields`). NaN and Infinity (which JSON parsers accept) are no
    # value of a numeric field: a 422 naming it, never a job that fails later.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    prompt: str = Field(description=PROMPT)
    negative_prompt: str = Field(
        default=DEFAULT_NEGATIVE_PROMPT, description="Negative prompt for video generation."
    )
    match_input_num_frames: bool = Field(default=False, description=MATCH_FRAMES)
    num_frames: int = Field(
        default=81, ge=17, le=241,
        description="Number of frames to generate. Must be between 81 to 241 (inclusive).",
    )
    match_input_frames_per_second: bool = Field(default=False, description=MATCH_FPS)
    # null: the input video's fps (16 without one); this server's reading, fal publishes none.
    frames_per_second: int | None = Field(
        default=16, ge=5, le=30,
        description=(
            "Frames per second of the generated video. Must be between 5 to 30. "
            "Ignored if match_input_frames_per_second is true."
        ),
    )
    seed: int | None = Field(
        default=None, description="Random seed for reproducibility. If None, a random seed is chosen."
    )
    resolution: Resolution = Field(
        default="auto",
        description=(
            "Resolution of the generated video. auto picks the largest preset (240p to 720p) whose short "
            "side is not above the input video's."
        ),
    )
    aspect_ratio: AspectRatio = Field(
        default="auto",
        description="Aspect ratio of the generated video (16:9, 9:16 or 1:1). auto follows the input video.",
    )
    num_inference_steps: int = Field(
        default=30, ge=2, le=50,
        description=(
            "Number of inference steps for sampling. Higher values give better quality but take longer."
        ),
    )
    guidance_scale: float = Field(
        default=5.0, ge=1.0, le=10.0,
        description=(
            "Guidance scale for classifier-free guidance. Higher values encourage the model to generate "
            "images closely related to the text prompt."
        ),
    )
    video_url: InputUrl = Field(description=VIDEO_URL)
    enable_safety_checker: bool = Field(
        default=False, description="If set to true, the safety checker will be enabled."
    )
    enable_prompt_expansion: bool = Field(default=False, description="Whether to enable prompt expansion.")
    sampler: Sampler = Field(default="unipc", description="Sampler to use for video generation.")
    # null keeps the previous release's rule (3 up to 480p, 4 at 580p, 5 at 720p: pipelines/schedulers.py).
    shift: float | None = Field(
        default=5.0, ge=1.0, le=15.0, description="Shift parameter for video generation."
    )
    # none runs every denoising step; low and regular reuse steps (pipelines/step_policy.py).
    acceleration: Acceleration = Field(
        default="regular",
        description=(
            "Acceleration to use for inference. Accelerated inference will very slightly affect output, but "
            "will be significantly faster."
        ),
    )
    first_frame_url: OptionalInputUrl = Field(
        default=None,
        description=(
            "URL to the first frame of the video. If provided, the model will use this frame as a reference."
        ),
    )
    last_frame_url: OptionalInputUrl = Field(
        default=None,
        description=(
            "URL to the last frame of the video. If provided, the model will use this frame as a reference."
        ),
    )
    transparency_mode: TransparencyMode = Field(
        default="content_aware",
        description=(
            "The transparency mode to apply to the first and last frames. This controls how the transparent "
            "areas of the first and last frames are filled."
        ),
    )
    num_interpolated_frames: int = Field(
        default=0, ge=0, le=5,
        description=(
            "Number of frames to interpolate between the original frames. A value of 0 means no "
            "interpolation."
        ),
    )
    temporal_downsample_factor: int = Field(
        default=0, ge=0, le=5,
        description=(
            "Temporal downsample factor for the video. This is an integer value that determines how many "
            "frames to skip in the video. A value of 0 means no downsampling. For each downsample factor, "
            "one upsample factor will automatically be applied."
        ),
    )
    enable_auto_downsample: bool = Field(
        default=False,
        description=(
            "If true, the model will automatically temporally downsample the video to an appropriate frame "
            "length for the model, then will interpolate it back to the original frame length."
        ),
    )
    auto_downsample_min_fps: float = Field(
        default=15.0, ge=1.0, le=60.0,
        description="The minimum frames per second to downsample the video to.",
    )
    interpolator_model: InterpolatorModel = Field(
        default="film", description="The model to use for frame interpolation. Options are 'rife' or 'film'."
    )
    video_quality: VideoQuality = Field(default="high", description="The quality of the output video.")
    video_write_mode: VideoWriteMode = Field(
        default="balanced", description="The write mode of the output video."
    )
    sync_mode: bool = Field(
        default=False,
        description=(
            "If set to true, the media will be returned as a data URI and the output data won't be "
            "available in the request history."
        ),
    )
    return_frames_zip: bool = Field(
        default=False, description="If true, also return a ZIP file containing all generated frames."
    )


class PreprocessField(BaseModel):
    preprocess: bool = Field(default=False, description="Whether to preprocess the input video.")


class MaskFields(BaseModel):
    mask_video_url: OptionalInputUrl = Field(
        default=None,
        description="URL to the source mask file. If provided, the model will use this mask as a reference.",
    )
    mask_image_url: OptionalInputUrl = Field(
        default=None,
        description=(
            "URL to the guiding mask file. If provided, the model will use this mask as a reference to "
            "create masked video. If provided mask video url will be ignored."
        ),
    )


class PasteBackField(BaseModel):
    # Our extension (fal's long-reframe app has a field of this name); off by default so a stock fal request
    # gets the model's output untouched.
    paste_back: bool = Field(
        default=False,
        description=(
            "Extension of this server, not part of fal's schema. If true, the original input pixels are "
            "copied back over the generated video wherever nothing was to be generated (outside the "
            "inpainting mask; the source area of outpainting and reframe), so those regions match the input "
            "exactly."
        ),
    )


class ReferenceImagesField(BaseModel):
    ref_image_urls: list[InputUrl] | None = Field(default=None, description=_REF_IMAGES)


class OutpaintingFields(BaseModel):
    expand_left: bool = Field(default=False, description="Whether to expand the video to the left.")
    expand_right: bool = Field(default=False, description="Whether to expand the video to the right.")
    expand_top: bool = Field(default=False, description="Whether to expand the video to the top.")
    expand_bottom: bool = Field(default=False, description="Whether to expand the video to the bottom.")
    expand_ratio: float = Field(
        default=0.25, ge=0.0, le=1.0,
        description=(
            "Amount of expansion. This is a float value between 0 and 1, where 0.25 adds 25% to the original "
            "video size on the specified sides."
        ),
    )


class ReframeFields(BaseModel):
    # fal publishes no bounds for zoom_factor; 0..1 mirrors expand_ratio, also relative to the canvas.
    zoom_factor: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description=(
            "Zoom factor for the video. When this value is greater than 0, the video will be zoomed in by "
            "this factor (in relation to the canvas size,) cutting off the edges of the video. A value of 0 "
            "means no zoom. Must be between 0 and 1."
        ),
    )
    trim_borders: bool = Field(default=True, description="Whether to trim borders from the video.")
    # The seed page's name for num_interpolated_frames, kept so older requests still work; when both are
    # set, num_interpolated_frames wins (server/contract/timing.py's `interpolated_frames`).
    temporal_upsample_factor: int = Field(
        default=0, ge=0, le=5, json_schema_extra={"deprecated": True},
        description=(
            "Deprecated: use num_interpolated_frames. Temporal upsample factor for the video: how many "
            "frames to interpolate between the original frames. A value of 0 means no interpolation."
        ),
    )
