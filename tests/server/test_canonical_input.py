"""The input the API stores at submit (server/contract/endpoints.py's stored_input) and the worker's typed
view of it (canonical_input), including rows stored by the previous release."""

from __future__ import annotations

from typing import Any

import pytest

from server.contract.endpoints import APP_ID, ENDPOINTS, canonical_input, stored_input
from server.contract.fields import TASKS
from server.contract.inputs import WanVACEInput
from server.worker.tasks import PLANS

URL = "https://example.com/v.mp4"
PAYLOADS: dict[str, dict[str, Any]] = {
    APP_ID: {"prompt": "p", "video_url": URL, "task": "pose", "preprocess": True, "paste_back": True},
    f"{APP_ID}/depth": {"prompt": "p", "video_url": URL, "seed": 7},
    f"{APP_ID}/pose": {"prompt": "p", "video_url": URL, "sampler": "euler", "shift": 2.5},
    f"{APP_ID}/inpainting": {"prompt": "p", "video_url": URL, "mask_video_url": URL, "ref_image_urls": [URL]},
    f"{APP_ID}/outpainting": {"prompt": "p", "video_url": URL, "expand_left": True, "paste_back": True},
    f"{APP_ID}/reframe": {"video_url": URL, "temporal_downsample_factor": 1, "zoom_factor": 0.5},
}


def previous_release_row(endpoint_id: str, payload: dict[str, Any], seed: int) -> dict[str, Any]:
    """What server/api/routes/queue.py stored before stored_input: the endpoint model's dump plus a seed."""
    data = ENDPOINTS[endpoint_id].input_model.model_validate(payload).model_dump(mode="json")
    return data | {"seed": data["seed"] if data["seed"] is not None else seed}


def new_row(endpoint_id: str, payload: dict[str, Any], seed: int) -> dict[str, Any]:
    endpoint = ENDPOINTS[endpoint_id]
    return stored_input(endpoint, endpoint.input_model.model_validate(payload), random_seed=seed)


@pytest.mark.parametrize("endpoint_id", list(PAYLOADS))
def test_stored_input_has_every_field_the_task_and_a_seed(endpoint_id: str) -> None:
    row = new_row(endpoint_id, PAYLOADS[endpoint_id], seed=11)
    assert set(row) == set(WanVACEInput.model_fields)
    assert row["task"] == (ENDPOINTS[endpoint_id].task or PAYLOADS[endpoint_id]["task"])
    assert row["seed"] == PAYLOADS[endpoint_id].get("seed", 11)  # the caller's seed wins


@pytest.mark.parametrize("endpoint_id", list(PAYLOADS))
def test_previous_release_rows_read_as_new_ones(endpoint_id: str) -> None:
    old = canonical_input(endpoint_id, previous_release_row(endpoint_id, PAYLOADS[endpoint_id], seed=3))
    new = canonical_input(endpoint_id, new_row(endpoint_id, PAYLOADS[endpoint_id], seed=3))
    assert old.model_dump() == new.model_dump()
    assert old.task in TASKS and old.seed is not None


def test_endpoint_defaults_are_kept_where_they_differ_from_the_root() -> None:
    request = canonical_input(f"{APP_ID}/reframe", new_row(f"{APP_ID}/reframe", {"video_url": URL}, 1))
    assert request.prompt == "" and request.match_input_num_frames and request.match_input_frames_per_second


def test_stored_data_is_not_validated_again() -> None:
    # Accepted at submit by an earlier release: a later, stricter rule must not fail the queued job.
    row = new_row(f"{APP_ID}/depth", PAYLOADS[f"{APP_ID}/depth"], 1) | {"num_frames": 400, "unknown": 1}
    request = canonical_input(f"{APP_ID}/depth", row)
    assert request.num_frames == 400 and "unknown" not in request.model_dump()


def test_a_task_sub_path_wins_over_a_stored_task() -> None:
    row = new_row(f"{APP_ID}/depth", PAYLOADS[f"{APP_ID}/depth"], 1) | {"task": "pose"}
    assert canonical_input(f"{APP_ID}/depth", row).task == "depth"


def test_unknown_fields_are_not_stored() -> None:
    row = new_row(f"{APP_ID}/depth", PAYLOADS[f"{APP_ID}/depth"] | {"not_a_field": 1, "task": "pose"}, 1)
    assert "not_a_field" not in row and row["task"] == "depth"


def test_every_task_has_one_plan() -> None:
    assert sorted(PLANS) == sorted(TASKS)
    assert all(plan.name == task for task, plan in PLANS.items())
