"""The worker's per-request GPU memory check (server/worker/memory_check.py, wired in runner.py).

The 422 is built from the real 14B arithmetic; the worker-level tests run the real tiny pipeline with the
one seam a CPU cannot provide, the card's memory reading (`Executor.gpu_memory`), set to a card just big
enough or a byte too small for the request, so the refusal and the run are decided by the real estimate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from diffusers import WanVACEPipeline

from pipelines import memory
from pipelines.fast_mode import FastLora
from pipelines.loader import load_pipeline
from pipelines.memory import (
    WAN_VACE_14B,
    GiB,
    MemoryPlan,
    Offload,
    RequestShape,
    plan_of,
    request_peak,
    set_plan,
)
from pipelines.request_memory import GpuMemory, model_size_of, request_fits
from preprocessors.annotators.registry import AnnotatorConfig, Annotators
from preprocessors.sizing import target_size
from preprocessors.video_io import read_video, write_mp4
from server.contract.capacity import generated_frames
from server.contract.endpoints import APP_ID, ENDPOINTS
from server.contract.errors import InputError
from server.files.local import LocalFileStore
from server.worker.capacity import largest_fitting_frames
from server.worker.failures import failure_of
from server.worker.fetch import Fetcher
from server.worker.memory_check import TOO_LARGE, RequestLength, check_request_memory, request_shape
from server.worker.models import RequestModels, free_gpu_for_generation
from server.worker.runner import Executor, JobHooks
from tests.server.test_execute_equivalence import job, tiny_sizes, uri

H100_FREE, H100_TOTAL = int(78.66 * GiB), int(79.18 * GiB)  # gpu_check_h100-80gb-hbm3_2026-11-26.json, P0
RESIDENT = MemoryPlan(Offload.ALL_ON_GPU, False, text_encoder_resident=True)


def _request(**fields: Any) -> Any:
    return ENDPOINTS[APP_ID].input_model.model_validate({"prompt": "p", "video_url": "https://x/v.mp4",
                                                         **fields})


def _pipe(plan: MemoryPlan) -> Any:
    # model_size_of and plan_of read these attributes, as the loader leaves them on a real pipeline.
    return SimpleNamespace(_vace_model_size=WAN_VACE_14B, _vace_memory_plan=plan)


def _size_at(preset: str) -> tuple[int, int]:
    return target_size(preset, "16:9", 1920, 1080)


def test_a_cpu_worker_checks_nothing() -> None:
    request = _request(resolution="720p", num_frames=241)
    shape = request_shape(_pipe(RESIDENT), request, 1280, 720, 241, 0)
    assert check_request_memory(_pipe(RESIDENT), None, request, shape, _size_at) is None


def test_720p_241f_on_an_h100_is_a_422_naming_what_would_fit() -> None:
    request = _request(resolution="720p", num_frames=241)
    shape = request_shape(_pipe(RESIDENT), request, 1280, 720, 241, 0)
    gpu = GpuMemory(H100_FREE, H100_TOTAL)
    with pytest.raises(InputError) as caught:
        check_request_memory(_pipe(RESIDENT), gpu, request, shape, _size_at)
    exc = caught.value
    ctx = exc.ctx or {}
    assert (exc.field, exc.error_type) == ("num_frames", TOO_LARGE)
    assert ctx["num_frames"] == 241 and ctx["resolution"] == "720p"
    # The largest values are the real limits: one step more does not fit.
    longest, preset = ctx["max_num_frames"], ctx["max_resolution"]
    assert longest % 4 == 1 and 81 < longest < 241 and preset in ("480p", "580p")
    pipe = _pipe(RESIDENT)
    assert check_request_memory(pipe, gpu, request, dataclasses.replace(shape, num_frames=longest),
                                _size_at) is not None
    with pytest.raises(InputError):
        check_request_memory(pipe, gpu, request, dataclasses.replace(shape, num_frames=longest + 4), _size_at)
    w, h = _size_at(preset)
    assert check_request_memory(_pipe(RESIDENT), gpu, request,
                                dataclasses.replace(shape, frame_area=w * h), _size_at) is not None
    assert f"num_frames to {longest} or fewer at 720p" in exc.message
    assert f"resolution to {preset} at 241 frames" in exc.message
    # fal's model-error format: a 422 whose detail item names the field and carries the figures.
    error = failure_of(exc)
    assert error.status_code == 422
    (item,) = error.body["detail"]
    assert item["loc"] == ["body", "num_frames"] and item["type"] == TOO_LARGE
    assert item["ctx"]["max_num_frames"] == longest


def test_the_same_request_without_the_step_cache_or_cfg_needs_less() -> None:
    pipe = _pipe(RESIDENT)
    with_cache = request_shape(pipe, _request(acceleration="regular", guidance_scale=5.0), 1280, 720, 81, 0)
    without = request_shape(pipe, _request(acceleration="none", guidance_scale=1.0), 1280, 720, 81, 2)
    assert (with_cache.step_cache, with_cache.cfg) == (True, True)
    assert (without.step_cache, without.cfg, without.reference_images) == (False, False, 2)


def test_fast_mode_requests_are_not_charged_the_step_cache() -> None:
    # pipelines/generate.py turns the step cache off in fast mode: a LoRA installed and an eligible request.
    fast = _request(acceleration="regular", num_inference_steps=4, guidance_scale=1.0)
    with_lora = SimpleNamespace(**vars(_pipe(RESIDENT)),
                                _vace_fast_lora=FastLora(Path("distill.safetensors"), 1.0, layers=400))
    shape = request_shape(with_lora, fast, 1280, 720, 81, 0)
    assert (shape.step_cache, shape.cfg) == (False, False)
    assert request_peak(WAN_VACE_14B, RESIDENT, shape) < request_peak(
        WAN_VACE_14B, RESIDENT, dataclasses.replace(shape, step_cache=True))
    # No LoRA installed, or a request fast mode does not take: the step cache runs as asked.
    assert request_shape(_pipe(RESIDENT), fast, 1280, 720, 81, 0).step_cache
    slow = _request(acceleration="regular", num_inference_steps=20, guidance_scale=1.0)
    assert request_shape(with_lora, slow, 1280, 720, 81, 0).step_cache


# A card on which 720p fits only part of a downsampled 241-frame request.
SMALL_CARD = GpuMemory(int(60 * GiB), int(64 * GiB))


def _pipeline_limit(card: GpuMemory) -> int:
    def fits(width: int, height: int, frames: int) -> bool:
        return request_fits(card.usable, WAN_VACE_14B, RESIDENT, RequestShape(width * height, frames))

    return largest_fitting_frames(lambda frames: fits(1280, 720, frames))


def test_with_temporal_downsampling_the_422_gives_the_clients_num_frames() -> None:
    request = _request(resolution="720p", num_frames=241, temporal_downsample_factor=1)
    generated = generated_frames(241, 1)  # 121: what the pipeline makes of every 2nd frame
    limit = _pipeline_limit(SMALL_CARD)
    assert 17 <= limit < generated
    shape = RequestShape(1280 * 720, generated)
    with pytest.raises(InputError) as caught:
        check_request_memory(_pipe(RESIDENT), SMALL_CARD, request, shape, _size_at,
                             length=RequestLength(241, downsample=1))
    exc = caught.value
    ctx = exc.ctx or {}
    longest = ctx["max_num_frames"]
    assert ctx["num_frames"] == 241 and exc.field == "num_frames"
    # The client's limit, not the pipeline's: num_frames `longest` at factor 1 generates `limit` frames,
    # and one more frame would generate past it.
    assert longest == (limit - 1) * 2 + 1
    assert generated_frames(longest, 1) == limit and generated_frames(longest + 1, 1) > limit
    assert f"num_frames to {longest} or fewer at 720p" in exc.message
    assert "This request (241 frames, 121 generated with temporal downsampling by 2 at 720p)" in exc.message


def test_when_the_length_follows_the_input_the_422_asks_for_a_shorter_video() -> None:
    request = _request(resolution="720p", match_input_num_frames=True, num_frames=81)
    limit = _pipeline_limit(SMALL_CARD)
    shape = RequestShape(1280 * 720, 161)
    with pytest.raises(InputError) as caught:
        check_request_memory(_pipe(RESIDENT), SMALL_CARD, request, shape, _size_at,
                             length=RequestLength(161, fps=24.0, follows_input=True))
    exc = caught.value
    ctx = exc.ctx or {}
    assert exc.field == "video_url"
    assert ctx["num_frames"] == 161 and ctx["max_num_frames"] == limit
    # num_frames is ignored under match_input_num_frames: the advice is about the input, not that field.
    assert "num_frames to" not in exc.message
    assert (f"Send a shorter input video (at most {limit} frames at 24 fps, {limit / 24:.1f} s) or lower the "
            "frame rate at 720p") in exc.message
    assert failure_of(exc).body["detail"][0]["loc"] == ["body", "video_url"]


# ---------------------------------------------------------------- the worker: fails fast, or runs


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> str:
    rng = np.random.default_rng(5)
    frames = np.repeat(np.repeat(rng.integers(0, 256, (5, 12, 24, 3), dtype=np.uint8), 8, 1), 8, 2)
    path = tmp_path_factory.mktemp("memory-media") / "source.mp4"
    write_mp4(frames, 16, path)
    assert len(read_video(path)[0]) == 5
    return uri(path.read_bytes(), "video/mp4")


def _card_for(pipe: WanVACEPipeline, spare: int, plan: MemoryPlan | None = None,
              frames: int = 5) -> GpuMemory:
    """A 4 GiB card whose usable memory is the estimated peak of a tiny request of `frames` pipeline frames
    under `plan` (default: the pipeline's) plus `spare` bytes."""
    # What the runner derives for the payload.
    shape = RequestShape(96 * 48, frames, step_cache=False, cfg=False)
    peak = request_peak(model_size_of(pipe), plan or plan_of(pipe), shape)
    total = 4 * GiB
    return GpuMemory(free=peak + spare + GiB, total=total)  # usable = free - max(1 GiB, 8% of 4 GiB)


def _run(pipe: WanVACEPipeline, tmp_path: Path, video: str, card: GpuMemory,
         annotators: Annotators | None = None, **fields: Any) -> tuple[Any, list[str], list]:
    files = LocalFileStore(tmp_path / "files")
    fetcher = Fetcher(files, tmp_path / "work", max_bytes=50 << 20, timeout_s=10.0)
    executor = Executor(pipe, fetcher, files, tmp_path / "work", sizes=tiny_sizes, annotators=annotators)
    executor.gpu_memory = lambda _pipe: card  # the card's reading: the one thing a CPU cannot give
    real = executor.generate
    generated: list[Any] = []

    def recording(*args: Any, **kwargs: Any) -> np.ndarray:
        generated.append((args[1], plan_of(args[0])))  # the request, and the plan in force while it runs
        return real(*args, **kwargs)

    executor.generate = recording
    logs: list[str] = []
    payload = {"prompt": "a sliding square", "video_url": video, "match_input_num_frames": True,
               "match_input_frames_per_second": True, "num_inference_steps": 2, "guidance_scale": 1.0,
               "acceleration": "none", **fields}
    try:
        out = executor.generate_frames(job(APP_ID, payload), JobHooks(logs.append, lambda: False))
    except InputError as exc:
        return exc, logs, generated
    return out, logs, generated


def test_a_request_a_byte_over_the_card_fails_fast_with_a_422(tiny_pipe: WanVACEPipeline, tmp_path: Path,
                                                              video: str) -> None:
    exc, logs, generated = _run(tiny_pipe, tmp_path, video, _card_for(tiny_pipe, -1))
    assert isinstance(exc, InputError) and exc.error_type == TOO_LARGE
    assert generated == []  # no VAE, no denoising
    assert not any(line.startswith("Input ") for line in logs)  # refused before conditioning
    assert "This request (5 frames at " in exc.message
    error = failure_of(exc)
    # Its length follows the input (match_input_num_frames): the 422 blames video_url, not num_frames.
    assert error.status_code == 422 and error.body["detail"][0]["loc"] == ["body", "video_url"]
    # The tiny model's peak is its prompt encode (1 GiB of text encoder activations allowed for), which no
    # shorter or smaller video lowers: the 422 says so rather than suggest a size that would fail too.
    assert error.body["detail"][0]["ctx"]["max_num_frames"] is None
    assert error.body["detail"][0]["ctx"]["max_resolution"] is None
    assert "No shorter or smaller request fits either" in exc.message


def test_a_request_that_fits_runs_and_logs_the_decision(tiny_pipe: WanVACEPipeline, tmp_path: Path,
                                                        video: str) -> None:
    out, logs, generated = _run(tiny_pipe, tmp_path, video, _card_for(tiny_pipe, 0))
    assert len(generated) == 1 and out.frames.shape == (5, 48, 96, 3)
    (decision,) = [line for line in logs if line.startswith("GPU memory for ")]
    assert decision.startswith("GPU memory for 96x48 x 5 frames: fits as is: estimated peak")


def test_a_request_that_needs_the_encoder_room_runs_without_it_and_gets_it_back(
        tiny_pipe: WanVACEPipeline, tmp_path: Path, video: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The 1 GiB allowed for the text encoder's activations dwarfs the tiny model: without it, the tiny model's
    # peak is its denoising, as the 14B's is, so the resident encoder's bytes decide whether it fits.
    monkeypatch.setattr(memory, "TEXT_ENCODER_ACTIVATION_BYTES", 0)
    loaded = plan_of(tiny_pipe)
    resident = dataclasses.replace(loaded, text_encoder_resident=True)
    set_plan(tiny_pipe, resident)  # as apply_plan leaves a card with room for the encoder
    try:
        # Room for the request only once the text encoder is in RAM.
        card = _card_for(tiny_pipe, 0, dataclasses.replace(resident, text_encoder_resident=False))
        out, logs, generated = _run(tiny_pipe, tmp_path, video, card)
        assert out.frames.shape == (5, 48, 96, 3)
        ((_, during),) = generated
        assert not during.text_encoder_resident  # so generate() sends it to RAM after the prompts
        assert plan_of(tiny_pipe) == resident  # and the job's change is undone
        (decision,) = [line for line in logs if line.startswith("GPU memory for ")]
        assert "fits with text encoder sent back to RAM for this request" in decision
    finally:
        set_plan(tiny_pipe, loaded)


@pytest.mark.parametrize("drop", [False, True])
def test_annotators_leave_the_gpu_under_all_on_gpu_only_when_the_check_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drop: bool) -> None:
    registry = Annotators(AnnotatorConfig(root=tmp_path, device="cpu"))
    monkeypatch.setattr(Annotators, "_uses_gpu", lambda self: True)  # as on a GPU worker
    registry._loaded["midas"] = object()  # a loaded depth model, as _get leaves it
    registry._gpu_bytes["midas"] = 2 * GiB
    assert registry.gpu_bytes() == 2 * GiB
    logs: list[str] = []
    hooks = JobHooks(logs.append, lambda: False)
    free_gpu_for_generation(_pipe(RESIDENT), RequestModels(), registry, hooks, drop=drop)
    assert registry.loaded() == ([] if drop else ["midas"])
    assert registry.gpu_bytes() == (0 if drop else 2 * GiB)
    assert any(line == "Freed the GPU memory of midas for generation" for line in logs) is drop


def test_the_registry_counts_what_each_annotator_added_on_the_gpu(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import preprocessors.annotators.registry as registry_module

    # torch's CUDA counter before and after each load
    allocated = iter([5 * GiB, 7 * GiB, 7 * GiB, 7 * GiB + GiB // 2])
    monkeypatch.setattr(registry_module, "_cuda_allocated", lambda: next(allocated))
    registry = Annotators(AnnotatorConfig(root=tmp_path, device="cpu"))
    for name in ("depth-x", "pose-x"):
        registry._get(SimpleNamespace(folder=name, load=lambda folder, config: object()))
    assert registry.gpu_bytes() == 2 * GiB + GiB // 2
    del registry._loaded["depth-x"]
    assert registry.gpu_bytes() == GiB // 2


def test_the_worker_refuses_a_downsampled_request_in_its_own_num_frames(
        tiny_pipe: WanVACEPipeline, tmp_path: Path, video: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # As above: without the encoder's 1 GiB allowance the tiny model's peak grows with the frame count.
    monkeypatch.setattr(memory, "TEXT_ENCODER_ACTIVATION_BYTES", 0)
    card = _card_for(tiny_pipe, 0, frames=17)  # 17 pipeline frames fit; 21 do not
    # 65 frames at 16 fps keeping every 2nd: 33 generated, past the card. (Downsampling interpolates back:
    # the tiny interpolator stands in for FILM.)
    interpolators = Annotators(AnnotatorConfig(root=tmp_path / "annotators", device="cpu", tiny=True))
    exc, logs, generated = _run(tiny_pipe, tmp_path, video, card, interpolators, match_input_num_frames=False,
                                num_frames=65,
                                match_input_frames_per_second=False, frames_per_second=16,
                                temporal_downsample_factor=1)
    assert isinstance(exc, InputError) and exc.error_type == TOO_LARGE and generated == []
    ctx = failure_of(exc).body["detail"][0]["ctx"]
    # The pipeline's limit of 17 is num_frames 33 to the client (every 2nd of 33 frames is 17).
    assert (ctx["num_frames"], ctx["max_num_frames"]) == (65, 33)
    assert "num_frames to 33 or fewer" in exc.message
