"""Refusing at submit what no live worker's published capacity holds (server/contract/capacity.py), and only
what is certain: a real server refuses too long a video at an explicit size with fal's 422, queues one that
fits, and leaves `resolution: auto` (the input decides the size) to the worker."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from server.contract.capacity import (
    CapacityTable,
    capacity_refusal,
    generated_frames,
    live_capacities,
    merged_capacity,
    pipeline_frames,
)
from server.contract.endpoints import ENDPOINTS
from server.contract.inputs import task_of
from server.jobs.model import Status
from server.settings import Settings
from tests.server.conftest import start_server

APP = "fal-ai/wan-vace-14b"
VIDEO = "https://example.com/v.mp4"
# A worker whose 720p holds 61 pipeline frames (16:9), 101 at 1:1, 81 under auto; 240p everything.
SMALL: CapacityTable = {"720p": {"16:9": 61, "9:16": 61, "1:1": 101, "auto": 81},
                        "240p": {"16:9": 241, "9:16": 241, "1:1": 241, "auto": 241}}
BIG: CapacityTable = {"720p": {"16:9": 121, "9:16": 121, "1:1": 161, "auto": 125}}


def refusal(body: dict[str, Any], *tables: CapacityTable | None, endpoint: str = APP) -> Any:
    model = ENDPOINTS[endpoint].input_model
    payload = model.model_validate({"prompt": "p", "video_url": VIDEO, **body})
    return capacity_refusal(task_of(endpoint, payload), payload, lambda: list(tables))


def test_pipeline_frames_is_the_pipelines_rounding() -> None:
    from preprocessors.interpolation.timeline import Timeline
    from preprocessors.sizing import pipeline_num_frames

    assert all(pipeline_frames(n) == pipeline_num_frames(n) for n in range(1, 300))
    for n in range(1, 250):
        for d in range(6):
            assert generated_frames(n, d) == pipeline_num_frames(Timeline(16.0, n, d).generated_frames)


def test_refused_only_beyond_every_live_worker() -> None:
    refused = refusal({"resolution": "720p", "aspect_ratio": "16:9", "num_frames": 81}, SMALL)
    assert refused is not None and refused.loc == ("body", "num_frames")
    assert refused.error_type == "less_than_equal" and refused.ctx is not None and refused.ctx["le"] == 61
    assert "720p" in refused.message and "num_frames 61" in refused.message
    # 61 fits; 62-65 generate 65 pipeline frames (4k+1), which does not.
    assert refusal({"resolution": "720p", "aspect_ratio": "16:9", "num_frames": 61}, SMALL) is None
    assert refusal({"resolution": "720p", "aspect_ratio": "16:9", "num_frames": 62}, SMALL) is not None
    # Another worker holds it: not certain, so not refused; beyond both, the larger limit is named.
    assert refusal({"resolution": "720p", "aspect_ratio": "16:9", "num_frames": 81}, SMALL, BIG) is None
    both = refusal({"resolution": "720p", "aspect_ratio": "16:9", "num_frames": 241}, SMALL, BIG)
    assert both is not None and both.ctx is not None and both.ctx["le"] == 121
    # The aspect ratio picks the entry; 1:1 holds more.
    assert refusal({"resolution": "720p", "aspect_ratio": "1:1", "num_frames": 101}, SMALL) is None
    # The default num_frames (81) is as fixed as a sent one.
    assert refusal({"resolution": "720p", "aspect_ratio": "16:9"}, SMALL) is not None


def test_nothing_is_refused_unless_certain() -> None:
    long = {"resolution": "720p", "aspect_ratio": "16:9", "num_frames": 241}
    assert refusal(long) is None, "no live worker"
    assert refusal(long, SMALL, None) is None, "a worker with no limit (CPU) may run it"
    assert refusal({**long, "resolution": "auto"}, SMALL) is None, "the input picks the size"
    assert refusal({**long, "match_input_num_frames": True}, SMALL) is None, "the input picks the length"
    assert refusal({**long, "resolution": "580p"}, SMALL) is None, "no entry for this size"
    # aspect_ratio auto: the worker's most permissive auto size (81) decides.
    assert refusal({**long, "aspect_ratio": "auto", "num_frames": 81}, SMALL) is None
    assert refusal({**long, "aspect_ratio": "auto", "num_frames": 85}, SMALL) is not None
    # Auto downsampling that follows the input's fps: the largest factor (every 6th frame) is assumed.
    follows = {**long, "enable_auto_downsample": True, "match_input_frames_per_second": True}
    assert refusal({**follows, "num_frames": 241}, SMALL) is None  # 41 generated frames at most
    # With the output fps known (16, min 15: no downsampling) the full length is generated.
    assert refusal({**long, "enable_auto_downsample": True, "num_frames": 81}, SMALL) is not None


def test_downsampling_generates_fewer_frames_and_the_advice_says_how_many_fit() -> None:
    # Every 3rd frame of 241: 81 generated, beyond 61; the longest that fits is (61 - 1) * 3 + 1 = 181.
    refused = refusal({"resolution": "720p", "aspect_ratio": "16:9", "num_frames": 241,
                       "temporal_downsample_factor": 2}, SMALL)
    assert refused is not None and refused.ctx is not None and refused.ctx["le"] == 181
    assert refusal({"resolution": "720p", "aspect_ratio": "16:9", "num_frames": 181,
                    "temporal_downsample_factor": 2}, SMALL) is None


def test_a_size_with_no_length_that_fits_blames_the_resolution() -> None:
    none_fit: CapacityTable = {"720p": {"16:9": 0}}
    refused = refusal({"resolution": "720p", "aspect_ratio": "16:9", "num_frames": 17}, none_fit)
    assert refused is not None and refused.loc == ("body", "resolution")
    assert "lower resolution" in refused.message


def test_live_workers_are_loading_or_ready_with_a_fresh_heartbeat() -> None:
    now = 1000.0
    rows = [{"state": "ready", "heartbeat": now - 1, "capacity": SMALL},
            {"state": "loading", "heartbeat": now - 1, "capacity": None},
            {"state": "ready", "heartbeat": now - 60, "capacity": BIG},  # stale: gone
            {"state": "failed", "heartbeat": now, "capacity": BIG}]
    assert live_capacities(rows, now, 15.0) == [SMALL, None]
    assert merged_capacity([SMALL, BIG])["720p"] == {"16:9": 121, "9:16": 121, "1:1": 161, "auto": 125}
    assert merged_capacity([SMALL, None]) is None and merged_capacity([]) is None


def _register(data_dir: Path, worker_id: str, capacity: CapacityTable | None) -> Any:
    from server.jobs.factory import open_settings_job_store

    store = open_settings_job_store(Settings(data_dir=data_dir, model="tiny", num_workers=0))
    store.set_worker_state(worker_id, os.getpid(), "ready", "tiny", capacity=capacity)
    return store


def test_a_real_server_refuses_at_submit_what_no_worker_holds(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", workers=0)  # the test registers the worker itself
    try:
        store = _register(server.data_dir, "gpu-0", SMALL)
        with server.client() as client:
            ready = client.get("/readyz").json()
            assert ready["capacity"] == SMALL
            assert client.get("/health").json()["workers"][0]["capacity"] == SMALL

            too_long = {"prompt": "p", "video_url": VIDEO, "resolution": "720p", "aspect_ratio": "16:9",
                        "num_frames": 121}
            refused = client.post(f"/queue/{APP}/depth", json=too_long)
            assert refused.status_code == 422
            assert refused.headers["x-fal-retryable"] == "false"
            [item] = refused.json()["detail"]
            assert item["loc"] == ["body", "num_frames"] and item["type"] == "less_than_equal"
            assert item["ctx"] == {"le": 61, "resolution": "720p", "aspect_ratio": "16:9"}
            assert "num_frames 61" in item["msg"] and "resolution 720p" in item["msg"]
            assert item["url"].endswith("less_than_equal")
            assert store.count_queued() == 0

            fitting = client.post(f"/queue/{APP}/depth", json={**too_long, "num_frames": 61})
            assert fitting.status_code == 200, fitting.text
            auto = client.post(f"/queue/{APP}/depth", json={**too_long, "resolution": "auto"})
            assert auto.status_code == 200, auto.text
            queued = [store.get(r.json()["request_id"]) for r in (fitting, auto)]
            assert [j.status if j else None for j in queued] == [Status.IN_QUEUE, Status.IN_QUEUE]

            # A second live worker without a limit (a CPU box) may run it: accepted.
            _register(server.data_dir, "cpu-0", None)
            time.sleep(0.01)
            assert client.post(f"/queue/{APP}/depth", json=too_long).status_code == 200
    finally:
        server.stop()


def test_a_restarting_worker_keeps_its_place_so_nothing_is_refused_on_the_others(tmp_path: Path) -> None:
    """Before: a worker that died lost its row until its replacement, minutes later (importing torch),
    registered itself; meanwhile a smaller worker's table alone refused at submit what the restarting one
    could hold. Now the supervisor keeps a "starting" row, beaten, through the back-off and the start."""
    import signal

    server = start_server(tmp_path / "data", workers=1, timeout=300)
    try:
        store = _register(server.data_dir, "gpu-small", SMALL)
        [real] = [w for w in store.workers() if w["id"] != "gpu-small"]
        os.kill(int(real["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while f"{real['id']} exited" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"{real['id']} exited" in server.log_text()
        store.heartbeat("gpu-small")
        states = {w["id"]: w["state"] for w in store.workers()}
        assert "starting" in states.values() and states["gpu-small"] == "ready", states
        too_long = {"prompt": "p", "video_url": VIDEO, "resolution": "720p", "aspect_ratio": "16:9",
                    "num_frames": 121}
        with server.client() as client:
            accepted = client.post(f"/queue/{APP}/depth", json=too_long)
            assert accepted.status_code == 200, accepted.text
            client.put(f"/queue/{APP}/requests/{accepted.json()['request_id']}/cancel")
    finally:
        server.stop()
