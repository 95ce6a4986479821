"""Weights straight to the GPU: under all_on_gpu the transformer and VAE are read onto the device they run on.

Without this, from_pretrained materialises every weight in RAM (32.3 GiB for the 14B transformer in bf16) and
apply_plan() then copies it to the GPU. With diffusers' `device_map={"": device}` (ModelMixin.from_pretrained,
diffusers 0.42) each parameter is set on the GPU as its memory-mapped safetensors shard is read, so RAM never
holds a copy of the model; on a single device accelerate's dispatch_model only moves the model there and adds
no hooks.

Loading to the GPU first means the memory plan is chosen before any weight is read, so the model's size comes
from its configs: the three models are built on the meta device (no memory, no weights), which gives the same
parameter counts as the loaded ones (tests/pipelines/test_weights_placement.py). On a CPU, and under the
offload plans (whose weights wait in RAM), loading is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from pipelines.memory import MemoryPlan, ModelSize, Offload


class _MetaPipeline(torch.nn.Module):
    """The three models ModelSize.from_pipeline reads, without weights."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__()
        with torch.device("meta"):  # as pipelines/configs.py's build_on_meta
            config = WanVACETransformer3DModel.load_config(model_dir / "transformer")
            self.transformer = WanVACETransformer3DModel.from_config(config)
            self.vae = AutoencoderKLWan.from_config(AutoencoderKLWan.load_config(model_dir / "vae"))
            # The shared embedding and the encoder's embed_tokens are one tensor, as in the loaded model.
            self.text_encoder = UMT5EncoderModel(UMT5Config.from_pretrained(model_dir / "text_encoder"))


def meta_pipeline(model_dir: Path) -> torch.nn.Module:
    """The pipeline's transformer, VAE and text encoder on the meta device, built from the folder's configs:
    what the memory plan and FP8's bytes per parameter are counted from before any weight is read."""
    return _MetaPipeline(Path(model_dir))


def size_from_configs(model_dir: Path) -> ModelSize:
    """The model's ModelSize, read from its folder's configs without loading a weight."""
    return ModelSize.from_pipeline(meta_pipeline(model_dir))


def load_device(plan: MemoryPlan | None, device: str) -> str | None:
    """Where from_pretrained should put the transformer and VAE: the CUDA device under all_on_gpu, else None
    (RAM, as diffusers loads by default)."""
    if plan is None or torch.device(device).type != "cuda" or plan.offload is not Offload.ALL_ON_GPU:
        return None
    return device


def placement_kwargs(plan: MemoryPlan | None, device: str) -> dict[str, Any]:
    """Keyword arguments for ModelMixin.from_pretrained: `device_map` for a direct GPU load, else none."""
    target = load_device(plan, device)
    return {} if target is None else {"device_map": {"": target}}
