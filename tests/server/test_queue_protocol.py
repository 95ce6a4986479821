"""fal's queue protocol: routes, bodies, codes, headers, addressing variants.

Answers that need no worker (validation, unknown ids, cancel outcomes, queue positions) are checked on the
app in-process over the in-memory job store (the `protocol_app` fixture); the rest against a live server
with the tiny model, submitting only requests that fail fast or are cancelled before they cost a
generation. The end-to-end generations live in test_generation_e2e.py.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from server.jobs.model import Status
from tests.server.conftest import LiveServer, Media, ProtocolApp, data_uri, wait_completed

APP = "fal-ai/wan-vace-14b"


def depth_input(video_url: str, **extra: object) -> dict[str, object]:
    return {"prompt": "a test", "video_url": video_url, "resolution": "240p", "num_inference_steps": 2,
            **extra}


def test_health_and_docs(live_server: LiveServer) -> None:
    with live_server.client() as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["workers"][0]["state"] == "ready"
        # A CPU worker has no GPU budget: it publishes no capacity, and nothing is refused on memory grounds.
        assert health.json()["workers"][0]["capacity"] is None
        assert client.get("/readyz").json()["capacity"] is None
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
    for endpoint in ("", "/depth", "/pose", "/inpainting", "/outpainting", "/reframe"):
        assert f"/queue/{APP}{endpoint}" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert {"WanVACEInput", "WanVACEInpaintingRequest", "WanVACEReframeRequest", "File"} <= set(schemas)
    assert schemas["WanVACEInput"]["properties"]["num_frames"]["maximum"] == 241


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"num_frames": 16}, "num_frames"),  # fal's current range starts at 17
        ({"num_frames": 242}, "num_frames"),
        ({"frames_per_second": 31}, "frames_per_second"),
        ({"resolution": "1080p"}, "resolution"),
        ({"video_url": ""}, "video_url"),
        ({"guidance_scale": 11}, "guidance_scale"),
    ],
)
def test_out_of_range_fields_are_422_with_fastapi_detail(protocol_app: ProtocolApp, change: dict[str, object],
                                                         field: str) -> None:
    body = depth_input("https://example.com/v.mp4") | change
    response = protocol_app.client.post(f"/queue/{APP}/depth", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert detail[0]["loc"] == ["body", field]
    assert response.headers["x-fal-request-id"]


def test_missing_prompt_is_422(protocol_app: ProtocolApp) -> None:
    response = protocol_app.client.post(f"/queue/{APP}/pose", json={"video_url": "https://example.com/v.mp4"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_requests_that_cannot_be_served_are_refused_at_submit(protocol_app: ProtocolApp) -> None:
    """Refused before any GPU time is spent, in FastAPI's detail-list form."""
    client = protocol_app.client
    url = "https://example.com/v.mp4"
    nothing_to_expand = client.post(f"/queue/{APP}/outpainting", json=depth_input(url))
    no_mask = client.post(f"/queue/{APP}", json=depth_input(url, task="inpainting"))
    for response in (nothing_to_expand, no_mask):
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "feature_not_supported"
        assert response.headers["x-fal-request-id"]
    assert "expand" in nothing_to_expand.json()["detail"][0]["msg"]
    assert "mask" in no_mask.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "path",
    [
        f"/queue/{APP}/requests/{{id}}/status",
        f"/queue/{APP}/depth/requests/{{id}}/status",
        f"/queue/{APP}/requests/{{id}}",
        f"/queue/{APP}/requests/{{id}}/",
        f"/queue/{APP}/requests/{{id}}/status/",
    ],
)
def test_unknown_request_id_is_404(protocol_app: ProtocolApp, path: str) -> None:
    response = protocol_app.client.get(path.format(id=uuid.uuid4()))
    assert response.status_code == 404
    assert response.json() == {"detail": "Request not found"}
    assert response.headers["x-fal-request-id"]


def test_unknown_id_cancel_is_404(protocol_app: ProtocolApp) -> None:
    response = protocol_app.client.put(f"/queue/{APP}/requests/{uuid.uuid4()}/cancel")
    assert response.status_code == 404
    assert response.json()["status"] == "NOT_FOUND"


