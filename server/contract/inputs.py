"""Request models of the `fal-ai/wan-vace-14b` endpoints.

The contract is fal's endpoint page (root endpoint plus the depth, pose, inpainting, outpainting and reframe
sub-paths): field names, defaults, ranges, enums and descriptions follow it. A few fields fal added later are
accepted too (240p/360p, 1:1, `sampler`, `shift`). One field is this server's own extension, not fal's:
`paste_back` on the inpainting, outpainting and reframe models (and the root). Unknown fields are ignored,
as fal does, so clients written against a newer fal schema still work.

This module is imported by the API process: keep it free of torch and other heavy imports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.contract.fields import (
    DEFAULT_NEGATIVE_PROMPT,
    TASKS,
    Acceleration,
    AspectRatio,
    InputUrl,
    InterpolatorModel,
    Resolution,
    Sampler,
    Task,
)

# ------------------------------------------------------------------------------------------------------------
# Descriptions shared by several models (text from fal's endpoint page)
# ------------------------------------------------------------------------------------------------------------

_PROMPT = "The text prompt to guide video generation."
_MATCH_FRAMES = (
    "If true, the number of frames in the generated video will match the number of frames in the input "
    "video. If false, the number of frames will be determined by the num_frames parameter."
)
_MATCH_FPS = (
    "If true, the frames per second of the generated video will match the input video. If false, the frames "
    "per second will be determined by the frames_per_second parameter."
)
_VIDEO_URL = "URL to the source video file."
_REF_IMAGES = "Urls to source reference image. If provided, the model will use this image as reference."

# Field order of each input model, as on fal's page. Fields the page lists only on the root model sit where
# the root lists them; fields fal added later (sampler, shift) come last.
_BASE_HEAD = (
    "prompt",
    "negative_prompt",
    "match_input_num_frames",
    "num_frames",
    "match_input_frames_per_second",
    "frames_per_second",
)
_BASE_MIDDLE = ("seed", "resolution", "aspect_ratio", "num_inference_steps", "guidance_scale", "video_url")
_CHECKS = ("enable_safety_checker", "enable_prompt_expansion")
_LATER = ("sampler", "shift", "acceleration")
_OURS = ("paste_back",)  # this server's extensions come after everything fal has
_OUTPAINTING = ("expand_left", "expand_right", "expand_top", "expand_bottom", "expand_ratio")
_REFRAME = ("zoom_factor", "temporal_downsample_factor", "temporal_upsample_factor", "interpolator_model")

# fal's own example (root endpoint). Its video_url is "" there, which this server rejects, so a placeholder
# URL stands in to keep the example valid.
_EXAMPLE: dict[str, Any] = {
    "prompt": (
        "The video shows a man riding a horse on a vast grassland. He has long lavender hair and wears a "
        "traditional dress of a white top and black pants. The animation style makes him look like he is "
        "doing some kind of outdoor activity or performing. The background is a spectacular mountain range "
        "and cloud sky, giving a sense of tranquility and vastness. The entire video is shot from a fixed "
        "angle, focusing on the rider and his horse."
    ),
    "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
    "match_input_num_frames": False,
    "num_frames": 81,
    "match_input_frames_per_second": False,
    "frames_per_second": 16,
    "task": "depth",
    "resolution": "720p",
    "aspect_ratio": "auto",
    "num_inference_steps": 30,
    "guidance_scale": 5,
    "video_url": "https://example.com/control-video.mp4",
    "enable_safety_checker": True,
    "enable_prompt_expansion": False,
    "preprocess": False,
    "acceleration": "regular",
}


def _fal_schema(order: tuple[str, ...], example: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """`json_schema_extra` that adds fal's `x-fal-order-properties` and an example.

    It also lays out `properties` in the same order, so generated clients and docs list fields the way fal
    does (pydantic would otherwise order mixin fields by MRO). A missing or extra name fails loudly here.
    """

    def extra(schema: dict[str, Any]) -> None:
        props = schema["properties"]
        if set(props) != set(order):
            raise RuntimeError(f"x-fal-order-properties {order} does not match the fields {list(props)}")
        schema["properties"] = {name: props[name] for name in order}
        schema["x-fal-order-properties"] = list(order)
        schema["examples"] = [example]

    return extra


def _input_config(order: tuple[str, ...], **example_extra: Any) -> ConfigDict:
    example = {k: v for k, v in _EXAMPLE.items() if k in order} | example_extra
    return ConfigDict(extra="ignore", allow_inf_nan=False, json_schema_extra=_fal_schema(order, example))


# ------------------------------------------------------------------------------------------------------------
# Input models
# ------------------------------------------------------------------------------------------------------------


class _VACEBase(BaseModel):
    """Fields every endpoint has."""

    # fal ignores unknown fields; so do we. NaN and Infinity (which JSON parsers accept) are no value of a
    # numeric field: a 422 naming it, never a job that fails later.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: str = Field(description=_PROMPT)
    negative_prompt: str = Field(
        default=DEFAULT_NEGATIVE_PROMPT, description="Negative prompt for video generation."
    )
    match_input_num_frames: bool = Field(default=False, description=_MATCH_FRAMES)
    num_frames: int = Field(
        default=81,
        ge=81,
        le=241,
        description="Number of frames to generate. Must be between 81 to 241 (inclusive).",
    )
    match_input_frames_per_second: bool = Field(default=False, description=_MATCH_FPS)
    frames_per_second: int = Field(
        default=16,
        ge=5,
        le=30,
        description=(
            "Frames per second of the generated video. Must be between 5 to 30. "
            "Ignored if match_input_frames_per_second is true."
        ),
    )
    seed: int | None = Field(
        default=None, description="Random seed for reproducibility. If None, a random seed is chosen."
    )
    resolution: Resolution = Field(
        default="720p", description="Resolution of the generated video (240p, 360p, 480p, 580p or 720p)."
    )
    aspect_ratio: AspectRatio = Field(
        default="auto",
        description="Aspect ratio of the generated video (16:9, 9:16 or 1:1). auto follows the input video.",
    )
    num_inference_steps: int = Field(
        default=30,
        ge=2,
        le=50,
        description=(
            "Number of inference steps for sampling. Higher values give better quality but take longer."
        ),
    )
    guidance_scale: float = Field(
        default=5.0,
        ge=1.0,
        le=10.0,
        description=(
            "Guidance scale for classifier-free guidance. Higher values encourage the model to generate "
            "images closely related to the text prompt."
        ),
    )
    video_url: InputUrl = Field(description=_VIDEO_URL)
    # fal's example sends true; the checker itself is a server feature (see the server docs).
    enable_safety_checker: bool = Field(
        default=True, description="If set to true, the safety checker will be enabled."
    )
    enable_prompt_expansion: bool = Field(default=False, description="Whether to enable prompt expansion.")
    # Later fal additions.
    sampler: Sampler = Field(default="unipc", description="Sampler used for denoising.")
    shift: float | None = Field(
        default=None,
        ge=1.0,
        le=15.0,
        description=(
            "Flow-matching noise schedule shift. If not set, the server chooses it from the resolution: "
            "3.0 up to 480p, 4.0 at 580p, 5.0 at 720p."
        ),
    )
    # none runs every denoising step; low and regular reuse steps (pipelines/step_policy.py).
    acceleration: Acceleration = Field(
        default="regular",
        description=(
            "Acceleration to use for inference. Accelerated inference will very slightly affect output, but "
            "will be significantly faster."
        ),
    )


class _PreprocessField(BaseModel):
    preprocess: bool = Field(default=False, description="Whether to preprocess the input video.")


class _MaskFields(BaseModel):
    mask_video_url: InputUrl | None = Field(
        default=None,
        description="URL to the source mask file. If provided, the model will use this mask as a reference.",
    )
    mask_image_url: InputUrl | None = Field(
        default=None,
        description=(
            "URL to the guiding mask file. If provided, the model will use this mask as a reference to "
            "create masked video. If provided mask video url will be ignored."
        ),
    )


class _PasteBackField(BaseModel):
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


class _ReferenceImagesField(BaseModel):
    ref_image_urls: list[InputUrl] | None = Field(default=None, description=_REF_IMAGES)


class _OutpaintingFields(BaseModel):
    expand_left: bool = Field(default=False, description="Whether to expand the video to the left.")
    expand_right: bool = Field(default=False, description="Whether to expand the video to the right.")
    expand_top: bool = Field(default=False, description="Whether to expand the video to the top.")
    expand_bottom: bool = Field(default=False, description="Whether to expand the video to the bottom.")
    expand_ratio: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description=(
            "Amount of expansion. This is a float value between 0 and 1, where 0.25 adds 25% to the original "
            "video size on the specified sides."
        ),
    )


class _ReframeFields(BaseModel):
    # fal publishes no bounds for zoom_factor; 0..1 mirrors expand_ratio, also relative to the canvas.
    zoom_factor: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Zoom factor for the video. When this value is greater than 0, the video will be zoomed in by "
            "this factor (in relation to the canvas size,) cutting off the edges of the video. A value of 0 "
            "means no zoom. Must be between 0 and 1."
        ),
    )
    temporal_downsample_factor: int = Field(
        default=0,
        ge=0,
        le=5,
        description=(
            "Temporal downsample factor for the video. This is an integer value that determines how many "
            "frames to skip in the video. A value of 0 means no downsampling. For each downsample factor, "
            "one upsample factor will automatically be applied."
        ),
    )
    temporal_upsample_factor: int = Field(
        default=0,
        ge=0,
        le=5,
        description=(
            "Temporal upsample factor for the video. This is an integer value that determines how many "
            "frames to interpolate between the original frames. A value of 0 means no interpolation."
        ),
    )
    interpolator_model: InterpolatorModel = Field(
        default="rife",
        description="The model to use for frame interpolation. Options are 'rife' or 'film'.",
    )


class WanVACEInput(
    _VACEBase, _MaskFields, _ReferenceImagesField, _PreprocessField, _OutpaintingFields, _ReframeFields,
    _PasteBackField,
):
    """Root endpoint: any task, chosen by `task`. It also carries the outpainting and reframe fields so that
    `task="outpainting"` / `task="reframe"` work here; each task ignores the fields of the others."""

    model_config = _input_config(
        (
            *_BASE_HEAD,
            "task",
            *_BASE_MIDDLE,
            "mask_video_url",
            "mask_image_url",
            "ref_image_urls",
            *_CHECKS,
            "preprocess",
            *_OUTPAINTING,
            *_REFRAME,
            *_LATER,
            *_OURS,
        ),
        task="depth",
    )

    task: Task = Field(default="depth", description="Task type for the model.")
    video_url: InputUrl = Field(
        description=f"{_VIDEO_URL} If provided, the model will use this video as a reference."
    )


class WanVACEDepthRequest(_VACEBase, _PreprocessField):
    model_config = _input_config((*_BASE_HEAD, *_BASE_MIDDLE, *_CHECKS, "preprocess", *_LATER))

    video_url: InputUrl = Field(description=f"{_VIDEO_URL} Required for depth task.")


class WanVACEPoseRequest(_VACEBase, _PreprocessField):
    model_config = _input_config((*_BASE_HEAD, *_BASE_MIDDLE, *_CHECKS, "preprocess", *_LATER))

    prompt: str = Field(
        description=(
            f"{_PROMPT} For pose task, the prompt should describe the desired pose and action of the subject "
            "in the video."
        )
    )
    video_url: InputUrl = Field(description=f"{_VIDEO_URL} Required for pose task.")


class WanVACEInpaintingRequest(_VACEBase, _MaskFields, _ReferenceImagesField, _PasteBackField):
    # mask_image_url is not on fal's inpainting page but is on the root one; accepted here so the sub-path can
    # do everything the root endpoint does with task="inpainting".
    model_config = _input_config(
        (*_BASE_HEAD, *_BASE_MIDDLE, "mask_video_url", "mask_image_url", "ref_image_urls", *_CHECKS, *_LATER,
         *_OURS),
        mask_video_url="https://example.com/mask-video.mp4",
    )

    video_url: InputUrl = Field(description=f"{_VIDEO_URL} Required for inpainting.")
    mask_video_url: InputUrl = Field(description="URL to the source mask file. Required for inpainting.")


class WanVACEOutpaintingRequest(_VACEBase, _ReferenceImagesField, _OutpaintingFields, _PasteBackField):
    # ref_image_urls is not on fal's outpainting page; fal's later schema has it on every task.
    model_config = _input_config(
        (*_BASE_HEAD, *_BASE_MIDDLE, "ref_image_urls", *_CHECKS, *_OUTPAINTING, *_LATER, *_OURS),
        expand_left=True,
        expand_right=True,
    )

    video_url: InputUrl = Field(description=f"{_VIDEO_URL} Required for outpainting.")


class WanVACEReframeRequest(_VACEBase, _ReframeFields, _PasteBackField):
    model_config = _input_config(
        (*_BASE_HEAD, *_BASE_MIDDLE, *_CHECKS, *_REFRAME, *_LATER, *_OURS), aspect_ratio="9:16"
    )

    # Reframe differs from the other tasks: the prompt is optional and the output keeps the input's length
    # and fps.
    prompt: str = Field(default="", description=f"{_PROMPT} Optional for reframing.")
    match_input_num_frames: bool = Field(default=True, description=_MATCH_FRAMES)
    match_input_frames_per_second: bool = Field(default=True, description=_MATCH_FPS)
    video_url: InputUrl = Field(
        description=f"{_VIDEO_URL} This video will be used as a reference for the reframe task."
    )


# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------


def task_of(endpoint_id: str, payload: BaseModel) -> str:
    """The task a request runs: a task sub-path of the endpoint id wins; on the root endpoint it is `task`.

    Raises ValueError when neither names a task (a per-task payload sent to an id without a task sub-path).
    """
    tail = endpoint_id.strip("/").rsplit("/", 1)[-1]
    if tail in TASKS:
        return tail
    task = getattr(payload, "task", None)
    if task not in TASKS:
        raise ValueError(f"cannot tell the task of {endpoint_id!r} from a {type(payload).__name__} payload")
    return str(task)  # one of TASKS; getattr gave mypy no type
