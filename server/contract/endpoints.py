"""The endpoint ids this server answers to, their models, and what this release refuses at submit.

Kept free of heavy imports: the API process imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    task_of,
)
from server.contract.limits import OUTPUT_TOO_LONG, InputLimits, output_length_field
from server.contract.outputs import (
    WanVACEDepthResponse,
    WanVACEInpaintingResponse,
    WanVACEOutpaintingResponse,
    WanVACEPoseResponse,
    WanVACEReframeResponse,
    WanVACEResponse,
)
from server.contract.timing import output_frames

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
    fields = payload.model_dump(mode="json") | {"task": task_of(endpoint.id, payload)}
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
# Features requested but not built yet. One row per gap: delete the row when the feature ships.
# Rows are checked in order and the first match is reported, so task-level gaps come before field-level ones.
# Everything else runs: preprocess=true (depth/pose annotators), prompt expansion, the safety checker and
# reframe's temporal factors. A model the operator has not installed fails the job with a message naming
# `vace download --annotators` (the API process cannot see the worker's folders).
# The one row that is not a missing feature (outpainting with nothing to expand) says so in its message.
# After the rows, `submit_refusal` applies the operator's output-length cap (max_output_frames).
# ------------------------------------------------------------------------------------------------------------


def _get(payload: BaseModel, name: str, default: Any = None) -> Any:
    # Per-task models lack some fields (the depth model has no zoom_factor); absent means "not requested".
    return getattr(payload, name, default)


def _expands(payload: BaseModel) -> bool:
    sides = ("expand_left", "expand_right", "expand_top", "expand_bottom")
    return any(_get(payload, side, False) for side in sides) and float(_get(payload, "expand_ratio", 0.0)) > 0


_UNSUPPORTED: tuple[tuple[Callable[[str, BaseModel], bool], str], ...] = (
    (
        lambda task, p: task == "inpainting" and not (_get(p, "mask_video_url") or _get(p, "mask_image_url")),
        "inpainting without a mask (automatic mask tracking) is not supported yet; "
        "send mask_video_url or mask_image_url",
    ),
    # Not a missing feature but a request with nothing to do: fal's schema allows all sides off (the
    # defaults), and generating with nothing to expand would only re-render the input at full GPU cost.
    (
        lambda task, p: task == "outpainting" and not _expands(p),
        "outpainting with nothing to expand: set at least one of expand_left, expand_right, expand_top, "
        "expand_bottom to true and expand_ratio > 0",
    ),
)


def output_frames_at_submit(task: str, payload: BaseModel) -> int | None:
    """The output's frame count when the request alone fixes it, else None (it follows the input video).

    Only reframe interpolates (one more in-between per gap for each downsample step, as fal documents); the
    other tasks return num_frames frames. fps plays no part in the count.
    """
    if _get(payload, "match_input_num_frames", False):
        return None
    count = int(_get(payload, "num_frames", 81))
    if task != "reframe":
        return count
    return output_frames(count, int(_get(payload, "temporal_downsample_factor", 0)),
                         int(_get(payload, "temporal_upsample_factor", 0)))


def unsupported_reason(task: str, payload: BaseModel) -> str | None:
    """Why this release cannot run the request, or None if it can."""
    for applies, message in _UNSUPPORTED:
        if applies(task, payload):
            return message
    return None


@dataclass(frozen=True)
class Refusal:
    """A request refused at submit: server/api/routes/queue.py answers it as a 422 detail item."""

    message: str
    error_type: str
    loc: tuple[str, ...] = ("body",)


def submit_refusal(task: str, payload: BaseModel, limits: InputLimits | None = None) -> Refusal | None:
    """Why the request is refused at submit, or None.

    `limits` are the operator's (InputLimits.from_settings); without them the defaults apply, which admit
    every length fal's schema allows. Lengths that depend on the input video are checked by the worker.
    """
    reason = unsupported_reason(task, payload)
    if reason is not None:
        return Refusal(reason, "feature_not_supported")
    count = output_frames_at_submit(task, payload)
    if count is None:
        return None
    upsample = int(_get(payload, "temporal_upsample_factor", 0)) if task == "reframe" else 0
    field = output_length_field(upsample, follows_input=False)
    reason = (limits or InputLimits()).output_refusal(count, field)
    if reason is not None:
        return Refusal(reason, OUTPUT_TOO_LONG, ("body", field))
    return None
