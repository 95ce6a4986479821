"""Request models of the `fal-ai/wan-vace-14b` endpoints (root plus the depth, pose, inpainting, outpainting
and reframe sub-paths), assembled from the field groups of server/contract/request_fields.py.

Which endpoint has which field follows fal's current schema (docs/fal-current-schema.md in the shared
docs). This server's own extensions: `paste_back` (inpainting, outpainting, reframe and the root), and the
root carrying the outpainting and reframe fields so `task="outpainting"` / `"reframe"` work there. The seed
page's `temporal_upsample_factor` stays on the root and reframe as a deprecated alias. Unknown fields are
accepted and named in the job's logs (server/contract/endpoints.py), as fal accepts them.

This module is imported by the API process: keep it free of torch and other heavy imports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.contract.fields import DEFAULT_NEGATIVE_PROMPT, TASKS, InputUrl, OptionalInputUrl, Task
from server.contract.request_fields import (
    MATCH_FPS,
    MATCH_FRAMES,
    PROMPT,
    VIDEO_URL,
    MaskFields,
    OutpaintingFields,
    PasteBackField,
    PreprocessField,
    ReferenceImagesField,
    ReframeFields,
    VACEBase,
)

# Field order of every input model: fal's current example first, in its order, then the fields its example
# leaves out, then this server's extensions. Each model lists the ones it has, in this order.
FIELD_ORDER: tuple[str, ...] = (
    "prompt", "negative_prompt", "match_input_num_frames", "num_frames", "match_input_frames_per_second",
    "frames_per_second", "task", "resolution", "aspect_ratio", "num_inference_steps", "guidance_scale",
    "video_url", "mask_video_url", "mask_image_url", "first_frame_url", "last_frame_url",
    "enable_safety_checker", "enable_prompt_expansion", "preprocess", "sampler", "shift", "seed",
    "ref_image_urls", "acceleration", "video_quality", "video_write_mode", "num_interpolated_frames",
    "temporal_downsample_factor", "enable_auto_downsample", "auto_downsample_min_fps", "interpolator_model",
    "sync_mode", "transparency_mode", "return_frames_zip",
    "expand_left", "expand_right", "expand_top", "expand_bottom", "expand_ratio", "zoom_factor",
    "trim_borders", "temporal_upsample_factor", "paste_back",
)

# fal's current full example, with a placeholder video URL where fal leaves it empty ("" is no URL).
_EXAMPLE: dict[str, Any] = {
    "prompt": (
        "The video shows a man riding a horse on a vast grassland. He has long lavender hair and wears a "
        "traditional dress of a white top and black pants. The animation style makes him look like he is "
        "doing some kind of outdoor activity or performing. The background is a spectacular mountain range "
        "and cloud sky, giving a sense of tranquility and vastness. The entire video is shot from a fixed "
        "angle, focusing on the rider and his horse."
    ),
    "negative_prompt": DEFAULT_NEGATIVE_PROMPT, "match_input_num_frames": False, "num_frames": 81,
    "match_input_frames_per_second": False, "frames_per_second": 16, "resolution": "auto",
    "aspect_ratio": "auto", "num_inference_steps": 30, "guidance_scale": 5,
    "video_url": "https://example.com/control-video.mp4", "enable_safety_checker": True,
    "enable_prompt_expansion": False, "preprocess": False, "sampler": "unipc", "shift": 5,
    "ref_image_urls": [], "acceleration": "regular", "video_quality": "high", "video_write_mode": "balanced",
    "num_interpolated_frames": 0, "temporal_downsample_factor": 0, "enable_auto_downsample": False,
    "auto_downsample_min_fps": 15, "interpolator_model": "film", "sync_mode": False,
    "transparency_mode": "content_aware", "return_frames_zip": False, "task": "depth",
}


def _fal_schema(example_extra: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """`json_schema_extra` that orders `properties` as FIELD_ORDER, adds fal's `x-fal-order-properties` and
    an example. `additionalProperties` (from extra="allow") is left out: fal's schema does not list it."""

    def extra(schema: dict[str, Any]) -> None:
        props = schema["properties"]
        unknown = set(props) - set(FIELD_ORDER)
        if unknown:
            raise RuntimeError(f"fields missing from FIELD_ORDER: {sorted(unknown)}")
        order = [name for name in FIELD_ORDER if name in props]
        schema["properties"] = {name: props[name] for name in order}
        schema["x-fal-order-properties"] = order
        schema.pop("additionalProperties", None)
        schema["examples"] = [{k: v for k, v in _EXAMPLE.items() if k in props} | example_extra]

    return extra


