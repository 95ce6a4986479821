"""The all-zero VAE input cache changes no output and saves the encoder pass for control videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanVACEPipeline

from pipelines.generate import GenerationRequest, generate
from pipelines.loader import load_pipeline
from pipelines.vae_cache import ZeroInputEncodeCache, install_zero_input_cache

FRAMES, WIDTH, HEIGHT = 9, 64, 48


def control_request(seed: int = 0) -> GenerationRequest:
    rng = np.random.default_rng(seed)
    return GenerationRequest(
        prompt="a robot", negative_prompt="", reference_images=[],
        video=rng.random((FRAMES, HEIGHT, WIDTH, 3), dtype=np.float32),
        mask=np.ones((FRAMES, HEIGHT, WIDTH), dtype=np.float32),  # depth/pose: generate everywhere
        width=WIDTH, height=HEIGHT, num_inference_steps=2, guidance_scale=5.0, seed=seed,
    )


@pytest.fixture
def pipe(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


def test_cached_pipeline_output_is_identical(pipe: WanVACEPipeline, tiny_model_dir: Path) -> None:
    reference = generate(load_pipeline(tiny_model_dir, device="cpu"), control_request())
    real_encodes: list[tuple[int, ...]] = []
    original = pipe.vae._encode

    def counting_encode(x: torch.Tensor) -> torch.Tensor:
        real_encodes.append(tuple(x.shape))
        return original(x)

    pipe.vae._encode = counting_encode
    cache = install_zero_input_cache(pipe.vae)
    first = generate(pipe, control_request())
    second = generate(pipe, control_request(seed=1))
    assert np.array_equal(first, reference)
    # First job: zero stream + video; second job: only its video (the zero stream came from the cache).
    assert len(real_encodes) == 3
    assert cache.hits == 1
    assert not np.array_equal(first, second)


def test_non_zero_inputs_always_reach_the_encoder() -> None:
    calls: list[int] = []
    cache = ZeroInputEncodeCache(lambda x: (calls.append(1), x * 2)[1], max_entries=2)
    ones = torch.ones(1, 3, 5, 8, 8)
    assert torch.equal(cache(ones), ones * 2)
    assert torch.equal(cache(ones), ones * 2)
    assert len(calls) == 2 and cache.hits == 0


def test_cache_is_bounded_and_keyed_by_shape() -> None:
    calls: list[tuple[int, ...]] = []
    cache = ZeroInputEncodeCache(lambda x: (calls.append(tuple(x.shape)), x + 1)[1], max_entries=2)
    shapes = [(1, 3, 1, 8, 8), (1, 3, 5, 8, 8), (1, 3, 9, 8, 8)]
    for shape in shapes:
        cache(torch.zeros(shape))
    cache(torch.zeros(shapes[2]))
    assert cache.hits == 1
    cache(torch.zeros(shapes[0]))  # evicted as the least recently used: encoded again
    assert calls == [shapes[0], shapes[1], shapes[2], shapes[0]]


def test_install_is_idempotent(pipe: WanVACEPipeline) -> None:
    assert install_zero_input_cache(pipe.vae) is install_zero_input_cache(pipe.vae)
