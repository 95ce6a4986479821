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
from server.contract.limits import OUTPUT_TOO_LONG, TOO_MANY_REFERENCES, InputLimits, output_length_field
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
# Each task's rules at submit (TASK_RULES, data keyed by task; the API process cannot import the worker's
# plans). A refusal is a feature requested but not built yet: delete it when the feature ships. Everything
# else runs: preprocess=true (depth/pose annotators), prompt expansion, the safety checker and reframe's
# temporal factors. A model the operator has not installed fails the job with a message naming
# `vace download --annotators` (the API process cannot see the worker's folders).
# The one refusal that is not a missing feature (outpainting with nothing to expand) says so in its message.
# After the refusal, `submit_refusal` applies the operator's output-length cap (max_output_frames).
# ------------------------------------------------------------------------------------------------------------


def _needs_a_mask(request: WanVACEInput) -> str | None:
    if request.mask_video_url or request.mask_image_url:
        return None
    return ("inpainting without a mask (automatic mask tracking) is not supported yet; "
            "send mask_video_url or mask_image_url")


def _needs_a_side(request: WanVACEInput) -> str | None:
    # Not a missing feature but a request with nothing to do: fal's schema allows all sides off (the
    # defaults), and generating with nothing to expand would only re-render the input at full GPU cost.
    sides = (request.expand_left, request.expand_right, request.expand_top, request.expand_bottom)
    if any(sides) and request.expand_ratio > 0:
        return None
    return ("outpainting with nothing to expand: set at least one of expand_left, expand_right, expand_top, "
            "expand_bottom to true and expand_ratio > 0")


def _runs(request: WanVACEInput) -> str | None:
    return None


@dataclass(frozen=True)
class TaskRules:
    """What the API process must know of a task at submit, as data. The worker's plans
    (server/worker/tasks.py, which the API may not import) read `temporal_factors` from here too."""

    refusal: Callable[[WanVACEInput], str | None] = _runs  # why this release cannot run it, or None
    # The temporal_* fields apply: every (d+1)-th frame is generated and the output interpolated.
    temporal_factors: bool = False


TASK_RULES: dict[str, TaskRules] = {
    "depth": TaskRules(),
    "pose": TaskRules(),
    "inpainting": TaskRules(refusal=_needs_a_mask),
    "outpainting": TaskRules(refusal=_needs_a_side),
    "reframe": TaskRules(temporal_factors=True),
}


def _as_root(task: str, payload: BaseModel) -> WanVACEInput:
    """A validated payload seen through the root model, which has every field: typed reads, no getattr.
    Fields the endpoint lacks take the root's defaults, which its task ignores."""
    return WanVACEInput.model_construct(**(payload.model_dump() | {"task": task}))


def output_frames_at_submit(task: str, payload: BaseModel) -> int | None:
    """The output's frame count when the request alone fixes it, else None (it follows the input video).

    Only tasks with temporal factors interpolate (one more in-between per gap for each downsample step, as
    fal documents); the others return num_frames frames. fps plays no part in the count.
    """
    request = _as_root(task, payload)
    if request.match_input_num_frames:
        return None
    if not TASK_RULES[task].temporal_factors:
        return request.num_frames
    return output_frames(request.num_frames, request.temporal_downsample_factor,
                         request.temporal_upsample_factor)


def unsupported_reason(task: str, payload: BaseModel) -> str | None:
    """Why this release cannot run the request, or None if it can."""
    return TASK_RULES[task].refusal(_as_root(task, payload))


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
    limits = limits or InputLimits()
    reason = limits.reference_count_refusal(len(_as_root(task, payload).ref_image_urls or []))
    if reason is not None:
        return Refusal(reason, TOO_MANY_REFERENCES, ("body", "ref_image_urls"))
    count = output_frames_at_submit(task, payload)
    if count is None:
        return None
    upsample = _as_root(task, payload).temporal_upsample_factor if TASK_RULES[task].temporal_factors else 0
    field = output_length_field(upsample, follows_input=False)
    reason = limits.output_refusal(count, field)
    if reason is not None:
        return Refusal(reason, OUTPUT_TOO_LONG, ("body", field))
    return None
