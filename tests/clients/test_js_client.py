"""The real `@fal-ai/client` from npm, configured with `proxyUrl` as docs/clients.md tells users to.

Each test runs one scenario of js/scenarios.mjs in Node and asserts on the JSON it prints. The npm
packages are installed from js/package-lock.json on first use; without npm the tests skip, loudly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.conftest import (
    APP,
    SUB_PATH_SIZES,
    assert_current_example_output,
    assert_video,
    current_full_example,
    failing_input,
    sub_path_example,
)
from tests.server.conftest import LiveServer, Media

JS_DIR = Path(__file__).parent / "js"
SCENARIO_TIMEOUT_S = 560.0


@pytest.fixture(scope="session")
def node_modules() -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("SKIPPED JS CLIENT TESTS: node/npm not found on PATH (install Node 20+ to run them)")
    modules = JS_DIR / "node_modules"
    if not (modules / "@fal-ai" / "client" / "package.json").is_file():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=300)
    return modules


def run_scenario(name: str, **args: Any) -> dict[str, Any]:
    proc = subprocess.run(["node", "scenarios.mjs", name, json.dumps(args)], cwd=JS_DIR, capture_output=True,
                          text=True, timeout=SCENARIO_TIMEOUT_S)
    assert proc.returncode == 0, f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_js_subscribe_with_blob_upload_logs_and_cancel(node_modules: Path, client_server: LiveServer,
                                                      media: Media, tmp_path: Path) -> None:
    """Real generation #2: Blob auto-upload in the input; a second request is cancelled while queued."""
    out = run_scenario("subscribe", base=client_server.base, video_path=str(media.control),
                       failing_input=failing_input(media))
    assert_video(out["data"]["video"]["url"], tmp_path / "js.mp4")
    request_id = out["requestId"]
    updates = out["updates"]
    assert {u["request_id"] for u in updates} == {request_id}
    assert updates[-1]["status"] == "COMPLETED"
    messages = [m for u in updates for m in u["log_messages"]]
    assert any(m.startswith("Denoising step") for m in messages), messages

    queued = out["queued"]
    assert queued["first"] == request_id
    assert queued["cancel"] == {"ok": None}  # resolved, not thrown (the client discards the body)
    assert queued["status"]["status"] == "COMPLETED"
    assert queued["status"]["error_type"] == "client_cancelled"
    assert queued["result"]["error"]["status"] == 499
    assert queued["result"]["error"]["requestId"] == queued["request_id"]


def test_js_fals_current_full_example(node_modules: Path, client_server: LiveServer, media: Media,
                                     tmp_path: Path) -> None:
    """Real generation (17 frames): fal's current example, every field, the video as a Blob (auto-upload)."""
    out = run_scenario("example", base=client_server.base, video_path=str(media.control),
                       input=current_full_example("replaced by the Blob"))
    assert_current_example_output(out["data"], tmp_path / "js-example.mp4")


@pytest.mark.parametrize("task", sorted(SUB_PATH_SIZES))
def test_js_fals_current_full_example_on_every_sub_path(node_modules: Path, client_server: LiveServer,
                                                        media: Media, task: str, tmp_path: Path) -> None:
    """Real generation (17 frames) on each sub-path through @fal-ai/client, the video as a Blob."""
    out = run_scenario("example", base=client_server.base, video_path=str(media.control), task=task,
                       input=sub_path_example(task, "replaced by the Blob", media))
    assert_current_example_output(out["data"], tmp_path / f"js-{task}.mp4", size=SUB_PATH_SIZES[task])


def test_js_queue_calls_streaming_status_and_run(node_modules: Path, client_server: LiveServer,
                                                 media: Media) -> None:
    unknown = str(uuid.uuid4())
    out = run_scenario("queue", base=client_server.base, failing_input=failing_input(media),
                       unknown_id=unknown)
    request_id = out["submitted"]["request_id"]
    assert out["submitted"]["status"] == "IN_QUEUE"
    assert out["submitted"]["status_url"].startswith(f"{client_server.base}/queue/{APP}/requests/")
    assert out["updates"][-1]["status"] == "COMPLETED"
    assert {u["request_id"] for u in out["updates"]} == {request_id}
    assert out["status"]["error_type"] == "unsupported_video_format"
    assert out["status"]["logs"]
    assert out["result"]["error"]["name"] == "ValidationError"
    assert out["result"]["error"]["status"] == 422
    assert out["result"]["error"]["requestId"] == request_id
    assert out["result"]["error"]["body"]["detail"][0]["loc"] == ["body", "video_url"]
    assert out["cancelDone"]["error"]["status"] == 400
    assert out["cancelDone"]["error"]["body"] == {"status": "ALREADY_COMPLETED"}

    streamed = out["streamed"]
    assert streamed["updates"][-1]["status"] == "COMPLETED"
    assert any("Fetching inputs" in m for u in streamed["updates"] for m in u["log_messages"])
    assert streamed["events"][-1]["status"] == "COMPLETED"
    assert streamed["done"]["status"] == "COMPLETED"
    assert streamed["done"]["request_id"] == streamed["request_id"]

    assert out["run"]["error"]["status"] == 422
    assert out["run"]["error"]["body"]["detail"][0]["type"] == "unsupported_video_format"
    assert out["run"]["error"]["requestId"]
    assert out["missing"]["error"]["status"] == 404


def test_js_storage_upload_single_and_multipart(node_modules: Path, client_server: LiveServer) -> None:
    out = run_scenario("storage", base=client_server.base)
    for kind in ("small", "big"):
        assert out[kind]["url"].startswith(f"{client_server.base}/files/"), kind
        assert out[kind]["got"] == {"status": 200, "sha256": out[kind]["expected"]}, kind


def test_proxy_dispatch_cors_and_errors(client_server: LiveServer) -> None:
    """What a browser sees: preflight, exposed request id, and a clear 400 without a target URL."""
    proxy = f"{client_server.base}/api/fal/proxy"
    preflight = httpx.options(proxy, headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-fal-target-url,x-fal-queue-priority,"
                                          "x-fal-runner-hint,x-fal-request-timeout,accept,"
                                          "x-fal-object-lifecycle-preference",
    })
    assert preflight.status_code == 200, preflight.text
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    health = httpx.get(proxy, headers={"Origin": "http://localhost:3000",
                                       "x-fal-target-url": "https://fal.run/"})
    assert health.status_code == 200
    assert "x-fal-request-id" in health.headers["access-control-expose-headers"].lower()
    missing = httpx.post(proxy, json={})
    assert missing.status_code == 400 and "x-fal-target-url" in missing.json()["detail"]
    assert missing.headers["x-fal-request-id"]
    unknown = httpx.get(proxy, headers={"x-fal-target-url": f"https://queue.fal.run/{APP}/requests/x/status"})
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Request not found"}
