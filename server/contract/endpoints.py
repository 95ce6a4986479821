"""The endpoint ids this server answers to, their models, and what this release refuses at submit.

Kept free of heavy imports: the API process imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from server.contract.inputs import (
    WanVACEDepthRequest,
    WanVACEInpaintingRequest,
    WanVACEInput,
    WanVACEOutpaintingRequest,
    WanVACEPoseRequest,
    WanVACEReframeRequest,
    known_fields,
    task_of,
)
from server.contract.limits import OUTPUT_TOO_LONG, TOO_MANY_REFERENCES, InputLimits, output_length_field
from server.contract.outputs import (
    WanVACEDepthResponse,
    WanVACEInpaintingResponse,
    WanVACEOutpaintingResponse,
    WanVACEPoseResponse,
    WanVACEReframeResponse,
    WanVACEResponse,
)
from server.contract.timing import downsample_factor, interpolated_frames, interpolation_field, output_frames

APP_ID = "fal-ai/wan-vace-14b"


@dataclass(frozen=True)
class Endpoint:
    id: str
    task: str | None  # None: the root endpoint, where the payload's `task` field decides
    input_model: type[BaseModel]
    output_model: type[BaseModel]


ENDPOINTS: dict[str, Endpoint] = {
    e.id: e
    for e in (
        Endpoint(APP_ID, None, WanVACEInput, WanVACEResponse),
        Endpoint(f"{APP_ID}/depth", "depth", WanVACEDepthRequest, WanVACEDepthResponse),
        Endpoint(f"{APP_ID}/pose", "pose", WanVACEPoseRequest, WanVACEPoseResponse),
        Endpoint(f"{APP_ID}/inpainting", "inpainting", WanVACEInpaintingRequest, WanVACEInpaintingResponse),
        Endpoint(
            f"{APP_ID}/outpainting", "outpainting", WanVACEOutpaintingRequest, WanVACEOutpaintingResponse
        ),
        Endpoint(f"{APP_ID}/reframe", "reframe", WanVACEReframeRequest, WanVACEReframeResponse),
    )
}


# ------------------------------------------------------------------------------------------------------------
# The canonical input: what the API stores at submit and the worker reads back
# ------------------------------------------------------------------------------------------------------------


def stored_input(endpoint: Endpoint, payload: BaseModel, random_seed: int) -> dict[str, Any]:
    """The input as the API stores it, JSON-ready: validated by the endpoint's model, every field of the root
    model present (defaults filled; the root's for fields this endpoint lacks, which its task ignores), the
    task resolved, and `random_seed` where the request left the seed to the server."""
    fields = known_fields(payload) | {"task": task_of(endpoint.id, payload)}
    if fields.get("seed") is None:
        fields["seed"] = random_seed
    return WanVACEInput.model_construct(**fields).model_dump(mode="json")


def canonical_input(endpoint_id: str, stored: Mapping[str, Any]) -> WanVACEInput:
    """The worker's typed view of a stored input, built with `model_construct`: no validation runs.

    The data was validated at submit by the endpoint's own model, so validating again would only re-apply
    user-facing rules to what this server wrote itself, and would fail an accepted job if a later release
    tightened a rule. Rows stored before `stored_input` existed hold only the endpoint's own fields and no
    task: the endpoint names the task, and missing fields take the root model's defaults, as new rows do.
    """
    endpoint = ENDPOINTS[endpoint_id]
    fields = {name: value for name, value in stored.items() if name in WanVACEInput.model_fields}
    if endpoint.task is not None:
        fields["task"] = endpoint.task  # a task sub-path wins, as task_of says
    return WanVACEInput.model_construct(**fields)


def parse_app_path(path: str) -> str | None:
    """The canonical endpoint id for a path such as "/fal-ai/wan-vace-14b/depth/", or None if it is not ours.

    Leading and trailing slashes are ignored (fal's SDK adds a trailing one); nothing else is normalised.
    """
    endpoint_id = path.strip("/")
    return endpoint_id if endpoint_id in ENDPOINTS else None


# ------------------------------------------------------------------------------------------------------------
# What is refused at submit (the API process cannot import the worker's plans). A refusal names the field it
# is about. `feature_not_supported`: a field asked for something this release does not do (delete the rule
# when it ships). The others are requests with nothing to work on, which fal's schema cannot express.
# A model the operator has not installed fails the job with a message naming `vace download --annotators`
# (the API process cannot see the worker's folders). After these, `submit_refusal` applies the operator's
# output-length cap (max_output_frames).
# ------------------------------------------------------------------------------------------------------------

NOT_SUPPORTED = "feature_not_supported"
MISSING_INPUT = "missing_input"
# Tasks that edit a video and so cannot run without one; depth and pose (the root's default task) become
# reference-to-video without video_url.
_NEEDS_VIDEO = ("inpainting", "outpainting", "reframe")


@dataclass(frozen=True)
class Refusal:
    """A request refused at submit: server/api/routes/queue.py answers it as a 422 detail item."""

    message: str
    error_type: str
    loc: tuple[str, ...] = ("body",)
    ctx: dict[str, Any] | None = None  # the figures behind it, as in pydantic's own items (e.g. {"le": 121})


def _as_root(task: str, payload: BaseModel) -> WanVACEInput:
    """A validated payload seen through the root model, which has every field: typed reads, no getattr.
    Fields the endpoint lacks take the root's defaults, which its task ignores."""
    return WanVACEInput.model_construct(**(known_fields(payload) | {"task": task}))


def _input_refusal(task: str, request: WanVACEInput) -> Refusal | None:
    if request.video_url is None:
        if task in _NEEDS_VIDEO:
            return Refusal(f"task {task!r} edits a video: send video_url", MISSING_INPUT,
                           ("body", "video_url"))
        if not (request.ref_image_urls or request.first_frame_url or request.last_frame_url):
            return Refusal("send video_url, or ref_image_urls (or first_frame_url / last_frame_url) for "
                           "reference-to-video; this request has nothing to generate from", MISSING_INPUT,
                           ("body", "video_url"))
    if task == "inpainting":
        if request.preprocess:
            return Refusal("preprocess=true on inpainting (automatic mask tracking) is not supported yet; "
                           "send mask_video_url or mask_image_url with preprocess=false", NOT_SUPPORTED,
                           ("body", "preprocess"))
        if not (request.mask_video_url or request.mask_image_url):
            return Refusal("inpainting without a mask (automatic mask tracking) is not supported yet; "
                           "send mask_video_url or mask_image_url", NOT_SUPPORTED, ("body", "mask_video_url"))
    if task == "outpainting":
        # Not a missing feature but a request with nothing to do: fal's schema allows all sides off (the
        # defaults), and generating with nothing to expand would only re-render the input at full GPU cost.
        sides = (request.expand_left, request.expand_right, request.expand_top, request.expand_bottom)
        if not any(sides) or request.expand_ratio <= 0:
            return Refusal("outpainting with nothing to expand: set at least one of expand_left, "
                           "expand_right, expand_top, expand_bottom to true and expand_ratio > 0",
                           NOT_SUPPORTED, ("body", "expand_ratio"))
    if request.num_interpolated_frames and request.temporal_upsample_factor and (
            request.num_interpolated_frames != request.temporal_upsample_factor):
        return Refusal("num_interpolated_frames and its old name temporal_upsample_factor disagree; send "
                       "only num_interpolated_frames", "value_error", ("body", "temporal_upsample_factor"))
    return None


def output_frames_at_submit(task: str, payload: BaseModel) -> int | None:
    """The output's frame count when the request alone fixes it, else None (it follows the input video).

    The count is num_frames, lengthened by interpolation (one more in-between per gap for each downsample
    step, as fal documents, plus num_interpolated_frames). Auto downsampling depends on the output fps,
    known here unless it follows the input.
    """
    request = _as_root(task, payload)
    if request.video_url is not None and request.match_input_num_frames:
        return None
    fps = request.frames_per_second
    follows_input_fps = request.match_input_frames_per_second or fps is None
    auto = request.enable_auto_downsample and not request.temporal_downsample_factor
    if request.video_url is not None and follows_input_fps and auto:
        return None  # the factor follows the input's fps
    down = downsample_factor(request, float(fps or 16))
    return output_frames(request.num_frames, down, interpolated_frames(request))


def unsupported_reason(task: str, payload: BaseModel) -> str | None:
    """Why this release cannot run the request, or None if it can (the message of `submit_refusal`'s
    refusal before the length cap)."""
    refusal = _input_refusal(task, _as_root(task, payload))
    return None if refusal is None else refusal.message


def submit_refusal(task: str, payload: BaseModel, limits: InputLimits | None = None) -> Refusal | None:
    """Why the request is refused at submit, or None.

    `limits` are the operator's (InputLimits.from_settings); without them the defaults apply, which admit
    every length fal's schema allows. Lengths that depend on the input video are checked by the worker.
    """
    request = _as_root(task, payload)
    refusal = _input_refusal(task, request)
    if refusal is not None:
        return refusal
    limits = limits or InputLimits()
    reason = limits.reference_count_refusal(len(request.ref_image_urls or []))
    if reason is not None:
        return Refusal(reason, TOO_MANY_REFERENCES, ("body", "ref_image_urls"))
    count = output_frames_at_submit(task, payload)
    if count is None:
        return None
    field = output_length_field(interpolated_frames(request), follows_input=False,
                                interpolation=interpolation_field(request))
    reason = limits.output_refusal(count, field)
    if reason is not None:
        return Refusal(reason, OUTPUT_TOO_LONG, ("body", field))
    return None