def _input_config(**example_extra: Any) -> ConfigDict:
    return ConfigDict(extra="allow", allow_inf_nan=False, json_schema_extra=_fal_schema(example_extra))


# ------------------------------------------------------------------------------------------------------------
# Input models
# ------------------------------------------------------------------------------------------------------------


class WanVACEInput(
    VACEBase, MaskFields, ReferenceImagesField, PreprocessField, OutpaintingFields, ReframeFields,
    PasteBackField,
):
    """Root endpoint: any task, chosen by `task`. It also carries the outpainting and reframe fields so that
    `task="outpainting"` / `task="reframe"` work here; each task ignores the fields of the others. Without
    `video_url` it is reference-to-video: everything generated from the prompt and the reference images."""

    model_config = _input_config()

    task: Task = Field(default="depth", description="Task type for the model.")
    video_url: OptionalInputUrl = Field(  # type: ignore[assignment]  # optional only here, as on fal
        default=None,
        description=f"{VIDEO_URL} If provided, the model will use this video as a reference.",
    )


class WanVACEDepthRequest(VACEBase, ReferenceImagesField, PreprocessField):
    model_config = _input_config()

    video_url: InputUrl = Field(description=f"{VIDEO_URL} Required for depth task.")


class WanVACEPoseRequest(VACEBase, ReferenceImagesField, PreprocessField):
    model_config = _input_config()

    prompt: str = Field(
        description=(
            f"{PROMPT} For pose task, the prompt should describe the desired pose and action of the subject "
            "in the video."
        )
    )
    video_url: InputUrl = Field(description=f"{VIDEO_URL} Required for pose task.")


class WanVACEInpaintingRequest(VACEBase, MaskFields, ReferenceImagesField, PreprocessField, PasteBackField):
    # Either mask field will do (server/contract/endpoints.py refuses neither), so the sub-path can do
    # everything the root endpoint does with task="inpainting".
    model_config = _input_config(mask_video_url="https://example.com/mask-video.mp4")

    video_url: InputUrl = Field(description=f"{VIDEO_URL} Required for inpainting.")


class WanVACEOutpaintingRequest(VACEBase, ReferenceImagesField, OutpaintingFields, PasteBackField):
    model_config = _input_config(expand_left=True, expand_right=True)

    video_url: InputUrl = Field(description=f"{VIDEO_URL} Required for outpainting.")


class WanVACEReframeRequest(VACEBase, ReframeFields, PasteBackField):
    model_config = _input_config(aspect_ratio="9:16")

    # Reframe differs from the other tasks: the prompt is optional and the output keeps the input's length
    # and fps.
    prompt: str = Field(default="", description=f"{PROMPT} Optional for reframing.")
    match_input_num_frames: bool = Field(default=True, description=MATCH_FRAMES)
    match_input_frames_per_second: bool = Field(default=True, description=MATCH_FPS)
    video_url: InputUrl = Field(
        description=f"{VIDEO_URL} This video will be used as a reference for the reframe task."
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


def known_fields(payload: BaseModel) -> dict[str, Any]:
    """The payload's declared fields as JSON (unknown extras dropped)."""
    return payload.model_dump(mode="json", include=set(type(payload).model_fields))


def unknown_fields(payload: BaseModel) -> list[str]:
    """Names the request sent that its endpoint's schema does not have (accepted and ignored)."""
    return sorted(payload.model_extra or {})
