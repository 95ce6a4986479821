"""Per-request schedulers: fal's sampler names, the flow shift, and no state leaking between requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanVACEPipeline,
)

from pipelines.generate import GenerationRequest, generate
from pipelines.loader import load_pipeline
from pipelines.schedulers import build_scheduler, default_flow_shift

SIZE, FRAMES = 32, 5


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


def shift_of(scheduler: object) -> float:
    config = scheduler.config  # type: ignore[attr-defined]
    return config["shift"] if isinstance(scheduler, FlowMatchEulerDiscreteScheduler) else config["flow_shift"]


@pytest.mark.parametrize(
    ("resolution", "shift"), [("240p", 3.0), ("360p", 3.0), ("480p", 3.0), ("580p", 4.0), ("720p", 5.0)]
)
def test_default_shift_follows_resolution(resolution: str, shift: float) -> None:
    assert default_flow_shift(resolution) == shift


def test_unknown_resolution_is_refused() -> None:
    with pytest.raises(ValueError, match="1080p"):
        default_flow_shift("1080p")


@pytest.mark.parametrize(
    ("sampler", "cls"),
    [
        ("unipc", UniPCMultistepScheduler),
        ("dpm++", DPMSolverMultistepScheduler),
        ("euler", FlowMatchEulerDiscreteScheduler),
    ],
)
def test_build_scheduler_class_and_shift(pipe: WanVACEPipeline, sampler: str, cls: type) -> None:
    before = dict(pipe.scheduler.config)
    scheduler = build_scheduler(pipe.scheduler.config, sampler, 7.5)
    assert type(scheduler) is cls
    assert shift_of(scheduler) == 7.5
    if sampler != "euler":
        assert scheduler.config["prediction_type"] == "flow_prediction"
        assert scheduler.config["use_flow_sigmas"] is True
    if sampler == "dpm++":
        assert scheduler.config["algorithm_type"] == "dpmsolver++"
    assert dict(pipe.scheduler.config) == before  # the loaded scheduler is untouched


def request(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = dict(
        prompt="a cat", negative_prompt="", video=np.full((FRAMES, SIZE, SIZE, 3), 0.5, dtype=np.float32),
        mask=np.ones((FRAMES, SIZE, SIZE), dtype=np.float32), reference_images=[], width=SIZE, height=SIZE,
        num_inference_steps=2, guidance_scale=1.0, seed=0,
    )
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sampler", "shift", "cls"),
    [
        ("unipc", 3.0, UniPCMultistepScheduler),
        ("dpm++", 5.0, DPMSolverMultistepScheduler),
        ("euler", 12.0, FlowMatchEulerDiscreteScheduler),
    ],
)
def test_generation_uses_the_requested_scheduler_then_restores_the_loaded_one(
    pipe: WanVACEPipeline, sampler: str, shift: float, cls: type
) -> None:
    loaded = pipe.scheduler
    seen: list[tuple[type, float]] = []

    def spy(*_: object) -> None:  # runs inside the denoising loop, once per transformer pass
        seen.append((type(pipe.scheduler), shift_of(pipe.scheduler)))

    handle = pipe.transformer.register_forward_hook(spy)
    try:
        generate(pipe, request(sampler=sampler, flow_shift=shift))
    finally:
        handle.remove()
    assert seen and set(seen) == {(cls, shift)}
    assert pipe.scheduler is loaded and shift_of(loaded) == 3.0  # the tiny model's own shift


def test_shift_changes_the_sigmas_and_the_output(pipe: WanVACEPipeline) -> None:
    low = generate(pipe, request(flow_shift=1.0, num_inference_steps=3))
    high = generate(pipe, request(flow_shift=12.0, num_inference_steps=3))
    again = generate(pipe, request(flow_shift=1.0, num_inference_steps=3))
    np.testing.assert_array_equal(low, again)  # nothing from the shift-12 run leaked into the next one
    assert not np.array_equal(low, high)


def test_no_shift_keeps_the_loaded_schedulers_shift(pipe: WanVACEPipeline) -> None:
    seen: list[float] = []
    handle = pipe.transformer.register_forward_hook(lambda *_: seen.append(shift_of(pipe.scheduler)))
    try:
        generate(pipe, request())
    finally:
        handle.remove()
    assert set(seen) == {3.0}


def test_unknown_sampler_is_refused(pipe: WanVACEPipeline) -> None:
    with pytest.raises(ValueError, match="sampler"):
        generate(pipe, request(sampler="ddim"))
    with pytest.raises(ValueError, match="flow_shift"):
        generate(pipe, request(flow_shift=0.0))
