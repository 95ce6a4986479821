"""Operators' and users' tools against one live server (tiny model, an API key, a preview every step, JSON
logs): `vace run`, the progress lines and previews a job leaves, /metrics as jobs complete, fail and are
cancelled, and the playground and /docs driven in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from preprocessors.video_io import probe_video
from tests.server.browser import chromium_executable
from tests.server.conftest import (
    REPO,
    TERMINAL_TIMEOUT_S,
    LiveServer,
    Media,
    data_uri,
    start_server,
    wait_completed,
)
from tests.server.test_metrics import value

APP = "fal-ai/wan-vace-14b"
KEY = "ops-e2e-key"
AUTH = {"Authorization": f"Key {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("ops") / "data", extra_args=(
        "--api-key", KEY, "--preview-every", "1", "--log-format", "json"))
    yield live
    live.stop()


def vace_run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("FAL_KEY", None)
    return subprocess.run([sys.executable, "-m", "server.cli", "run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TERMINAL_TIMEOUT_S)


def metrics(server: LiveServer) -> str:
    return httpx.get(server.base + "/metrics", timeout=30).text


def test_vace_run_against_the_server_leaves_phases_previews_metrics_and_json_logs(
        server: LiveServer, media: Media, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    run = vace_run("depth", "--server", server.base, "--api-key", KEY, "--video", str(media.control),
                   "--prompt", "a bar", "--resolution", "240p", "--num-inference-steps", "2", "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out)
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames) == (352, 272, 81)  # 240p at the input's 4:3
    # Not a terminal: one plain line per change, with the phase and the step.
    assert re.search(r"Denoising, step [12]/2, ETA \d+s, \d+%\n", run.stderr) and "\r" not in run.stderr
    request_id = run.stderr.split("request ", 1)[1].split()[0]

    with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as client:
        status = client.get(f"/queue/{APP}/requests/{request_id}/status", params={"logs": "1"}).json()
    messages = [entry["message"] for entry in status["logs"]]
    for phase in ("Fetching inputs", "Probing and decoding inputs", "Conditioning (annotators)", "VAE encode",
                  "Denoising", "VAE decode", "Encoding H.264"):
        assert f"{phase} started" in " ".join(messages), phase
        assert any(m.startswith(f"{phase} done in ") for m in messages), phase
    previews = [m for m in messages if m.startswith("Preview after step")]
    assert len(previews) == 2  # every step of 2
    preview = httpx.get(previews[-1].split(": ", 1)[1], timeout=30)  # files are capabilities: no key
    assert preview.headers["content-type"] == "image/webp"
    image = Image.open(io.BytesIO(preview.content))
    assert image.n_frames == 21 and image.size == (352 // 8, 272 // 8)  # one per latent frame

    text = metrics(server)
    assert value(text, "vace_requests_completed_total", endpoint="depth") >= 1
    assert value(text, "vace_step_seconds_count", endpoint="depth", resolution="240p") >= 2
    assert value(text, "vace_job_duration_seconds_count", endpoint="depth", resolution="240p") >= 1
    # 2 steps with CFG: 4 forwards, all computed (the step cache never reuses the first or the last step).
    assert value(text, "vace_transformer_forwards_total", endpoint="depth", outcome="computed") >= 4

    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    job_lines = [line for line in lines if line["job_id"] == request_id]
    assert {"vae_encode", "denoise", "vae_decode"} <= {line["phase"] for line in job_lines}
    assert all(line["worker_id"] for line in job_lines)


def test_failed_and_cancelled_jobs_count_and_vace_run_says_why(server: LiveServer, media: Media,
                                                               tmp_path: Path) -> None:
    before = metrics(server)
    run = vace_run("depth", "--server", server.base, "--api-key", KEY, "--video", str(media.not_a_video),
                   "--prompt", "x", "--resolution", "240p", "-o", str(tmp_path / "never.mp4"))
    assert run.returncode == 1
    assert "the job failed (" in run.stderr and not (tmp_path / "never.mp4").exists()
    refused = vace_run("depth", "--server", server.base, "--api-key", KEY, "--video", str(media.control),
                       "--prompt", "x", "--num-inference-steps", "1")
    assert refused.returncode == 2 and "num_inference_steps" in refused.stderr

    with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as client:
        # A valid job, cancelled at once: queued, or stopped by its worker at the next check.
        body = {"prompt": "x", "video_url": data_uri(media.control), "resolution": "240p"}
        jobs = [client.post(f"/queue/{APP}/pose", json=body).json() for _ in range(2)]
        for job in reversed(jobs):
            assert client.put(job["cancel_url"]).status_code == 202
        for job in jobs:
            wait_completed(client, job["status_url"])
    after = metrics(server)
    failed = sum(v for (name, labels), v in _samples(after).items() if name == "vace_requests_failed_total"
                 and dict(labels)["endpoint"] == "depth")
    failed_before = sum(v for (name, labels), v in _samples(before).items()
                        if name == "vace_requests_failed_total" and dict(labels)["endpoint"] == "depth")
    assert failed == failed_before + 1
    assert value(after, "vace_requests_cancelled_total", endpoint="pose") == 2
    assert value(after, "vace_requests_submitted_total", endpoint="pose") == 2


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from tests.server.test_metrics import samples

    return samples(text)


def test_playground_and_docs_in_headless_chromium(server: LiveServer, media: Media) -> None:
    from playwright.sync_api import sync_playwright

    spec = httpx.get(server.base + "/openapi.json", timeout=30).json()
    depth_fields = list(spec["components"]["schemas"]["WanVACEDepthRequest"]["properties"])
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_executable(), headless=True)
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))

        page.goto(server.base + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)

        page.goto(server.base + "/playground?endpoint=depth")
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        shown = page.eval_on_selector_all("#fields .field", "rows => rows.map(r => r.dataset.field)")
        assert shown == depth_fields
        steps_meta = page.inner_text(".field[data-field='num_inference_steps'] .meta")
        assert "integer" in steps_meta and "default 30" in steps_meta and "range 2 to 50" in steps_meta

        page.fill("#f-prompt", "a bar moving")
        page.set_input_files("#f-video_url-file", str(media.control))
        page.select_option("#f-resolution", "240p")
        page.fill("#f-num_inference_steps", "2")
        page.click("#submit")
        page.wait_for_selector("#key-panel:not([hidden])", timeout=30_000)  # keys are on: asked once
        page.fill("#api-key", KEY)
        page.click("#save-key")

        fractions: set[float] = set()
        deadline = time.monotonic() + TERMINAL_TIMEOUT_S
        duration = 0.0
        while time.monotonic() < deadline and duration <= 0:
            fractions.add(float(page.get_attribute("#progress-bar", "data-fraction") or 0))
            duration = page.evaluate("() => { const v = document.getElementById('result-video');"
                                     " return v.readyState >= 1 ? v.duration : 0; }")
            assert not page.inner_text("#error"), page.inner_text("#error")
            time.sleep(0.3)
        assert duration > 0  # the result plays: 81 frames at 16 fps
        assert len([f for f in fractions if 0 < f < 1]) >= 2  # progress moved
        assert page.get_attribute("#preview", "src")  # a live preview was shown
        assert "/files/" in page.get_attribute("#download", "href")
        assert f"/queue/{APP}/depth" in (page.text_content("#curl") or "")  # in a closed <details>
        assert "fal_client.subscribe" in (page.text_content("#python") or "")
        if os.environ.get("PLAYGROUND_SCREENSHOT"):
            page.screenshot(path=os.environ["PLAYGROUND_SCREENSHOT"], full_page=True)

        first_job = page.inner_text("#job-line")
        page.click("#submit")  # the uploaded file's URL is in the field now
        page.wait_for_function(f"document.getElementById('job-line').textContent.split(':')[0]"
                               f" !== {json.dumps(first_job.split(':')[0])}", timeout=30_000)
        page.click("#cancel")
        page.wait_for_selector("#error:has-text('client_cancelled')", timeout=TERMINAL_TIMEOUT_S * 1000)
        assert page.is_hidden("#key-panel")  # not asked again
        browser.close()

    foreign = [url for url in requested if not url.startswith((server.base, "data:", "blob:"))]
    assert not foreign, foreign
    assert any(url.startswith(server.base + "/static/docs/") for url in requested)
    assert any("/storage/upload/" in url for url in requested)


def test_vace_run_in_process_with_a_model(media: Media, tmp_path: Path) -> None:
    out = tmp_path / "local.mp4"
    run = vace_run("depth", "--model", "tiny", "--data-dir", str(tmp_path / "data"), "--video",
                   str(media.control), "--prompt", "a bar", "--resolution", "240p", "--num-inference-steps",
                   "2", "-o", str(out))
    assert run.returncode == 0, run.stderr
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames) == (352, 272, 81)  # 240p at the input's 4:3
