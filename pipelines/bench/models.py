"""Random-weight models for the benchmark: the real 14B configs, or toy ones of the same shape for --tiny."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipelines.configs import TRANSFORMER_14B, VAE_WAN21
from pipelines.memory import WAN_VACE_14B, ModelSize, num_tokens

TEXT_TOKENS = 512  # the prompt length the pipeline pads to (pipelines/memory.py's MAX_PROMPT_TOKENS)
TINY_TEXT_TOKENS = 16
# Toy sizes with the 14B structure (main + VACE blocks, qk norm, cross-attention): --tiny on a CPU.
TINY_TRANSFORMER: dict[str, Any] = {
    **TRANSFORMER_14B,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "text_dim": 32,
    "ffn_dim": 64,
    "num_layers": 3,
    "vace_layers": [0, 2],
}
TINY_VAE: dict[str, Any] = {**VAE_WAN21, "base_dim": 8, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}


@dataclass(frozen=True)
class Shape:
    label: str  # "480p" / "720p": the server's resolution names (16:9)
    height: int
    width: int
    frames: int

    @property
    def tokens(self) -> int:
        return num_tokens(self.height * self.width, self.frames)

    def as_dict(self) -> dict[str, int]:
        return {"height": self.height, "width": self.width, "frames": self.frames, "tokens": self.tokens}


FULL_SHAPES = (Shape("480p", 480, 832, 81), Shape("720p", 720, 1280, 81))
TINY_SHAPES = (Shape("480p", 32, 48, 9), Shape("720p", 48, 64, 9))
WARMUP_SHAPE = Shape("warm-up", 32, 32, 5)  # kernel selection and plans before a timed call


@dataclass(frozen=True)
class ModelSet:
    """Which configs and shapes a run uses."""

    tiny: bool
    transformer: dict[str, Any]
    vae: dict[str, Any]
    shapes: tuple[Shape, ...]
    text_tokens: int

    @classmethod
    def choose(cls, tiny: bool) -> ModelSet:
        if tiny:
            return cls(True, TINY_TRANSFORMER, TINY_VAE, TINY_SHAPES, TINY_TEXT_TOKENS)
        return cls(False, TRANSFORMER_14B, VAE_WAN21, FULL_SHAPES, TEXT_TOKENS)

    def shape(self, label: str) -> Shape:
        return next(s for s in self.shapes if s.label == label)


def build_transformer(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random-weight WanVACETransformer3DModel created directly in `dtype` on `device`.

    No fp32 copy is ever made (34.7 GB of bf16 weights instead of 69 GB), and the modules diffusers lists in
    `_keep_in_fp32_modules` are then cast to fp32, as from_pretrained(dtype=bf16) leaves them.
    """
    from diffusers import WanVACETransformer3DModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = WanVACETransformer3DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    keep = set(model._keep_in_fp32_modules or ())
    for name, param in model.named_parameters():  # from_pretrained matches parameter names the same way
        if keep & set(name.split(".")):
            param.data = param.data.float()
    return model.eval().requires_grad_(False)


def transformer_inputs(
    models: ModelSet, shape: Shape, device: torch.device, dtype: torch.dtype, batch: int = 1
) -> dict[str, Any]:
    """One denoising step's inputs: noisy latents, VACE control latents (96 ch), prompt embeddings."""
    generator = torch.Generator(device=device).manual_seed(0)
    latent_frames = (shape.frames - 1) // 4 + 1
    h, w = shape.height // 8, shape.width // 8

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=generator, device=device, dtype=dtype)

    return {
        "hidden_states": randn(batch, models.transformer["in_channels"], latent_frames, h, w),
        "control_hidden_states": randn(batch, models.transformer["vace_in_channels"], latent_frames, h, w),
        "encoder_hidden_states": randn(batch, models.text_tokens, models.transformer["text_dim"]),
        "timestep": torch.full((batch,), 500, device=device, dtype=torch.long),
        "return_dict": False,
    }


def build_vae(config: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The Wan VAE in fp32 (the server's CUDA placement, pipelines/loader.py), random weights."""
    from diffusers import AutoencoderKLWan

    with torch.device(device):
        return AutoencoderKLWan(**config).eval().requires_grad_(False)


def model_size(models: ModelSet, transformer: torch.nn.Module, vae: torch.nn.Module | None) -> ModelSize:
    """The memory estimate's inputs. Full size: the published 14B figures; tiny: counted on the toy model."""
    if not models.tiny:
        return WAN_VACE_14B

    def count(module: torch.nn.Module, recurse: bool = True) -> int:
        return sum(p.numel() for p in module.parameters(recurse=recurse))

    blocks = [*transformer.blocks, *transformer.vace_blocks]
    return ModelSize(
        transformer_params=count(transformer),
        text_encoder_params=0,
        vae_params=count(vae) if vae is not None else 0,
        transformer_block_params=max(count(b) for b in blocks),
        transformer_leaf_params=max(count(m, recurse=False) for m in transformer.modules()),
        dim=models.transformer["num_attention_heads"] * models.transformer["attention_head_dim"],
        ffn_dim=models.transformer["ffn_dim"],
        num_vace_layers=len(models.transformer["vace_layers"]),
        transformer_top_level_params=count(transformer) - sum(count(b) for b in blocks),
    )
