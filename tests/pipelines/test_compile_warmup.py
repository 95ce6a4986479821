"""--compile-warmup (pipelines/compile_warmup.py): after the warm-up, a request of a warmed shape compiles
nothing.

torch.compile runs for real (dynamo traces every block and guards on its inputs) with a backend that counts
the graphs it is handed and runs them eagerly: each graph handed to a backend is one compilation, whichever
backend it is (inductor on a CPU takes ~30 s per shape here; benchmarks/compile_warmup.py times it). Warming
up without inference mode, or with another prompt length, fails the first test.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import WanVACEPipeline

from pipelines.cfg_truncation import configured_fraction
from pipelines.compile import compile_blocks
from pipelines.compile_warmup import DEFAULT_WARMUP, WarmupShape, is_compiled, parse_warmup, warm_up
from pipelines.generate import GenerationRequest, generate
from pipelines.loader import load_pipeline
from server.settings import Settings
from server.worker.loop import configure_model_run

WARM, COLD = WarmupShape(32, 32, 5), WarmupShape(48, 32, 5)


@pytest.mark.parametrize(("value", "expected"), [
    ("none", ()), ("", ()), ("480p,720p", (WarmupShape(832, 480, 81), WarmupShape(1280, 720, 81))),
    (" 720P , 64x48x5,720p", (WarmupShape(1280, 720, 81), WarmupShape(64, 48, 5))),
    ("64x48", (WarmupShape(64, 48, 81),)),
])
def test_parse(value: str, expected: tuple[WarmupShape, ...]) -> None:
    assert parse_warmup(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("1080p", "is not one of none, 240p"), ("480p;720p", "is not one of"), ("60x48", "multiples of 16"),
    ("64x48x6", "4k\\+1"),
])
def test_parse_refuses(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_warmup(value)


def test_the_settings_default_parses() -> None:
    assert Settings().compile_warmup == DEFAULT_WARMUP
    assert parse_warmup(DEFAULT_WARMUP) == (WarmupShape(832, 480, 81), WarmupShape(1280, 720, 81))


class Graphs:
    """A torch.compile backend that counts the graphs dynamo compiles and runs them as they are."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, gm: torch.fx.GraphModule, inputs: list[Any]) -> Callable[..., Any]:
        self.count += 1
        return gm.forward


@pytest.fixture
def compiled(tiny_model_dir: Path) -> Iterator[tuple[WanVACEPipeline, Graphs]]:
    torch._dynamo.reset()  # no graph another test compiled for these block classes may serve this one
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    graphs = Graphs()
    compile_blocks(pipe.transformer, backend=graphs)
    yield pipe, graphs
    torch._dynamo.reset()


def request(shape: WarmupShape, **overrides: Any) -> GenerationRequest:
    rng = np.random.default_rng(0)
    frames, size = shape.num_frames, (shape.height, shape.width)
    fields: dict[str, Any] = dict(
        prompt="a cat", negative_prompt="blurry", video=rng.random((frames, *size, 3), dtype=np.float32),
        mask=np.ones((frames, *size), dtype=np.float32), reference_images=[], width=shape.width,
        height=shape.height, num_inference_steps=3, guidance_scale=5.0, seed=0, acceleration="regular")
    return GenerationRequest(**{**fields, **overrides})


def test_a_warmed_shape_does_not_compile_again_and_another_does(
    compiled: tuple[WanVACEPipeline, Graphs],
) -> None:
    pipe, graphs = compiled
    seconds = warm_up(pipe, (WARM,))
    assert list(seconds) == ["32x32x5"] and seconds["32x32x5"] > 0
    warmed = graphs.count
    assert warmed > 0  # the main and VACE blocks were compiled by the warm-up
    # Both CFG branches and the step cache (acceleration regular), as the worker runs a job; two samplers.
    generate(pipe, request(WARM))
    generate(pipe, request(WARM, sampler="euler", acceleration="none", seed=3))
    assert graphs.count == warmed
    generate(pipe, request(COLD))
    assert graphs.count > warmed


def test_no_warm_up_without_compile(tiny_model_dir: Path) -> None:
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    calls: list[int] = []
    pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    assert not is_compiled(pipe.transformer)
    assert warm_up(pipe, (WARM,)) == {} and calls == []


def test_the_worker_configures_the_loaded_model(compiled: tuple[WanVACEPipeline, Graphs]) -> None:
    """What Worker.load() runs between loading and reporting ready: the truncation and the warm-up; in a group
    of GPUs no warm-up (the ranks run the transformer together)."""
    pipe, graphs = compiled
    configure_model_run(pipe, Settings(cfg_truncation=0.25, gpus_per_job=2), parse_warmup("32x32x5"))
    assert configured_fraction(pipe) == 0.25 and graphs.count == 0
    configure_model_run(pipe, Settings(), parse_warmup("32x32x5"))
    assert configured_fraction(pipe) == 0.0 and graphs.count > 0


def test_with_a_fast_mode_lora_the_worker_warms_both_states(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A fast-mode LoRA's layers make other graphs than the plain blocks': the worker warms both, so neither
    an ordinary nor a fast request of a warmed shape compiles, and the LoRA is left off."""
    from pipelines.fast_mode import installed
    from tests.pipelines.wan_lora_file import write_wan_lora

    torch._dynamo.reset()
    plain = load_pipeline(tiny_model_dir, device="cpu")
    lora_file = write_wan_lora(tmp_path / "distill.safetensors", plain.transformer, rank=4, alpha=4.0)
    pipe = load_pipeline(tiny_model_dir, device="cpu", fast_lora=lora_file)
    graphs = Graphs()
    compile_blocks(pipe.transformer, backend=graphs)
    try:
        configure_model_run(pipe, Settings(), parse_warmup("32x32x5"))
        lora = installed(pipe)
        assert lora is not None and not lora.enabled
        warmed = graphs.count
        generate(pipe, request(WARM))
        generate(pipe, request(WARM, num_inference_steps=2, guidance_scale=1.0))  # fast mode
        assert graphs.count == warmed > 0
    finally:
        torch._dynamo.reset()
