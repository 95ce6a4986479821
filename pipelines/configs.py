"""Published configs of the real Wan2.1 VACE components, for sizing without weights.

Values are those of the `Wan-AI/Wan2.1-VACE-14B-diffusers` and `-1.3B-diffusers` config.json files
(`transformer/`, `text_encoder/` and `vae/`). Nothing here loads weights: `build_on_meta` instantiates a
model on the meta device, so its parameters can be counted in seconds and zero bytes. The worker never
reads these (it measures the pipeline it loaded: memory.py's `ModelSize.from_pipeline`); they ship in the
package because the GPU benchmark `vace bench`, an operator command, takes the real 14B config from here.
memory.py's WAN_VACE_14B / WAN_VACE_1_3B sizes were counted from them (tests/pipelines/test_memory.py
recounts them).
"""

from __future__ import annotations

from typing import Any

import torch

TRANSFORMER_14B: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "vace_layers": list(range(0, 40, 5)),  # 0, 5, ..., 35: 8 VACE blocks
    "vace_in_channels": 96,
}

# The 1.3B model differs only in width, depth and which layers get a VACE block.
TRANSFORMER_1_3B: dict[str, Any] = {
    **TRANSFORMER_14B,
    "num_attention_heads": 12,  # x 128 = dim 1536
    "ffn_dim": 8960,
    "num_layers": 30,
    "vace_layers": list(range(0, 30, 2)),  # 0, 2, ..., 28: 15 VACE blocks
}

# umt5-xxl, encoder only (both model sizes share it).
TEXT_ENCODER_UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "tie_word_embeddings": False,
    "is_encoder_decoder": False,
    "use_cache": False,
}

VAE_WAN21: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}


def build_on_meta(component: str, config: dict[str, Any]) -> torch.nn.Module:
    """Instantiate `component` ("transformer", "text_encoder" or "vae") with `config` on the meta device."""
    # Imported here: diffusers and transformers take seconds to import and most callers only need the dicts.
    from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        if component == "transformer":
            return WanVACETransformer3DModel(**config)
        if component == "text_encoder":
            return UMT5EncoderModel(UMT5Config(**config))
        if component == "vae":
            return AutoencoderKLWan(**config)
    raise ValueError(f"unknown component {component!r}: expected transformer, text_encoder or vae")
