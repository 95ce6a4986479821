"""--cfg-truncation (pipelines/cfg_truncation.py): the last steps skip the unconditional pass (tiny model)."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import WanVACEPipeline

import pipelines.step_policy as step_policy
from pipelines.cfg_truncation import CfgTruncation, configure_cfg_truncation
from pipelines.generate import GenerationCancelled, GenerationRequest, generate
from pipelines.loader import load_pipeline
from pipelines.step_cache import StepCache
from pipelines.step_policy import CachePolicy
from tests.pipelines.test_generate import make_request

STEPS = 6
SIZE = {"width": 32, "height": 32}  # 5 frames of 32x32: a step costs a few milliseconds


def small_request(**overrides: object) -> GenerationRequest:
    rng = np.random.default_rng(0)
    video = rng.random((5, 32, 32, 3), dtype=np.float32)
    mask = np.ones((5, 32, 32), dtype=np.float32)
    return make_request(video=video, mask=mask, num_inference_steps=STEPS, **SIZE, **overrides)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


class Run:
    """One generation's frames, latents after each step, log lines and transformer calls."""

    def __init__(self, pipe: WanVACEPipeline, fraction: float | None, **overrides: object) -> None:
        self.logs: list[str] = []
        self.latents: dict[int, torch.Tensor] = {}
        self.steps: list[int] = []
        self.calls = 0
        self.forwards: list[tuple[int, int]] = []  # generate()'s on_forwards(computed, called)

        def count(*_: object) -> None:
            self.calls += 1

        handle = pipe.transformer.register_forward_pre_hook(count)
        try:
            self.frames = generate(
                pipe, small_request(**overrides), cfg_truncation=fraction,
                on_log=self.logs.append, on_step=lambda done, _total: self.steps.append(done),
                on_latents=lambda step, lat: self.latents.__setitem__(step, lat.clone()), latents_every=1,
                on_forwards=lambda computed, called: self.forwards.append((computed, called)))
        finally:
            handle.remove()


@pytest.mark.parametrize(("fraction", "steps", "guided", "unguided"), [
    (0.0, 30, True, 0), (0.2, 30, True, 6), (0.25, 10, True, 2), (0.99, 10, True, 9), (0.5, 1, True, 0),
    (0.5, 10, False, 0),
])
def test_unguided_steps(fraction: float, steps: int, guided: bool, unguided: int) -> None:
    assert CfgTruncation(fraction, steps, guided).unguided_steps == unguided


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_out_of_range_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"cfg truncation must be in \[0, 1\)"):
        CfgTruncation(fraction, 10, True).unguided_steps  # noqa: B018


def test_zero_is_bit_identical_to_no_setting(pipe: WanVACEPipeline) -> None:
    configure_cfg_truncation(pipe, 0.0)
    before, zero = Run(pipe, None), Run(pipe, 0.0)
    np.testing.assert_array_equal(zero.frames, before.frames)
    assert zero.calls == before.calls == 2 * STEPS
    assert not any("CFG truncation" in line for line in zero.logs)


def test_truncation_skips_the_unconditional_pass_from_its_step_on(pipe: WanVACEPipeline) -> None:
    full, cut = Run(pipe, 0.0), Run(pipe, 0.5)
    assert cut.calls == 2 * 3 + 3  # 3 guided steps with both passes, then 3 conditional-only
    assert cut.logs == ["CFG truncation 0.5: no unconditional pass in the last 3 of 6 steps; 9 transformer "
                        "calls (full CFG: 12)"]
    assert cut.steps == list(range(1, STEPS + 1))  # progress still reports every step
    for step in range(1, 4):  # the latents after steps 1-3 are the guided run's, bit for bit
        assert torch.equal(cut.latents[step], full.latents[step]), step
    for step in range(4, STEPS + 1):
        assert not torch.allclose(cut.latents[step], full.latents[step]), step
    assert np.abs(cut.frames.astype(int) - full.frames).max() > 0


def test_the_worker_setting_is_read_from_the_pipeline(pipe: WanVACEPipeline) -> None:
    configure_cfg_truncation(pipe, 0.5)
    try:
        assert Run(pipe, None).calls == 9
    finally:
        configure_cfg_truncation(pipe, 0.0)


def test_without_guidance_nothing_changes(pipe: WanVACEPipeline) -> None:
    plain, cut = Run(pipe, 0.0, guidance_scale=1.0), Run(pipe, 0.5, guidance_scale=1.0)
    assert cut.calls == plain.calls == STEPS
    np.testing.assert_array_equal(cut.frames, plain.frames)


def test_with_the_step_cache(pipe: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """acceleration regular, with a policy that reuses whatever it may: the cache sees one call a step after
    the cut, keeps deciding on the conditional call, reuses its residual, and drops the unconditional one."""
    monkeypatch.setitem(step_policy.POLICIES, "regular",
                        CachePolicy(threshold=1e9, warmup_fraction=0.0, max_consecutive_skips=100))
    residuals: list[set[int]] = []
    real_exit = StepCache.__exit__

    def spy_exit(self: StepCache, *exc: object) -> None:
        residuals.append(set(self._residuals))
        real_exit(self, *exc)

    monkeypatch.setattr(StepCache, "__exit__", spy_exit)
    reused_branches: list[int] = []  # per reused call, the branch whose residual it added
    real_at_body_output = StepCache._at_body_output

    def spy_at_body_output(self: StepCache, module: Any, args: tuple[Any, ...]) -> Any:
        if self._reusing is not None:
            reused_branches.append(self._reusing)
        return real_at_body_output(self, module, args)

    monkeypatch.setattr(StepCache, "_at_body_output", spy_at_body_output)
    cached = Run(pipe, 0.0, acceleration="regular")
    assert reused_branches == [0, 1, 0, 1, 0, 1]  # steps 3, 4, 5 with CFG: each branch its own residual
    reused_branches.clear()
    cut = Run(pipe, 0.5, acceleration="regular")
    # Step 3 (guided) reuses both; steps 4 and 5 (cut) call once and add the conditional residual.
    assert reused_branches == [0, 1, 0, 0]
    # Steps 1-2 are the cache's warm-up, 6 is the last; 3-5 are reused: 3 steps computed.
    assert cached.logs == ["step cache: 3 of 6 steps computed (6 of 12 transformer forwards, reused steps 3, "
                           "4, 5) (acceleration regular)"]
    assert cut.logs[0] == ("step cache: 3 of 6 steps computed (5 of 9 transformer forwards, reused steps 3, "
                           "4, 5) (acceleration regular)")
    assert cut.calls == 9
    assert cached.forwards == [(6, 12)] and cut.forwards == [(5, 9)]  # what /metrics counts
    assert residuals == [{0, 1}, {0}]
    for step in range(1, 4):
        assert torch.equal(cut.latents[step], cached.latents[step]), step
    assert not torch.allclose(cut.latents[4], cached.latents[4])  # step 4 is the first without CFG


def test_cancel_under_truncation(pipe: WanVACEPipeline) -> None:
    done: list[int] = []
    with pytest.raises(GenerationCancelled):
        generate(pipe, small_request(), cfg_truncation=0.5,
                 on_step=lambda step, _total: done.append(step), should_cancel=lambda: len(done) >= 4)
    assert done == list(range(1, 5))
    assert Run(pipe, 0.5).calls == 2 * 3 + 3  # the next job starts guided again
