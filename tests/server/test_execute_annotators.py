"""The Executor's annotator paths in-process, at tiny sizes: preprocess (depth, pose), reframe's temporal
factors, the safety checker (flagged input/output, missing weights under both policies), prompt expansion.

Most tests replace the pipeline call with a stand-in that returns its conditioning video as the output
(`echo`), so they can see exactly what would be generated from and what happens afterwards; one reframe job
runs the real tiny pipeline and encodes the MP4. The annotators are the real tiny models, built on first
use by the registry as `vace serve --model tiny` builds them.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import server.worker.runner as execute
from pipelines.generate import GenerationRequest
from pipelines.loader import load_pipeline
from pipelines.memory import MemoryPlan, Offload
from preprocessors.annotators import catalog
from preprocessors.annotators.registry import AnnotatorConfig, Annotators
from preprocessors.video_io import read_video, write_mp4
from server.contract.endpoints import APP_ID
from server.contract.errors import InputError
from server.files.local import LocalFileStore
from server.worker.fetch import Fetcher
from server.worker.runner import Executor, JobHooks
from server.worker.tasks import PLANS
from tests.server.test_execute_equivalence import job, png, shrink, tiny_sizes, uri

SRC_W, SRC_H, FRAMES, FPS = 192, 96, 7, 16


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    """A 7-frame 192x96 video at 16 fps (as a data URI) and its decoded frames."""
    rng = np.random.default_rng(3)
    frames = np.repeat(rng.integers(0, 256, (FRAMES, SRC_H // 8, SRC_W // 8, 3), dtype=np.uint8), 8, axis=1)
    frames = np.repeat(frames, 8, axis=2)
    path = tmp_path_factory.mktemp("annotator-media") / "source.mp4"
    write_mp4(frames, FPS, path)
    decoded, _ = read_video(path)
    return uri(path.read_bytes(), "video/mp4"), decoded


@pytest.fixture(scope="module")
def tiny_annotators(tmp_path_factory: pytest.TempPathFactory) -> Annotators:
    return Annotators(AnnotatorConfig(root=tmp_path_factory.mktemp("annotators"), device="cpu", tiny=True))


def make_executor(tmp_path: Path, annotators: Annotators | None, pipe: Any = None) -> Executor:
    files = LocalFileStore(tmp_path / "files")
    fetcher = Fetcher(files, tmp_path / "work", max_bytes=50 << 20, timeout_s=10.0)
    return Executor(pipe, fetcher, files, tmp_path / "work", sizes=tiny_sizes, annotators=annotators)


class Hooks:
    def __init__(self) -> None:
        self.logs: list[str] = []
        self.warnings: list[str] = []

    def hooks(self) -> JobHooks:
        return JobHooks(self.logs.append, lambda: False, warn=self.warnings.append)


def run(executor: Executor, endpoint: str, payload: dict[str, Any], hooks: Hooks | None = None) -> Any:
    return executor.generate_frames(job(endpoint, payload), (hooks or Hooks()).hooks())


def request(video: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": "a dancer on a stage", "video_url": video, "match_input_num_frames": True,
            "match_input_frames_per_second": True, "resolution": "240p", "num_inference_steps": 2, **extra}


# --- preprocess: the annotator's output is the control video -----------------------------------------------


@pytest.mark.parametrize("task", ["depth", "pose"])
def test_preprocess_runs_the_annotator_on_the_fitted_frames(
    task: str, tmp_path: Path, tiny_annotators: Annotators, source, echo
) -> None:
    video, frames = source
    hooks = Hooks()
    out = run(make_executor(tmp_path, tiny_annotators), f"{APP_ID}/{task}", request(video, preprocess=True),
              hooks)
    # The annotator sees the 7 real frames at the input's own resolution (192x96 is already the output's
    # 2:1), and its output is resized to the target size (96x48); the 4k+1 padding holds the last result.
    # (The first and last frames are enough to check.)
    expected = shrink(PLANS[task].load_control(tiny_annotators)(frames[[0, -1]]), 96, 48)
    at_output_size = PLANS[task].load_control(tiny_annotators)(shrink(frames, 96, 48)[[0, -1]])
    assert not np.array_equal(expected, at_output_size)  # the comparison tells the two apart
    (req,) = echo
    control = np.rint(req.video * 255).astype(np.uint8)
    assert len(control) == 9
    np.testing.assert_array_equal(control[[0, 6, 7, 8]], expected[[0, 1, 1, 1]])
    assert (req.mask == 1).all()
    assert out.frames.shape == (FRAMES, 48, 96, 3) and out.timing.num_frames == FRAMES
    assert f"Annotated {FRAMES} frames ({task})" in " ".join(hooks.logs)


def test_a_mask_image_is_tracked_by_the_tiny_sam2(tmp_path: Path, tiny_annotators: Annotators, source,
                                                    echo) -> None:
    video, _ = source
    mask = np.zeros((SRC_H, SRC_W), np.uint8)
    mask[16:48, 32:96] = 255
    hooks = Hooks()
    run(make_executor(tmp_path, tiny_annotators), APP_ID,
        request(video, task="inpainting", mask_image_url=uri(png(mask), "image/png")), hooks)
    (req,) = echo
    assert req.mask.shape == (9, 48, 96) and set(np.unique(req.mask)) <= {0.0, 1.0}
    assert f"Tracked the mask through {FRAMES} frames" in " ".join(hooks.logs)
    # Frame 0 is the prompt: the mask image (halved to 96x48) dilated by 2 px.
    assert (req.mask[0, 8:24, 16:48] == 1).all() and not req.mask[0, 28:, :].any()
    np.testing.assert_array_equal(req.mask[7], req.mask[6])  # the 4k+1 padding holds the last mask


def test_without_preprocess_the_input_is_the_control_video(tmp_path: Path, tiny_annotators, source, echo):
    video, frames = source
    run(make_executor(tmp_path, tiny_annotators), f"{APP_ID}/depth", request(video))
    np.testing.assert_array_equal(np.rint(echo[0].video[:FRAMES] * 255).astype(np.uint8),
                                  shrink(frames, 96, 48))


# --- reframe: temporal factors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("down", "up", "model", "generated", "out_frames", "out_fps"),
    [
        (1, 0, "rife", 4, 7, 16.0),  # keep frames 0,2,4,6; interpolate back to 7 frames at 16 fps
        (2, 0, "film", 3, 7, 16.0),  # frames 0,3,6
        (0, 1, "rife", 7, 13, 32.0),  # no downsampling: twice as many frames, twice the fps, same duration
        (1, 1, "film", 4, 10, 24.0),  # 2 new frames per gap of 2 input frames: 1.5x the fps
    ],
)
def test_reframe_temporal_factors(tmp_path: Path, tiny_annotators, source, echo, down, up, model, generated,
                                  out_frames, out_fps) -> None:
    video, frames = source
    payload = {"video_url": video, "aspect_ratio": "9:16", "interpolator_model": model,
               "num_inference_steps": 2, "temporal_downsample_factor": down,
               "temporal_upsample_factor": up}
    out = run(make_executor(tmp_path, tiny_annotators), f"{APP_ID}/reframe", payload)
    (req,) = echo
    # The kept frames (2:1 into the 48x96 frame: 48x24 at rows 36..60) are what is generated from.
    kept = np.rint(req.video[:generated] * 255).astype(np.uint8)
    np.testing.assert_array_equal(kept[:, 36:60], shrink(frames[:: down + 1], 48, 24)[:generated])
    assert len(req.video) == -(-(generated - 1) // 4) * 4 + 1  # 4k+1
    assert (out.timing.num_frames, out.timing.fps) == (out_frames, out_fps)
    assert len(out.frames) == out_frames
    # Generated frames are kept unchanged at every (d+u+1)-th output position.
    np.testing.assert_array_equal(out.frames[:: down + up + 1], kept[: len(out.frames[:: down + up + 1])])


def test_temporal_factors_apply_to_every_task(tmp_path: Path, tiny_annotators, source, echo) -> None:
    # fal's current schema has the timeline fields on every endpoint: depth generates every 3rd frame (3
    # frames, padded to 5) and interpolates back to the 7 requested.
    video, _ = source
    out = run(make_executor(tmp_path, tiny_annotators), APP_ID,
              request(video, task="depth", temporal_downsample_factor=2))
    assert len(echo[0].video) == 5 and out.timing.num_frames == len(out.frames) == FRAMES


def test_reframe_downsampled_job_end_to_end(tmp_path: Path, tiny_model_dir: Path, tiny_annotators, source):
    """Real tiny pipeline, real RIFE, encoded: the MP4 has the base length and fps."""
    video, _ = source
    executor = make_executor(tmp_path, tiny_annotators, load_pipeline(tiny_model_dir, device="cpu"))
    payload = {"video_url": video, "aspect_ratio": "9:16", "num_inference_steps": 2, "guidance_scale": 1.0,
               "temporal_downsample_factor": 1}
    hooks = Hooks()
    output = executor.run(job(f"{APP_ID}/reframe", payload), hooks.hooks())
    decoded, fps = read_video(executor.files.resolve_url_path(output["video"]["url"]))
    assert decoded.shape == (FRAMES, 96, 48, 3) and fps == FPS
    assert "Generating every 2 frame(s): 4 frames at 8 fps" in " ".join(hooks.logs)


# --- safety checker ----------------------------------------------------------------------------------------


def test_flagged_input_ends_before_generation(tmp_path: Path, source, echo) -> None:
    video, _ = source
    strict = Annotators(AnnotatorConfig(root=tmp_path / "annotators", device="cpu", tiny=True,
                                        safety_threshold=0.0))  # every probability is >= 0: all flagged
    with pytest.raises(InputError) as caught:
        run(make_executor(tmp_path, strict), f"{APP_ID}/depth", request(video, enable_safety_checker=True))
    error = caught.value.to_job_error()
    assert (error.status_code, error.error_type) == (422, "content_policy_violation")
    detail = error.body["detail"][0]
    assert detail["loc"] == ["body", "video_url"] and detail["type"] == "content_policy_violation"
    assert detail["ctx"]["stage"] == "input" and "flagged by the safety checker" in detail["msg"]
    assert echo == []


class OutputFlagger:
    """A checker that passes the input and flags the generated video (told apart by call order)."""

    def __init__(self) -> None:
        self.calls = 0

    def check_frames(self, frames: np.ndarray, sample: int = 8) -> Any:
        from preprocessors.annotators.safety import SafetyVerdict

        self.calls += 1
        return SafetyVerdict(flagged=self.calls > 1, score=0.9 if self.calls > 1 else 0.0, frame_index=0)


def test_flagged_output_is_not_returned(tmp_path: Path, tiny_annotators, source, echo) -> None:
    video, _ = source
    registry = Annotators(tiny_annotators.config)
    registry._loaded[catalog.NSFW.folder] = OutputFlagger()
    with pytest.raises(InputError) as caught:
        run(make_executor(tmp_path, registry), f"{APP_ID}/depth", request(video, enable_safety_checker=True))
    detail = caught.value.to_job_error().body["detail"][0]
    assert detail["loc"] == ["body"] and detail["ctx"]["stage"] == "output"
    assert len(echo) == 1  # it was generated, then withheld


def test_checker_passes_and_can_be_disabled(tmp_path: Path, tiny_annotators, source, echo) -> None:
    video, _ = source
    executor = make_executor(tmp_path, tiny_annotators)
    on, off = Hooks(), Hooks()
    run(executor, f"{APP_ID}/depth", request(video, enable_safety_checker=True), on)
    run(executor, f"{APP_ID}/depth", request(video), off)  # fal's default: off
    checks = [m for m in on.logs if is_verdict(m)]
    assert len(checks) == 2 and "input video" in checks[0] and "generated video" in checks[1]
    assert not any(is_verdict(m) for m in off.logs)


def test_missing_checker_warns_by_default(tmp_path: Path, source, echo) -> None:
    video, _ = source
    hooks = Hooks()
    registry = Annotators(AnnotatorConfig(root=tmp_path / "empty"))
    out = run(make_executor(tmp_path, registry), f"{APP_ID}/depth",
              request(video, enable_safety_checker=True), hooks)
    assert len(out.frames) == FRAMES
    (warning,) = hooks.warnings
    assert "running unchecked" in warning and "vace download --annotators" in warning


def test_missing_checker_refused_when_the_operator_says_so(tmp_path: Path, echo) -> None:
    registry = Annotators(AnnotatorConfig(root=tmp_path / "empty", safety_missing="refuse"))
    # An unreachable URL: the refusal comes first, before any download.
    with pytest.raises(InputError) as caught:
        run(make_executor(tmp_path, registry), f"{APP_ID}/depth",
            request("http://127.0.0.1:9/x.mp4", enable_safety_checker=True))
    detail = caught.value.to_job_error().body["detail"][0]
    assert detail["type"] == "feature_not_supported" and detail["loc"] == ["body", "enable_safety_checker"]
    assert "vace download --annotators" in detail["msg"]


@pytest.mark.parametrize(
    ("endpoint", "extra", "field"),
    [
        ("depth", {"preprocess": True}, "preprocess"),
        ("pose", {"preprocess": True}, "preprocess"),
        ("depth", {"enable_prompt_expansion": True}, "enable_prompt_expansion"),
        ("reframe", {"temporal_upsample_factor": 1, "interpolator_model": "film"}, "interpolator_model"),
    ],
)
def test_missing_model_is_a_clear_error_before_any_work(tmp_path: Path, echo, endpoint, extra, field) -> None:
    registry = Annotators(AnnotatorConfig(root=tmp_path / "empty"))
    payload = request("http://127.0.0.1:9/x.mp4", enable_safety_checker=False, **extra)
    with pytest.raises(InputError) as caught:
        run(make_executor(tmp_path, registry), f"{APP_ID}/{endpoint}", payload)
    detail = caught.value.to_job_error().body["detail"][0]
    assert detail["type"] == "feature_not_supported" and detail["loc"] == ["body", field]
    assert "vace download --annotators" in detail["msg"] and str(tmp_path / "empty") in detail["msg"]


# --- prompt expansion --------------------------------------------------------------------------------------


def test_prompt_expansion_feeds_and_returns_the_expanded_prompt(tmp_path: Path, tiny_annotators, source,
                                                                 echo) -> None:
    video, _ = source
    hooks = Hooks()
    out = run(make_executor(tmp_path, tiny_annotators), f"{APP_ID}/pose",
              request(video, enable_prompt_expansion=True), hooks)
    expanded = tiny_annotators.prompt_expander().expand_prompt("a dancer on a stage", "pose")
    assert expanded != "a dancer on a stage"
    assert out.prompt == expanded == echo[0].prompt
    assert f"Expanded prompt: {expanded}" in hooks.logs


# --- the worker's configuration ----------------------------------------------------------------------------


def test_worker_config_from_environment(tmp_path: Path) -> None:
    tiny = AnnotatorConfig.for_worker("tiny", tmp_path, None, {"VACE_ANNOTATORS_DIR": "/elsewhere"})
    assert (tiny.root, tiny.tiny) == (tmp_path / "models" / "annotators", True)
    real = AnnotatorConfig.for_worker("/m", tmp_path, "cpu", {})
    assert (real.root, real.tiny, real.depth_backend, real.safety_missing, real.safety_threshold) == (
        Path("weights/annotators"), False, "midas", "warn", 0.5)
    env = {"VACE_ANNOTATORS_DIR": "/a", "VACE_DEPTH_MODEL": "depth-anything-v2",
           "VACE_SAFETY_MISSING": "refuse", "VACE_SAFETY_THRESHOLD": "0.8"}
    custom = AnnotatorConfig.for_worker("/m", tmp_path, None, env)
    assert (custom.root, custom.depth_backend, custom.safety_missing, custom.safety_threshold) == (
        Path("/a"), "depth-anything-v2", "refuse", 0.8)
    for bad in ({"VACE_DEPTH_MODEL": "zoe"}, {"VACE_SAFETY_MISSING": "ignore"},
                {"VACE_SAFETY_THRESHOLD": "2"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AnnotatorConfig.for_worker("/m", tmp_path, None, bad)


@pytest.mark.parametrize("offload", [Offload.GROUP_OFFLOAD, Offload.ALL_ON_GPU])
def test_annotators_leave_the_gpu_during_generation_under_an_offloading_plan(
        tmp_path: Path, tiny_annotators, source, monkeypatch: pytest.MonkeyPatch, offload: Offload) -> None:
    """The registry is made to believe it is on a GPU; the pipeline carries the plan the loader applied."""
    video, _ = source
    registry = Annotators(tiny_annotators.config)
    monkeypatch.setattr(Annotators, "_uses_gpu", lambda self: True)
    pipe = SimpleNamespace(_vace_memory_plan=MemoryPlan(offload, vae_tiling=False))  # as apply_plan marks it
    loaded_while_generating: list[set[str]] = []
    alive_while_generating: list[int] = []
    handed_out: list[weakref.ref[Any]] = []  # every model the registry gave the executor

    def recording(get: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            model = get(*args)
            handed_out.append(weakref.ref(model))
            return model
        return wrapper

    monkeypatch.setattr(registry, "interpolator", recording(registry.interpolator))
    monkeypatch.setattr(registry, "safety", recording(registry.safety))
    # torch's cache only returns memory whose tensors are unreferenced: count the models still alive at the
    # moment offload() empties it (on a pretend GPU).
    alive_at_empty_cache: list[int] = []
    real_offload = registry.offload

    def offload_on_a_gpu() -> list[str]:
        def empty_cache() -> None:
            gc.collect()
            alive_at_empty_cache.append(sum(ref() is not None for ref in handed_out))

        with monkeypatch.context() as patch:
            patch.setattr(torch.cuda, "is_available", lambda: True)
            patch.setattr(torch.cuda, "empty_cache", empty_cache)
            return real_offload()

    monkeypatch.setattr(registry, "offload", offload_on_a_gpu)

    def fake_generate(pipe: Any, request: GenerationRequest, **_: Any) -> np.ndarray:
        loaded_while_generating.append(set(registry.loaded()))
        gc.collect()
        alive_while_generating.append(sum(ref() is not None for ref in handed_out))
        return np.rint(request.video * 255).astype(np.uint8)

    monkeypatch.setattr(execute, "generate", fake_generate)
    hooks = Hooks()
    payload = {"video_url": video, "aspect_ratio": "9:16", "interpolator_model": "rife",
               "num_inference_steps": 2, "temporal_upsample_factor": 1, "enable_safety_checker": True}
    out = run(make_executor(tmp_path, registry, pipe), f"{APP_ID}/reframe", payload, hooks)
    assert len(out.frames) == 2 * FRAMES - 1  # interpolated after generation, by a reloaded RIFE
    used = {catalog.RIFE.folder, catalog.NSFW.folder}
    assert set(registry.loaded()) == used
    checks = [m for m in hooks.logs if is_verdict(m)]
    assert len(checks) == 2 and "generated video" in checks[1]  # the reloaded checker ran on the output
    if offload is Offload.ALL_ON_GPU:
        assert loaded_while_generating == [used] and alive_while_generating == [2]
        assert not any(m.startswith("Freed the GPU memory") for m in hooks.logs)
    else:
        # Nothing holds the models while the 14B model runs: not the registry, not the executor.
        assert loaded_while_generating == [set()] and alive_while_generating == [0]
        assert alive_at_empty_cache == [0]
        assert any(m.startswith("Freed the GPU memory") and "rife" in m for m in hooks.logs)


def is_verdict(message: str) -> bool:
    """A safety checker's verdict line (the phase's own start/end lines also begin "Safety check of")."""
    return message.startswith("Safety check of the") and "NSFW score" in message
