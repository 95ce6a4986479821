"""Random LoRA files in the public Wan 14B step-distillation LoRAs' own (non-diffusers) format.

Those files (e.g. the 4-step distillation LoRAs for Wan2.1 14B) key each main block's linear layers by the
original Wan module names, `diffusion_model.blocks.N.{self_attn,cross_attn}.{q,k,v,o}` and
`diffusion_model.blocks.N.ffn.{0,2}`, each with `lora_down.weight` (rank x in), `lora_up.weight` (out x
rank) and a scalar `alpha`; diffusers' `_convert_non_diffusers_wan_lora_to_diffusers` maps them to
`blocks.N.attn1.to_q`, ..., `blocks.N.ffn.net.0.proj`, `blocks.N.ffn.net.2`. Shapes are read from the model
the file is made for, so the same writer serves the tiny model and a model of any size.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

# Original Wan module name -> diffusers' name inside a block.
_ATTENTION = dict(zip("qkvo", ["to_q", "to_k", "to_v", "to_out.0"], strict=True))
WAN_TO_DIFFUSERS = {
    **{f"self_attn.{o}": f"attn1.{c}" for o, c in _ATTENTION.items()},
    **{f"cross_attn.{o}": f"attn2.{c}" for o, c in _ATTENTION.items()},
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}


def wan_lora_tensors(transformer: nn.Module, rank: int = 4, alpha: float = 2.0, seed: int = 0,
                     num_blocks: int | None = None, scale: float = 1.0,
                     extras: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a random LoRA over every main block (or `num_blocks` of them, counted on past the
    model's own to make a file for a bigger model). `extras` adds what some of the public files carry as
    well: a `diff_b` bias delta per layer and `diff` deltas of the q/k norms (which diffusers drops)."""
    generator = torch.Generator().manual_seed(seed)
    blocks = list(transformer.blocks)  # type: ignore[union-attr]
    tensors: dict[str, torch.Tensor] = {}
    for i in range(len(blocks) if num_blocks is None else num_blocks):
        block = blocks[min(i, len(blocks) - 1)]
        for wan_name, ours in WAN_TO_DIFFUSERS.items():
            linear = block.get_submodule(ours)
            key = f"diffusion_model.blocks.{i}.{wan_name}"
            down = torch.randn(rank, linear.in_features, generator=generator)
            up = torch.randn(linear.out_features, rank, generator=generator)
            tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down * scale, up * scale
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
            if extras:
                tensors[f"{key}.diff_b"] = torch.randn(linear.out_features, generator=generator) * scale
        if extras:
            for norm in ("norm_q", "norm_k"):
                width = block.get_submodule(f"attn1.{norm}").weight.shape[0]
                tensors[f"diffusion_model.blocks.{i}.self_attn.{norm}.diff"] = torch.zeros(width)
    return tensors


def write_wan_lora(path: Path, transformer: nn.Module, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(wan_lora_tensors(transformer, **options), str(path))  # type: ignore[arg-type]
    return path