def test_cancel_outcomes_per_state(protocol_app: ProtocolApp) -> None:
    """Queued: cancelled at once; running: requested (202 both, as fal); completed: 400."""
    client, store = protocol_app.client, protocol_app.store
    done, running, queued = (client.post(f"/queue/{APP}/depth", json=depth_input("https://example.com/v.mp4"))
                             .json() for _ in range(3))
    assert store.claim("w").id == done["request_id"] and store.complete(done["request_id"], "w", {"seed": 1})
    assert store.claim("w").id == running["request_id"]
    answers = {name: client.put(body["cancel_url"]) for name, body in
               (("queued", queued), ("running", running), ("done", done))}
    assert (answers["queued"].status_code, answers["queued"].json()) == (202, {"status": "OK"})
    assert (answers["running"].status_code, answers["running"].json()) == (
        202, {"status": "CANCELLATION_REQUESTED"})
    assert (answers["done"].status_code, answers["done"].json()) == (400, {"status": "ALREADY_COMPLETED"})
    cancelled = client.get(queued["status_url"]).json()
    assert cancelled["status"] == "COMPLETED" and cancelled["error_type"] == "client_cancelled"
    assert client.get(running["status_url"]).json()["status"] == "IN_PROGRESS"
    assert store.get(running["request_id"]).cancel_requested


def test_queue_positions_follow_priority_then_arrival(protocol_app: ProtocolApp) -> None:
    client = protocol_app.client
    body = depth_input("https://example.com/v.mp4")
    first = client.post(f"/queue/{APP}/depth", json=body).json()
    second = client.post(f"/queue/{APP}/depth", json=body).json()
    urgent = client.post(f"/queue/{APP}/depth", json=body, headers={"x-fal-queue-priority": "high"}).json()
    assert [first["queue_position"], second["queue_position"], urgent["queue_position"]] == [0, 1, 0]
    positions = [client.get(b["status_url"]).json() for b in (urgent, first, second)]
    assert [(p["status"], p["queue_position"]) for p in positions] == [("IN_QUEUE", 0), ("IN_QUEUE", 1),
                                                                         ("IN_QUEUE", 2)]
    assert protocol_app.store.claim("w").id == urgent["request_id"]
    assert protocol_app.store.get(urgent["request_id"]).status is Status.IN_PROGRESS
    assert client.get(second["status_url"]).json()["queue_position"] == 1


def test_failed_job_status_and_result_replay_the_error(live_server: LiveServer, media: Media) -> None:
    """A file that is not a video passes the schema, fails in the worker, and reads as fal would say it."""
    with live_server.client() as client:
        submit = client.post(f"/queue/{APP}/depth", json=depth_input(data_uri(media.not_a_video)))
        assert submit.status_code == 200
        body = submit.json()
        assert set(body) >= {"request_id", "status", "response_url", "status_url", "cancel_url",
                             "queue_position"}
        assert body["status"] == "IN_QUEUE"
        assert body["status_url"] == f"{live_server.base}/queue/{APP}/requests/{body['request_id']}/status"
        assert submit.headers["x-fal-request-id"] == body["request_id"]
        status = wait_completed(client, body["status_url"])
        assert status["error_type"] == "unsupported_video_format"
        assert "video" in status["error"]
        assert status["logs"] and all({"message", "level", "source", "timestamp"} <= set(e)
                                      for e in status["logs"])
        result = client.get(body["response_url"])
        assert result.status_code == 422
        assert result.json()["detail"][0]["loc"] == ["body", "video_url"]
        assert result.json()["detail"][0]["type"] == "unsupported_video_format"
        assert result.headers["x-fal-request-id"] == body["request_id"]


def test_unreachable_url_fails_with_download_error(live_server: LiveServer, media_server: str) -> None:
    with live_server.client() as client:
        body = client.post(f"/queue/{APP}/depth", json=depth_input(f"{media_server}/missing.mp4")).json()
        status = wait_completed(client, body["status_url"])
    assert status["error_type"] == "file_download_error"
    assert "404" in status["error"]


def test_sync_run_route_replays_errors(live_server: LiveServer, media: Media) -> None:
    with live_server.client() as client:
        for path in (f"/run/{APP}/depth", f"/{APP}/depth"):
            response = client.post(path, json=depth_input(data_uri(media.not_a_video)))
            assert response.status_code == 422, path
            assert response.json()["detail"][0]["type"] == "unsupported_video_format"
            assert response.headers["x-fal-request-id"]


