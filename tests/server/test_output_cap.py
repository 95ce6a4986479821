"""The output-length cap (InputLimits.max_output_frames): reframe's interpolation can multiply the frame count
(241 frames with temporal_upsample_factor 5 become 1441), so the operator can cap what a worker holds and
encodes. A length fixed by the request alone is refused at submit (server/contract/endpoints.py); one that
follows the input video is refused by the worker right after the probe, before generation or interpolation.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import annotated_types
import numpy as np
import pytest

import server.worker.runner as execute
from preprocessors.annotators.registry import AnnotatorConfig, Annotators
from preprocessors.interpolation.timeline import Timeline
from preprocessors.video_io import write_mp4
from server.api.routes.queue import refusal_response
from server.contract.endpoints import (
    APP_ID,
    ENDPOINTS,
    Refusal,
    _as_root,
    output_frames_at_submit,
    submit_refusal,
)
from server.contract.errors import InputError
from server.contract.inputs import WanVACEReframeRequest, task_of
from server.contract.limits import LARGEST_VALID_OUTPUT, InputLimits
from server.contract.timing import output_frames
from server.files.local import LocalFileStore
from server.settings import Settings
from server.worker.fetch import Fetcher
from server.worker.inputs import MAX_FRAMES
from server.worker.runner import Executor
from server.worker.tasks import PLANS
from server.worker.types import Timing
from tests.server.test_execute_annotators import run
from tests.server.test_execute_equivalence import tiny_sizes, uri

REFRAME = f"{APP_ID}/reframe"
VIDEO = "https://example.com/v.mp4"
FRAMES = 7


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 7-frame 64x32 video at 16 fps, as a data URI."""
    frames = np.random.default_rng(5).integers(0, 256, (FRAMES, 32, 64, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("output-cap") / "clip.mp4"
    write_mp4(frames, 16, path)
    return uri(path.read_bytes(), "video/mp4")


@pytest.fixture(scope="module")
def annotators(tmp_path_factory: pytest.TempPathFactory) -> Annotators:
    return Annotators(AnnotatorConfig(root=tmp_path_factory.mktemp("annotators"), device="cpu", tiny=True))


def _bounds(name: str) -> tuple[int, int]:
    field = WanVACEReframeRequest.model_fields[name]
    ge = next(m.ge for m in field.metadata if isinstance(m, annotated_types.Ge))
    le = next(m.le for m in field.metadata if isinstance(m, annotated_types.Le))
    return ge, le


def _check(endpoint: str, payload: dict[str, Any], limits: InputLimits | None = None) -> str | None:
    """What the submit route decides, as server/api/routes/queue.py computes it."""
    model = ENDPOINTS[endpoint].input_model.model_validate(payload)
    refusal = submit_refusal(task_of(endpoint, model), model, limits)
    return None if refusal is None else refusal.message


# --- the default admits every valid request ----------------------------------------------------------------


def test_default_cap_is_the_longest_output_the_schema_allows():
    _, max_frames = _bounds("num_frames")
    downs, ups = _bounds("temporal_downsample_factor"), _bounds("temporal_upsample_factor")
    # match_input_num_frames can give any length from 1 up to num_frames' maximum (MAX_FRAMES).
    longest = max(output_frames(n, d, u) for n, d, u in itertools.product(
        range(1, max_frames + 1), range(downs[0], downs[1] + 1), range(ups[0], ups[1] + 1)))
    assert longest == LARGEST_VALID_OUTPUT == InputLimits().max_output_frames == 1441
    assert max_frames == MAX_FRAMES
    assert output_frames(241, 5, 5) == 441  # downsampling shortens it: 41 generated, 10 in-betweens each


def test_submit_arithmetic_matches_the_workers_timeline():
    # server/contract/timing.py (API, no numpy) and preprocessors/interpolation/timeline.py (worker) agree.
    for n, d, u in itertools.product(range(1, 242, 7), range(6), range(6)):
        assert output_frames(n, d, u) == Timeline(16.0, n, d, u).output_frames


def test_largest_valid_request_passes_the_default_check():
    payload = {"video_url": VIDEO, "match_input_num_frames": False, "num_frames": 241,
               "temporal_upsample_factor": 5}
    assert output_frames_at_submit("reframe", WanVACEReframeRequest.model_validate(payload)) == 1441
    assert _check(REFRAME, payload) is None
    assert _check(REFRAME, payload, InputLimits(max_output_frames=1441)) is None


def test_from_settings_carries_the_cap(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, model="tiny", max_output_frames=500)
    assert InputLimits.from_settings(settings).max_output_frames == 500
    assert InputLimits.from_settings(Settings(data_dir=tmp_path, model="tiny")).max_output_frames == 1441


# --- submit: the request alone fixes the length -------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "payload", "expected"),
    [
        (REFRAME, {"match_input_num_frames": False, "num_frames": 81, "temporal_upsample_factor": 2}, 241),
        (REFRAME, {"match_input_num_frames": False, "num_frames": 81, "temporal_downsample_factor": 1,
                   "temporal_upsample_factor": 1}, 121),
        (REFRAME, {"match_input_num_frames": False, "num_frames": 81}, 81),
        (REFRAME, {"temporal_upsample_factor": 5}, None),  # reframe follows the input's length by default
        (APP_ID, {"task": "reframe", "prompt": "x", "num_frames": 121, "temporal_upsample_factor": 1}, 241),
        # Interpolation applies on every task now (fal's current schema has it on every endpoint).
        (APP_ID, {"task": "depth", "prompt": "x", "num_frames": 121, "temporal_upsample_factor": 5}, 721),
        (f"{APP_ID}/depth", {"prompt": "x", "num_frames": 17, "num_interpolated_frames": 2}, 49),
        (f"{APP_ID}/pose", {"prompt": "x", "num_frames": 81, "enable_auto_downsample": True,
                            "frames_per_second": 30, "num_interpolated_frames": 1}, 121),  # auto: d = 1
        (f"{APP_ID}/depth", {"prompt": "x", "num_frames": 97}, 97),
        (f"{APP_ID}/pose", {"prompt": "x", "match_input_num_frames": True}, None),
    ],
)
def test_output_length_known_at_submit(endpoint: str, payload: dict[str, Any], expected: int | None):
    model = ENDPOINTS[endpoint].input_model.model_validate({"video_url": VIDEO, **payload})
    assert output_frames_at_submit(task_of(endpoint, model), model) == expected
    if expected is not None:
        request = _as_root(task_of(endpoint, model), model)
        timeline = PLANS[task_of(endpoint, model)].timeline(request, Timing(float(request.frames_per_second
                                                                                   or 16), model.num_frames))
        assert timeline.output_frames == expected  # the worker's bookkeeping agrees


def test_over_long_request_is_refused_at_submit_in_the_422_form():
    limits = InputLimits(max_output_frames=400)
    payload = {"video_url": VIDEO, "match_input_num_frames": False, "num_frames": 201,
               "temporal_upsample_factor": 1}
    reason = _check(REFRAME, payload, limits)
    assert reason is not None and "401 frames" in reason and "at most 400" in reason
    assert "temporal_upsample_factor" in reason
    assert _check(REFRAME, {**payload, "num_frames": 199}, limits) is None  # 397 frames
    assert _check(REFRAME, {**payload, "match_input_num_frames": True}, limits) is None  # the worker's call
    # What the queue route answers: fal's 422 detail list, not retryable, blaming the interpolation.
    refusal = submit_refusal("reframe", WanVACEReframeRequest.model_validate(payload), limits)
    assert refusal == Refusal(reason, "output_too_long", ("body", "temporal_upsample_factor"))
    response = refusal_response(refusal)
    assert response.status_code == 422 and response.headers["X-Fal-Retryable"] == "false"
    (item,) = json.loads(response.body)["detail"]
    assert item["msg"] == reason and item["loc"] == ["body", "temporal_upsample_factor"]
    assert item["type"] == "output_too_long"


def test_downsampling_alone_blames_num_frames():
    payload = {"video_url": VIDEO, "match_input_num_frames": False, "num_frames": 201,
               "temporal_downsample_factor": 2}  # 201 frames out, 67 generated
    model = WanVACEReframeRequest.model_validate(payload)
    refusal = submit_refusal("reframe", model, InputLimits(max_output_frames=200))
    assert refusal is not None and refusal.loc == ("body", "num_frames")
    assert "201 frames" in refusal.message and refusal.message.endswith("lower num_frames")


def test_cap_also_bounds_uninterpolated_lengths():
    limits = InputLimits(max_output_frames=100)
    assert "121 frames" in _check(f"{APP_ID}/depth", {"prompt": "x", "video_url": VIDEO, "num_frames": 121},
                                  limits)
    assert _check(f"{APP_ID}/depth", {"prompt": "x", "video_url": VIDEO, "num_frames": 97}, limits) is None


def test_other_refusals_still_come_first():
    reason = _check(APP_ID, {"task": "inpainting", "prompt": "x", "video_url": VIDEO, "num_frames": 241},
                    InputLimits(max_output_frames=100))
    assert reason is not None and "mask" in reason


# --- worker: the length follows the input video -------------------------------------------------------------


def _executor(tmp_path: Path, annotators, max_output_frames: int) -> Executor:
    files = LocalFileStore(tmp_path / "files")
    fetcher = Fetcher(files, tmp_path / "work", max_bytes=50 << 20, timeout_s=10.0)
    return Executor(None, fetcher, files, tmp_path / "work", sizes=tiny_sizes, annotators=annotators,
                    limits=InputLimits(max_output_frames=max_output_frames))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records generation (echoing the conditioning video) and interpolation."""
    seen: list[str] = []

    def fake_generate(pipe: Any, request: Any, **_: Any) -> np.ndarray:
        seen.append("generate")
        return np.rint(request.video * 255).astype(np.uint8)

    monkeypatch.setattr(execute, "generate", fake_generate)
    return seen


def _reframe(video: str) -> dict[str, Any]:
    # match_input_num_frames (reframe's default): 7 input frames, one in-between each -> 13 output frames.
    # 9:16: the landscape clip is letterboxed, so there is something to generate (16:9 would be a 422).
    return {"video_url": video, "aspect_ratio": "9:16", "num_inference_steps": 2,
            "temporal_upsample_factor": 1, "interpolator_model": "rife"}


def test_worker_refuses_an_over_long_output_before_generating(tmp_path: Path, annotators, clip, calls):
    video = clip
    executor = _executor(tmp_path, annotators, max_output_frames=2 * FRAMES - 2)
    with pytest.raises(InputError) as caught:
        run(executor, REFRAME, _reframe(video))
    error = caught.value.to_job_error()
    assert error.status_code == 422 and calls == []
    (item,) = error.body["detail"]
    assert item["loc"] == ["body", "temporal_upsample_factor"] and item["type"] == "output_too_long"
    assert item["ctx"] == {"max_output_frames": 12, "output_frames": 13}
    assert "13 frames" in item["msg"] and "at most 12" in item["msg"]


def test_worker_runs_an_output_at_the_cap(tmp_path: Path, annotators, clip, calls, monkeypatch):
    video = clip
    interpolated: list[int] = []
    original = annotators.interpolator("rife").interpolate

    def spy(frames: np.ndarray, factor: int) -> np.ndarray:
        interpolated.append(len(frames))
        return original(frames, factor)

    monkeypatch.setattr(annotators.interpolator("rife"), "interpolate", spy)
    executor = _executor(tmp_path, annotators, max_output_frames=2 * FRAMES - 1)
    out = run(executor, REFRAME, _reframe(video))
    assert len(out.frames) == out.timing.num_frames == 13
    assert calls == ["generate"] and interpolated == [FRAMES]


def test_worker_names_the_input_when_its_length_is_too_long(tmp_path: Path, annotators, clip, calls):
    video = clip
    payload = {"video_url": video, "aspect_ratio": "9:16", "num_inference_steps": 2}
    with pytest.raises(InputError) as caught:
        run(_executor(tmp_path, annotators, max_output_frames=FRAMES - 1), REFRAME, payload)
    assert caught.value.field == "video_url" and calls == []
    out = run(_executor(tmp_path, annotators, max_output_frames=FRAMES), REFRAME, payload)
    assert len(out.frames) == FRAMES
