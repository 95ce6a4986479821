"""Weights straight to the GPU (pipelines/weights_placement.py): the plan before the weights, the placement
argument, and the CPU path unchanged."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
from transformers import UMT5Config

import pipelines.loader as loader
from pipelines import configs
from pipelines.generate import generate
from pipelines.loader import load_pipeline
from pipelines.memory import WAN_VACE_14B, MemoryPlan, ModelSize, Offload
from pipelines.weights_placement import load_device, placement_kwargs, size_from_configs
from tests.pipelines.test_generate import make_request


def plan(offload: Offload) -> MemoryPlan:
    return MemoryPlan(offload, False, "test")


@pytest.mark.parametrize(("offload", "device", "expected"), [
    (Offload.ALL_ON_GPU, "cuda", {"device_map": {"": "cuda"}}),
    (Offload.ALL_ON_GPU, "cuda:1", {"device_map": {"": "cuda:1"}}),
    (Offload.MODEL_OFFLOAD, "cuda", {}),
    (Offload.GROUP_OFFLOAD, "cuda", {}),
    (Offload.SEQUENTIAL_OFFLOAD, "cuda:1", {}),
    (Offload.ALL_ON_GPU, "cpu", {}),
])
def test_placement_argument(offload: Offload, device: str, expected: dict[str, Any]) -> None:
    assert placement_kwargs(plan(offload), device) == expected
    assert load_device(plan(offload), device) == (expected["device_map"][""] if expected else None)


def test_no_plan_loads_as_diffusers_does() -> None:
    assert placement_kwargs(None, "cuda") == {}


def test_sizes_from_configs_equal_the_loaded_model(tiny_model_dir: Path) -> None:
    loaded = load_pipeline(tiny_model_dir, device="cpu")
    assert size_from_configs(tiny_model_dir) == ModelSize.from_pipeline(loaded)


def test_the_14b_configs_give_the_14b_size(tmp_path: Path) -> None:
    """The published 14B configs written as a model folder's config files (no weights): the plan chosen before
    loading sees the same size as memory.py's counted WAN_VACE_14B."""
    configs.build_on_meta("transformer", configs.TRANSFORMER_14B).save_config(tmp_path / "transformer")
    configs.build_on_meta("vae", configs.VAE_WAN21).save_config(tmp_path / "vae")
    UMT5Config(**configs.TEXT_ENCODER_UMT5_XXL).save_pretrained(tmp_path / "text_encoder")
    assert size_from_configs(tmp_path) == WAN_VACE_14B


def test_cpu_path_reads_weights_into_ram_as_before(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    real = AutoencoderKLWan.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: type, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKLWan, "from_pretrained", classmethod(spy))
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    assert calls and all("device_map" not in kwargs for kwargs in calls)
    assert pipe.transformer.device.type == "cpu" and not hasattr(pipe.transformer, "hf_device_map")


def test_a_direct_load_gives_the_same_frames(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader's direct-load branch (the transformer loaded on its own with device_map) run for real with
    the CPU as the target, as a CUDA all_on_gpu plan runs it with the GPU."""
    request = make_request()
    before = generate(load_pipeline(tiny_model_dir, device="cpu"), request)
    monkeypatch.setattr(loader, "placement_kwargs", lambda plan, device: {"device_map": {"": "cpu"}})
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    assert isinstance(pipe.transformer, WanVACETransformer3DModel)
    assert pipe.transformer.hf_device_map == {"": "cpu"} and pipe.vae.hf_device_map == {"": "cpu"}
    np.testing.assert_array_equal(generate(pipe, request), before)


def test_cuda_all_on_gpu_loads_to_the_gpu_with_the_plan_chosen_first(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU here: free memory is faked, and the loads that would go to cuda:0 go to the CPU, recorded. The
    plan is chosen once, from the configs, before any weight is read, and applied as chosen."""
    from tests.pipelines.test_loader import _no_attention_probe

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (79 * 2**30, 80 * 2**30))
    sizes: list[ModelSize] = []
    real_plan = loader.plan_for_device

    def plan_spy(device: str, size: ModelSize, *args: Any, **kwargs: Any) -> MemoryPlan:
        sizes.append(size)
        return real_plan(device, size, *args, **kwargs)

    monkeypatch.setattr(loader, "plan_for_device", plan_spy)
    device_maps: list[tuple[str, object]] = []
    for cls in (AutoencoderKLWan, WanVACETransformer3DModel):
        real = cls.from_pretrained.__func__  # type: ignore[attr-defined]

        def spy(klass: type, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            device_maps.append((klass.__name__, kwargs.get("device_map")))
            if "device_map" in kwargs:
                kwargs["device_map"] = {"": "cpu"}
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    applied: list[MemoryPlan] = []
    monkeypatch.setattr(loader, "apply_plan", lambda pipe, plan, device: applied.append(plan) or pipe)
    _no_attention_probe(monkeypatch)
    pipe = load_pipeline(tiny_model_dir, device="cuda:0")
    on_gpu = {"": "cuda:0"}
    assert device_maps == [("AutoencoderKLWan", on_gpu), ("WanVACETransformer3DModel", on_gpu)]
    assert len(sizes) == 1 and sizes[0] == ModelSize.from_pipeline(pipe)
    assert [p.offload for p in applied] == [Offload.ALL_ON_GPU]
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
