"""fal's current contract at the API (docs: fal-current-schema.md): what is accepted, what is refused by name
and how, unknown fields, webhook URLs, and the per-endpoint OpenAPI document. In-process app over the memory
store (no worker): every assertion is on the HTTP answer or the stored job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.api.app import create_app
from server.contract.endpoints import ENDPOINTS
from server.jobs.factory import MEMORY, open_job_store
from server.settings import Settings
from tests.server.conftest import ProtocolApp

APP = "fal-ai/wan-vace-14b"
VIDEO = "https://example.com/v.mp4"
IMAGE = "https://example.com/ref.png"
ERRORS_DOC = "https://docs.fal.ai/errors/#"

# fal's current full example as published (video_url left empty), with its own field values.
FAL_EXAMPLE: dict[str, Any] = {
    "prompt": "a man riding a horse", "negative_prompt": "letterboxing, borders, black bars, bright colors",
    "match_input_num_frames": False, "num_frames": 81, "match_input_frames_per_second": False,
    "frames_per_second": 16, "resolution": "auto", "aspect_ratio": "auto", "num_inference_steps": 30,
    "guidance_scale": 5, "video_url": "", "enable_safety_checker": True, "enable_prompt_expansion": False,
    "preprocess": False, "sampler": "unipc", "shift": 5, "ref_image_urls": [], "acceleration": "regular",
    "video_quality": "high", "video_write_mode": "balanced", "num_interpolated_frames": 0,
    "temporal_downsample_factor": 0, "enable_auto_downsample": False, "auto_downsample_min_fps": 15,
    "interpolator_model": "film", "sync_mode": False, "transparency_mode": "content_aware",
    "return_frames_zip": False, "task": "depth",
}


def submit(app: ProtocolApp, endpoint: str, body: dict[str, Any], **params: str) -> Any:
    return app.client.post(f"/queue/{endpoint}", json=body, params=params)


def only_item(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["X-Fal-Retryable"] == "false"
    (item,) = response.json()["detail"]
    assert item["url"] == ERRORS_DOC + item["type"]
    return dict(item)


# --- what fal accepts is accepted -------------------------------------------------------------------------


def test_fals_full_example_is_accepted_on_every_endpoint_with_a_video(protocol_app: ProtocolApp) -> None:
    for endpoint_id, endpoint in ENDPOINTS.items():
        body = {k: v for k, v in FAL_EXAMPLE.items() if k != "task" or endpoint.task is None}
        body |= {"video_url": VIDEO}
        if endpoint.task == "inpainting":
            body["mask_image_url"] = IMAGE  # inpainting needs a mask; the image alone will do
        if endpoint.task == "outpainting":
            body["expand_left"] = True
        response = submit(protocol_app, endpoint_id, body)
        assert response.status_code == 200, (endpoint_id, response.text)
        job = protocol_app.store.get(response.json()["request_id"])
        assert job.input["resolution"] == "auto" and job.input["num_frames"] == 81
        # No field of fal's example is "unknown" anywhere it is sent, except those the endpoint lacks.
        ignored = [e.message for e in protocol_app.store.logs(job.id) if "Ignored" in e.message]
        lacks = sorted(set(body) - set(endpoint.input_model.model_fields))
        assert ignored == ([f"Ignored field(s) not in {endpoint_id}'s schema: {', '.join(lacks)}"]
                           if lacks else [])


@pytest.mark.parametrize("values", [{"num_frames": 17}, {"frames_per_second": None}, {"resolution": "auto"},
                                    {"interpolator_model": "film", "num_interpolated_frames": 5},
                                    {"enable_auto_downsample": True, "auto_downsample_min_fps": 60}])
def test_values_the_seed_schema_refused_are_accepted(protocol_app: ProtocolApp,
                                                     values: dict[str, Any]) -> None:
    response = submit(protocol_app, f"{APP}/depth", {"prompt": "p", "video_url": VIDEO} | values)
    assert response.status_code == 200, response.text


def test_root_without_a_video_is_reference_to_video(protocol_app: ProtocolApp) -> None:
    response = submit(protocol_app, APP, FAL_EXAMPLE | {"ref_image_urls": [IMAGE]})
    assert response.status_code == 200
    assert protocol_app.store.get(response.json()["request_id"]).input["video_url"] is None
    first_frame = submit(protocol_app, APP, {"prompt": "p", "first_frame_url": IMAGE})
    assert first_frame.status_code == 200


def test_inpainting_with_only_a_mask_image_is_accepted(protocol_app: ProtocolApp) -> None:
    response = submit(protocol_app, f"{APP}/inpainting", {"prompt": "p", "video_url": VIDEO,
                                                          "mask_image_url": IMAGE})
    assert response.status_code == 200, response.text


# --- refused by name -------------------------------------------------------------------------------------


def test_root_with_neither_video_nor_references_is_refused(protocol_app: ProtocolApp) -> None:
    item = only_item(submit(protocol_app, APP, FAL_EXAMPLE))  # fal's example as published: nothing to use
    assert item["loc"] == ["body", "video_url"] and item["type"] == "missing_input"
    assert "ref_image_urls" in item["msg"]
    item = only_item(submit(protocol_app, APP, {"prompt": "p", "task": "reframe", "ref_image_urls": [IMAGE]}))
    assert item["loc"] == ["body", "video_url"] and "'reframe' edits a video" in item["msg"]


def test_preprocess_on_inpainting_is_refused_by_name(protocol_app: ProtocolApp) -> None:
    body = {"prompt": "p", "video_url": VIDEO, "mask_video_url": VIDEO, "preprocess": True}
    for endpoint, extra in ((f"{APP}/inpainting", {}), (APP, {"task": "inpainting"})):
        item = only_item(submit(protocol_app, endpoint, body | extra))
        assert item["loc"] == ["body", "preprocess"] and item["type"] == "feature_not_supported"
    assert protocol_app.store.count_queued() == 0


def test_the_old_and_new_interpolation_names_must_agree(protocol_app: ProtocolApp) -> None:
    body = {"video_url": VIDEO, "num_interpolated_frames": 1, "temporal_upsample_factor": 2}
    item = only_item(submit(protocol_app, f"{APP}/reframe", body))
    assert item["loc"] == ["body", "temporal_upsample_factor"]
    assert submit(protocol_app, f"{APP}/reframe", body | {"temporal_upsample_factor": 1}).status_code == 200


@pytest.mark.parametrize(("field", "value"), [("acceleration", "warp-speed"), ("video_quality", "ultra"),
                                              ("num_interpolated_frames", 99), ("video_write_mode", "slow"),
                                              ("transparency_mode", "grey"), ("num_frames", 16),
                                              ("auto_downsample_min_fps", 0.5), ("resolution", "1080p")])
def test_nonsense_values_are_schema_422s_in_fals_form(protocol_app: ProtocolApp, field: str,
                                                     value: Any) -> None:
    item = only_item(submit(protocol_app, APP, {"prompt": "p", "video_url": VIDEO, field: value}))
    assert item["loc"] == ["body", field]


# --- unknown fields ----------------------------------------------------------------------------------------


def test_an_unknown_field_is_ignored_with_one_log_line(protocol_app: ProtocolApp) -> None:
    response = submit(protocol_app, f"{APP}/pose", {"prompt": "p", "video_url": VIDEO, "colour": "blue",
                                                    "zoom_factor": 0.5})
    assert response.status_code == 200
    job = protocol_app.store.get(response.json()["request_id"])
    assert "colour" not in job.input
    lines = [(e.level, e.message) for e in protocol_app.store.logs(job.id)]
    assert lines == [("WARN", f"Ignored field(s) not in {APP}/pose's schema: colour, zoom_factor")]
    status = protocol_app.client.get(response.json()["status_url"], params={"logs": 1})
    assert status.status_code == 202  # queued: the line is there once it runs (status shows logs then)


# --- webhooks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com/hook", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest", "http://127.0.0.1:9/hook"])
def test_a_webhook_the_ssrf_policy_refuses_is_a_422_at_submit(protocol_app: ProtocolApp, url: str) -> None:
    item = only_item(submit(protocol_app, f"{APP}/depth", {"prompt": "p", "video_url": VIDEO},
                            fal_webhook=url))
    assert item["loc"] == ["query", "fal_webhook"] and item["type"] == "invalid_webhook_url"
    assert protocol_app.store.count_queued() == 0


def test_a_public_webhook_is_accepted(protocol_app: ProtocolApp) -> None:
    response = submit(protocol_app, f"{APP}/depth", {"prompt": "p", "video_url": VIDEO},
                      fal_webhook="http://93.184.215.14/hook")
    assert response.status_code == 200


# --- per-endpoint OpenAPI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint_id", list(ENDPOINTS))
def test_per_endpoint_openapi_in_fals_shape(protocol_app: ProtocolApp, endpoint_id: str) -> None:
    response = protocol_app.client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": endpoint_id})
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.0") and doc["servers"] == [{"url": "http://testserver/queue"}]
    assert "security" not in doc  # no keys on this server
    paths = doc["paths"]
    base = f"/{endpoint_id}"
    assert set(paths) == {base, f"{base}/requests/{{request_id}}", f"{base}/requests/{{request_id}}/status",
                          f"{base}/requests/{{request_id}}/cancel"}
    schemas = doc["components"]["schemas"]
    assert schemas["QueueStatus"]["properties"]["status"]["enum"] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    input_ref = paths[base]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    input_schema = schemas[input_ref.rsplit("/", 1)[-1]]
    assert set(input_schema["properties"]) == set(ENDPOINTS[endpoint_id].input_model.model_fields)
    assert input_ref.endswith("Input") and input_ref.split("/")[-1].startswith("WanVace14b")
    result = paths[f"{base}/requests/{{request_id}}"]["get"]["responses"]["200"]["content"]
    output = schemas[result["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert {"video", "prompt", "seed", "frames_zip"} <= set(output["properties"])
    video = schemas[output["properties"]["video"]["$ref"].rsplit("/", 1)[-1]]
    assert {"width", "height", "fps", "duration", "num_frames"} <= set(video["properties"])
    # Every $ref resolves inside the document.
    for ref in _refs(doc):
        assert ref.rsplit("/", 1)[-1] in schemas, ref


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "$ref"] + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def test_openapi_names_api_key_auth_when_keys_are_on_and_refuses_unknown_ids(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0, api_keys=("k1",),
                        public_url="https://vace.example.com")
    app = create_app(settings, run_workers=False, store=open_job_store(MEMORY))
    with TestClient(app) as client:
        doc = client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": f"{APP}/reframe"}).json()
        missing = client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/flux"})
    assert doc["security"] == [{"apiKeyAuth": []}]
    assert doc["components"]["securitySchemes"]["apiKeyAuth"]["name"] == "Authorization"
    assert doc["servers"] == [{"url": "https://vace.example.com/queue"}]
    assert missing.status_code == 404
