"""/metrics, /healthz, /readyz and the offline /docs, over the in-process app and the memory store (the test
plays the worker through the store); tests/server/test_progress_e2e.py sees the same figures move on a live
server with a real worker."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from server.contract.errors import internal_error
from server.jobs.store import JobStore
from tests.server.conftest import ProtocolApp

APP = "fal-ai/wan-vace-14b"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def submit(app: ProtocolApp, endpoint: str = "depth", **headers: str) -> str:
    body = {"prompt": "a cat", "video_url": "https://example.com/v.mp4", "resolution": "480p"}
    response = app.client.post(f"/queue/{APP}/{endpoint}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


def run_as_worker(store: JobStore, job_id: str, steps: list[float] | None = None) -> None:
    job = store.claim("w1")
    assert job is not None and job.id == job_id
    if steps is not None:
        store.telemetry.set_progress(job_id, {"phase": "done", "step_seconds": steps,
                                              "forwards": {"computed": 4, "reused": 2}})


def test_metrics_count_submitted_done_failed_cancelled_and_queue_depth(protocol_app: ProtocolApp) -> None:
    app, store = protocol_app, protocol_app.store
    done, failed, cancelled = submit(app), submit(app, "pose"), submit(app)
    submit(app, **{"x-fal-queue-priority": "low"})
    text = app.client.get("/metrics").text
    assert value(text, "vace_requests_submitted_total", endpoint="depth") == 3
    assert value(text, "vace_queue_depth", priority="normal") == 3
    assert value(text, "vace_queue_depth", priority="low") == 1

    run_as_worker(store, done, steps=[0.5, 0.3, 3.0])
    store.complete(done, "w1", {"video": {}})
    run_as_worker(store, failed)
    store.fail(failed, "w1", internal_error("boom"))
    # A queued job is cancelled by the API itself (no worker involved).
    assert app.client.put(f"/queue/{APP}/requests/{cancelled}/cancel").status_code == 202

    text = app.client.get("/metrics").text
    assert value(text, "vace_requests_completed_total", endpoint="depth") == 1
    assert value(text, "vace_requests_failed_total", endpoint="pose", error_type="runner_server_error") == 1
    assert value(text, "vace_requests_cancelled_total", endpoint="depth") == 1
    assert value(text, "vace_queue_depth", priority="normal") == 0
    assert value(text, "vace_step_seconds_count", endpoint="depth", resolution="480p") == 3
    assert value(text, "vace_step_seconds_bucket", endpoint="depth", resolution="480p", le="1.0") == 2
    assert value(text, "vace_job_duration_seconds_count", endpoint="depth", resolution="480p") == 1
    # A second scrape counts nothing twice.
    again = app.client.get("/metrics").text
    assert value(again, "vace_requests_completed_total", endpoint="depth") == 1
    assert value(again, "vace_step_seconds_count", endpoint="depth", resolution="480p") == 3
    assert value(again, "vace_transformer_forwards_total", endpoint="depth", outcome="computed") == 4
    assert value(again, "vace_transformer_forwards_total", endpoint="depth", outcome="reused") == 2


def test_worker_states_and_gpu_memory_come_from_the_store(protocol_app: ProtocolApp) -> None:
    store = protocol_app.store
    store.set_worker_state("gpu0", 123, "ready", "tiny")
    store.set_worker_state("gpu1", 124, "loading", "tiny")
    store.telemetry.set_worker_stats("gpu0", {"gpu_memory_bytes": 1000, "gpu_memory_peak_bytes": 5000})
    text = protocol_app.client.get("/metrics").text
    assert value(text, "vace_worker_state", worker="gpu0", state="ready") == 1
    assert value(text, "vace_worker_state", worker="gpu1", state="loading") == 1
    assert value(text, "vace_worker_gpu_memory_bytes", worker="gpu0") == 1000
    assert value(text, "vace_worker_gpu_memory_peak_bytes", worker="gpu0") == 5000
    store.set_worker_state("gpu1", 124, "ready", "tiny")
    text = protocol_app.client.get("/metrics").text
    assert value(text, "vace_worker_state", worker="gpu1", state="loading") == 0
    assert value(text, "vace_worker_state", worker="gpu1", state="ready") == 1


def test_healthz_is_liveness_readyz_waits_for_a_loaded_worker(protocol_app: ProtocolApp) -> None:
    client, store = protocol_app.client, protocol_app.store
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    store.set_worker_state("gpu0", 1, "loading", "tiny")
    assert client.get("/readyz").status_code == 503
    store.set_worker_state("gpu0", 1, "ready", "tiny")
    store.heartbeat("gpu0")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready_workers"] == 1


def test_status_carries_the_workers_progress_while_running(protocol_app: ProtocolApp) -> None:
    app, store = protocol_app, protocol_app.store
    job_id = submit(app)
    assert "progress" not in app.client.get(f"/queue/{APP}/requests/{job_id}/status").json()
    store.claim("w1")
    store.telemetry.set_progress(job_id, {"phase": "denoise", "fraction": 0.4, "eta_seconds": 12.0})
    body = app.client.get(f"/queue/{APP}/requests/{job_id}/status?logs=1").json()
    assert body["status"] == "IN_PROGRESS" and body["progress"]["phase"] == "denoise"
    assert body["progress"]["fraction"] == 0.4


def test_docs_load_only_this_servers_files(protocol_app: ProtocolApp) -> None:
    client = protocol_app.client
    assert client.get("/redoc").status_code == 404  # not offered: ReDoc's bundle calls its CDN
    for page in ("/docs",):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: '([^']+)'", html)
        assert urls, page
        for url in urls:
            assert url.startswith("/"), (page, url)  # nothing from another host
            assert client.get(url).status_code == 200, url
    js = client.get("/static/docs/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert len(js.content) > 500_000  # the real bundle


def test_browser_index_links_the_playground(protocol_app: ProtocolApp) -> None:
    page = protocol_app.client.get("/", headers={"accept": "text/html"})
    assert 'href="/playground"' in page.text
    assert protocol_app.client.get("/").json()["playground"] == "/playground"
