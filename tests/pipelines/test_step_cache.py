"""The VACE-aware step cache (pipelines/step_cache.py) on the tiny model, and `acceleration` in generate()."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanVACEPipeline

import pipelines.step_policy as step_policy
from pipelines.generate import GenerationCancelled, generate
from pipelines.loader import load_pipeline
from pipelines.step_cache import StepCache
from pipelines.step_policy import CachePolicy
from tests.pipelines.test_generate import make_request

ALWAYS_REUSE = CachePolicy(threshold=1e9, warmup_fraction=0.0, max_consecutive_skips=100)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


class BlockCalls:
    """Counts calls of the first main block and the first VACE block (one each per computed forward)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.main = self.vace = 0
        self.handles = [
            transformer.blocks[0].register_forward_hook(lambda *a: self._add("main")),
            transformer.vace_blocks[0].register_forward_hook(lambda *a: self._add("vace")),
        ]

    def _add(self, which: str) -> None:
        setattr(self, which, getattr(self, which) + 1)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.fixture
def block_calls(pipe: WanVACEPipeline) -> Iterator[BlockCalls]:
    calls = BlockCalls(pipe.transformer)
    yield calls
    calls.remove()


def model_inputs(transformer: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    config = transformer.config
    gen = torch.Generator().manual_seed(seed)
    frames, height, width = 3, 8, 8  # latent sizes
    return {
        "hidden_states": torch.randn(1, config.in_channels, frames, height, width, generator=gen),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 8, config.text_dim, generator=gen),
        "control_hidden_states": torch.randn(1, config.vace_in_channels, frames, height, width,
                                             generator=gen),
    }


def test_none_installs_nothing_and_computes_every_step(pipe: WanVACEPipeline,
                                                       block_calls: BlockCalls) -> None:
    seen: list[bool] = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda module, args: seen.append("forward" in vars(module)))
    try:
        frames = generate(pipe, make_request(num_inference_steps=4, acceleration="none"))
    finally:
        handle.remove()
    assert seen == [False] * 8  # 4 steps x cond/uncond, the model's own forward every time
    assert block_calls.main == block_calls.vace == 8
    assert np.array_equal(frames, generate(pipe, make_request(num_inference_steps=4)))  # today's default


def test_regular_computes_fewer_forwards_and_logs_it(pipe: WanVACEPipeline, block_calls: BlockCalls) -> None:
    logs: list[str] = []
    generate(pipe, make_request(num_inference_steps=30, acceleration="regular"), on_log=logs.append)
    assert block_calls.main == block_calls.vace < 60
    computed = block_calls.main // 2
    assert logs[0].startswith(f"step cache: {computed} of 30 steps computed ({2 * computed} of 60 "
                              "transformer forwards, reused steps ")
    assert logs[0].endswith(") (acceleration regular)") and len(logs) == 1


def test_zero_threshold_reproduces_none_exactly(pipe: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch,
                                                block_calls: BlockCalls) -> None:
    exact = generate(pipe, make_request(num_inference_steps=6, acceleration="none"))
    monkeypatch.setitem(step_policy.POLICIES, "regular",
                        CachePolicy(threshold=0.0, warmup_fraction=0.0, max_consecutive_skips=100))
    cached = generate(pipe, make_request(num_inference_steps=6, acceleration="regular"))
    assert np.array_equal(cached, exact)
    assert block_calls.main == 24


def test_hit_equals_full_output_with_vace_hints(pipe: WanVACEPipeline, block_calls: BlockCalls) -> None:
    """A reused step with an unchanged input gives the full model's output for each CFG branch. diffusers'
    FirstBlockCache/MagCache fail this: they add the VACE hints a second time on a hit."""
    model = pipe.transformer
    cond, uncond = model_inputs(model, 0), model_inputs(model, 1)
    for shared in ("hidden_states", "control_hidden_states"):  # CFG's branches differ only in the prompt
        uncond[shared] = cond[shared]
    with torch.inference_mode():
        full = [model(**inputs, return_dict=False)[0] for inputs in (cond, uncond)]
        no_hints = model(**cond, control_hidden_states_scale=torch.zeros(len(model.config.vace_layers)),
                         return_dict=False)[0]
        assert not torch.allclose(no_hints, full[0], atol=1e-3)  # the hints matter for this input
        calls_before = block_calls.main
        with StepCache(model, ALWAYS_REUSE, num_steps=4) as cache:
            for _ in range(3):
                outputs = [model(**inputs, return_dict=False)[0] for inputs in (cond, uncond)]
                cache.end_step()
        assert (cache.stats.computed_steps, cache.stats.forwards_skipped) == (2, 2)  # the third step reused
        assert block_calls.main - calls_before == block_calls.vace - calls_before == 4
    for got, want in zip(outputs, full, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert "forward" not in vars(model) and len(model.blocks) == model.config.num_layers  # removed cleanly


def test_a_hook_that_replaces_forward_mid_call_does_not_unwrap_the_cache(pipe: WanVACEPipeline,
                                                                       block_calls: BlockCalls) -> None:
    """diffusers' group offload with streams installs a hook that, after the model's first forward, writes
    its predecessor back as `forward` (over the cache's wrapper): the cache must keep caching."""
    model = pipe.transformer
    inner = model.forward

    def self_removing(*args: object, **kwargs: object) -> object:
        model.forward = inner  # what the prefetch hook does to itself after the first call
        return inner(*args, **kwargs)

    model.forward = self_removing
    inputs = model_inputs(model, 0)
    try:
        with torch.inference_mode(), StepCache(model, ALWAYS_REUSE, num_steps=4) as cache:
            for _ in range(4):
                model(**inputs, return_dict=False)
                cache.end_step()
        # Steps 1-2 are computed (warm-up), step 3 reused; the last step is always computed.
        assert (cache.stats.forwards_computed, cache.stats.forwards_skipped) == (3, 1)
        assert vars(model)["forward"] is inner  # what was there at the end is what comes back
    finally:
        vars(model).pop("forward", None)


def test_progress_and_cancel_with_the_cache(pipe: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(step_policy.POLICIES, "regular", ALWAYS_REUSE)
    seen: list[tuple[int, int]] = []
    generate(pipe, make_request(num_inference_steps=6, acceleration="regular"),
             on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)]

    with pytest.raises(GenerationCancelled, match="after step 4 of 6"):
        generate(pipe, make_request(num_inference_steps=6, acceleration="regular"),
                 on_step=lambda done, total: seen.append((done, total)),
                 should_cancel=lambda: len(seen) >= 10)
    model = pipe.transformer
    assert "forward" not in vars(model) and len(model.vace_blocks) == len(model.config.vace_layers)
    # The pipeline is clean for the next job: an exact run gives the same frames as before the cancel.
    first = generate(pipe, make_request(acceleration="none"))
    assert np.array_equal(first, generate(pipe, make_request(acceleration="none")))


def test_unknown_acceleration_is_refused(pipe: WanVACEPipeline) -> None:
    with pytest.raises(ValueError, match="acceleration must be one of"):
        generate(pipe, make_request(acceleration="turbo"))
