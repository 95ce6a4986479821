"""A tiny, randomly initialised Wan VACE pipeline for tests and offline demos.

Everything is built in code (no hub access), with a fixed seed per component so two builds are identical.
The shapes follow diffusers' own VACE tests, except `rope_max_seq_len=1024` (the real value): the test
value 32 breaks at frame widths above 512 px, and the server must accept 832-px frames even with this model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanVACEPipeline,
    WanVACETransformer3DModel,
)
from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

TINY_DIRNAME = "tiny"
_SEED = 0
# torch's global RNG is shared by threads: two builds interleaving their seeded draws would both be wrong.
_BUILD_LOCK = threading.Lock()


def make_tiny_pipeline() -> WanVACEPipeline:
    """Build the tiny pipeline in memory (float32, CPU). Leaves the caller's global RNG state untouched."""
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        return _make_components()


def _make_components() -> WanVACEPipeline:
    # Byte-level tokenizer: needs no vocabulary files, so it works with the hub switched off.
    tokenizer = ByT5Tokenizer()

    torch.manual_seed(_SEED)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=32,  # must equal the transformer's text_dim
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            use_cache=False,
        )
    ).eval()  # dropout off, otherwise outputs are not reproducible

    torch.manual_seed(_SEED)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )

    torch.manual_seed(_SEED)
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=3,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
        vace_layers=[0, 2],
        vace_in_channels=96,
    )

    # Same scheduler family and flow settings as the real Wan2.1-VACE-14B-diffusers repo.
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=3.0,
    )
    return WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
    )


def build_tiny_pipeline(dest: Path) -> Path:
    """Save a fresh tiny pipeline at `dest` (diffusers folder layout) and return `dest`.

    The model is written into a temporary sibling folder and renamed into place, so `dest` either holds a
    complete model or does not exist. Raises OSError if `dest` already exists and is not empty.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        make_tiny_pipeline().save_pretrained(tmp, safe_serialization=True)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the final folder should look like any other
        # Same filesystem, so the rename is atomic; it fails if another process already put a model there.
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def ensure_tiny_pipeline(cache_dir: Path) -> Path:
    """Return `<cache_dir>/tiny`, building it first if needed. Safe when several processes race."""
    dest = Path(cache_dir) / TINY_DIRNAME
    marker = dest / "model_index.json"
    if marker.is_file():
        return dest
    try:
        return build_tiny_pipeline(dest)
    except OSError:
        # Rename-wins: if a concurrent builder got there first, its (complete) model is as good as ours.
        if marker.is_file():
            return dest
        raise
