"""--compile (pipelines/compile.py): when it applies, how the loader wires it, and the step cache with it."""

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers import WanVACETransformer3DModel

import pipelines.step_policy as step_policy
from pipelines.compile import CACHE_ENV, compile_blocks, should_compile
from pipelines.generate import generate
from pipelines.loader import load_pipeline
from pipelines.memory import MemoryPlan, Offload
from pipelines.step_policy import CachePolicy
from tests.pipelines.test_generate import make_request


def plan(offload: Offload) -> MemoryPlan:
    return MemoryPlan(offload, False, "test")


@pytest.mark.parametrize(("setting", "device", "offload", "expected"), [
    ("auto", "cpu", Offload.ALL_ON_GPU, False),
    ("auto", "cuda", Offload.ALL_ON_GPU, True),
    ("auto", "cuda:1", Offload.MODEL_OFFLOAD, True),
    ("auto", "cuda", Offload.GROUP_OFFLOAD, False),
    ("auto", "cuda", Offload.SEQUENTIAL_OFFLOAD, False),
    ("on", "cpu", Offload.ALL_ON_GPU, True),
    ("off", "cuda", Offload.ALL_ON_GPU, False),
])  # fmt: skip
def test_when_compile_applies(setting: str, device: str, offload: Offload, expected: bool) -> None:
    assert should_compile(setting, device, plan(offload))[0] is expected


def test_bad_value_is_refused_before_loading(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="compile must be one of auto, on, off"):
        load_pipeline(tiny_model_dir, device="cpu", compile="fast")


@pytest.fixture
def compile_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(WanVACETransformer3DModel, "compile_repeated_blocks",
                        lambda self, *args, **kwargs: calls.append(kwargs), raising=True)
    return calls


def test_on_compiles_the_blocks_with_a_persistent_cache(
    tiny_model_dir: Path, tmp_path: Path, compile_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    load_pipeline(tiny_model_dir, device="cpu", compile="on", compile_cache_dir=tmp_path / "compile_cache")
    assert compile_calls == [{"fullgraph": False, "dynamic": False}]
    assert os.environ[CACHE_ENV] == str(tmp_path / "compile_cache") and (tmp_path / "compile_cache").is_dir()


def test_an_operators_cache_folder_wins(
    tiny_model_dir: Path, tmp_path: Path, compile_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    load_pipeline(tiny_model_dir, device="cpu", compile="on", compile_cache_dir=tmp_path / "compile_cache")
    assert (tmp_path / "mine").is_dir() and not (tmp_path / "compile_cache").exists()


@pytest.mark.parametrize("setting", ["auto", "off"])
def test_auto_and_off_do_not_compile_on_a_cpu(
    tiny_model_dir: Path, setting: str, compile_calls: list[dict[str, Any]]
) -> None:
    load_pipeline(tiny_model_dir, device="cpu", compile=setting)
    assert compile_calls == []


def test_step_cache_wraps_outside_the_compiled_blocks(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real torch.compile of every block (dynamo tracing with the eager backend: seconds on a CPU, and the
    same arithmetic, so frames match the uncompiled pipeline's) under a step cache that reuses steps."""
    monkeypatch.setitem(step_policy.POLICIES, "regular",
                        CachePolicy(threshold=1e9, warmup_fraction=0.0, max_consecutive_skips=100))
    request = make_request(num_inference_steps=5, acceleration="regular")
    eager = generate(load_pipeline(tiny_model_dir, device="cpu"), request)
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    compile_blocks(pipe.transformer, backend="eager")
    assert all(block._compiled_call_impl is not None
               for block in [*pipe.transformer.blocks, *pipe.transformer.vace_blocks])
    logs: list[str] = []
    compiled = generate(pipe, request, on_log=logs.append)
    assert logs[0].startswith("step cache: 3 of 5 steps computed")  # 2 warm-up steps, 2 reused, the last
    np.testing.assert_array_equal(compiled, eager)
