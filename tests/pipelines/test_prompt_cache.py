"""Prompt embeddings are cached between jobs (pipelines/prompt_cache.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanVACEPipeline

from pipelines.generate import generate
from pipelines.loader import load_pipeline
from pipelines.prompt_cache import PromptCache, cache_of
from tests.pipelines.test_generate import make_request


@pytest.fixture
def pipe(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")  # a fresh pipeline: an empty cache


@pytest.fixture
def encoder_calls(pipe: WanVACEPipeline) -> list[int]:
    calls: list[int] = []
    pipe.text_encoder.register_forward_hook(lambda module, args, out: calls.append(1))
    return calls


def test_second_job_with_the_same_prompts_skips_the_text_encoder(
    pipe: WanVACEPipeline, encoder_calls: list[int]
) -> None:
    first = generate(pipe, make_request())
    assert len(encoder_calls) == 2  # the prompt and the negative prompt
    second = generate(pipe, make_request())
    assert len(encoder_calls) == 2
    np.testing.assert_array_equal(first, second)


def test_only_a_new_prompt_is_encoded_and_frames_match_a_cold_cache(
    pipe: WanVACEPipeline, encoder_calls: list[int], tiny_model_dir: Path
) -> None:
    generate(pipe, make_request())
    frames = generate(pipe, make_request(prompt="a dog surfing"))
    assert len(encoder_calls) == 3  # the unchanged negative prompt came from the cache
    cold = generate(load_pipeline(tiny_model_dir, device="cpu"), make_request(prompt="a dog surfing"))
    np.testing.assert_array_equal(frames, cold)
    generate(pipe, make_request(prompt="a dog surfing", guidance_scale=1.0))  # no CFG: no negative needed
    assert len(encoder_calls) == 3


def test_least_recently_used_entry_goes_first() -> None:
    cache = PromptCache(max_entries=2)
    a, b, c = (torch.full((1,), float(i)) for i in range(3))
    cache.put(("a", 512), a)
    cache.put(("b", 512), b)
    assert cache.get(("a", 512)) is a  # now b is the oldest
    cache.put(("c", 512), c)
    assert cache.get(("b", 512)) is None and cache.get(("a", 512)) is a and len(cache) == 2


def test_the_cache_belongs_to_its_pipeline(pipe: WanVACEPipeline, tiny_model_dir: Path) -> None:
    assert cache_of(pipe) is cache_of(pipe)
    assert cache_of(load_pipeline(tiny_model_dir, device="cpu")) is not cache_of(pipe)