def test_logs_flag_spellings(live_server: LiveServer, media: Media) -> None:
    with live_server.client() as client:
        body = client.post(f"/queue/{APP}/depth", json=depth_input(data_uri(media.not_a_video))).json()
        wait_completed(client, body["status_url"])
        for flag in ("1", "true", "True"):
            assert client.get(body["status_url"], params={"logs": flag}).json()["logs"], flag
        for flag in ("0", "false"):
            assert client.get(body["status_url"], params={"logs": flag}).json()["logs"] is None, flag
        no_flag = client.get(body["status_url"]).json()
        assert "logs" in no_flag and no_flag["logs"] is None
        # A repeated flag binds its last value, as FastAPI's Query does (the fast path must agree).
        assert client.get(body["status_url"] + "?logs=0&logs=1").json()["logs"]
        assert client.get(body["status_url"] + "?logs=1&logs=0").json()["logs"] is None
        assert no_flag["metrics"]["inference_time"] is not None


def test_host_based_queue_addressing_and_no_redirects(live_server: LiveServer, media: Media) -> None:
    """`Host: queue.*` gives queue semantics without the /queue prefix, and URLs follow that form."""
    headers = {"Host": f"queue.localhost:{live_server.port}"}
    with live_server.client(headers=headers) as client:
        submit = client.post(f"/{APP}/depth/", json=depth_input(data_uri(media.not_a_video)))
        assert submit.status_code == 200, submit.text
        body = submit.json()
        assert body["status_url"] == (f"http://queue.localhost:{live_server.port}/{APP}/requests/"
                                      f"{body['request_id']}/status")
        rid = body["request_id"]
        for path in (f"/{APP}/requests/{rid}/status", f"/{APP}/depth/requests/{rid}/status/",
                     f"/{APP}/requests/{rid}/status?logs=1"):
            response = client.get(path)
            assert response.status_code in (200, 202), path
            assert response.json()["request_id"] == rid
        wait_completed(client, f"/{APP}/requests/{rid}/status")
        assert client.get(f"/{APP}/requests/{rid}/").status_code == 422


def test_cancel_of_finished_job_is_already_completed(live_server: LiveServer, media: Media) -> None:
    with live_server.client() as client:
        body = client.post(f"/queue/{APP}/depth", json=depth_input(data_uri(media.not_a_video))).json()
        wait_completed(client, body["status_url"])
        response = client.put(body["cancel_url"])
    assert response.status_code == 400
    assert response.json() == {"status": "ALREADY_COMPLETED"}


def test_status_stream_closes_after_completed(live_server: LiveServer, media: Media) -> None:
    with live_server.client() as client:
        body = client.post(f"/queue/{APP}/depth", json=depth_input(data_uri(media.not_a_video))).json()
        events = []
        with client.stream("GET", body["status_url"] + "/stream", params={"logs": "1"},
                           headers={"Accept": "text/event-stream"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[len("data: "):]))
    assert events[-1]["status"] == "COMPLETED"
    assert events[-1]["error_type"] == "unsupported_video_format"
    messages = [e["message"] for event in events for e in (event.get("logs") or [])]
    assert len(messages) == len(set(messages)), "each event carries only new log lines"
    assert any("Fetching inputs" in m for m in messages)


def test_every_response_carries_request_id(protocol_app: ProtocolApp) -> None:
    client = protocol_app.client
    for response in (client.get("/health"), client.get("/nope"), client.get("/openapi.json"),
                     client.post(f"/queue/{APP}", json={})):
        assert response.headers.get("x-fal-request-id"), response.url
        assert not response.is_redirect


def test_files_route_refuses_path_tricks(live_server: LiveServer) -> None:
    with live_server.client() as client:
        for path in ("/files/../jobs.sqlite3", "/files/abc/..%2Fjobs.sqlite3", "/files/x/y"):
            assert client.get(path).status_code == 404, path
    assert httpx.get(live_server.base + "/files/%2e%2e/jobs.sqlite3").status_code == 404


def test_status_poll_through_the_proxy_and_with_a_trailing_slash(live_server: LiveServer,
                                                                 media: Media) -> None:
    """The status fast path sees the path after addressing: proxy and trailing-slash forms reach it."""
    with live_server.client() as client:
        body = client.post(f"/queue/{APP}/depth", json=depth_input(data_uri(media.not_a_video))).json()
        done = wait_completed(client, body["status_url"])
        proxied = client.get("/api/fal/proxy", headers={
            "x-fal-target-url": f"https://queue.fal.run/{APP}/requests/{body['request_id']}/status"})
        slashed = client.get(body["status_url"] + "/")
    for response in (proxied, slashed):
        assert response.status_code == 200
        assert response.headers["x-fal-request-id"] == body["request_id"]
        assert response.json()["status"] == "COMPLETED"
        assert response.json()["error"] == done["error"]
