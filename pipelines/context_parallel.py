"""One generation across the ranks of a group: diffusers' context parallelism (Ulysses) for Wan VACE.

diffusers 0.42.1 ships a context-parallel plan for WanTransformer3DModel but none for
WanVACETransformer3DModel, whose forward also runs VACE blocks on the control tokens
(diffusers/models/transformers/transformer_wan_vace.py). The plan below splits every token sequence at the
first block that reads it and gathers once at the end:

- `rope`: its cos/sin outputs, (1, tokens, 1, dim) each, so every block's rotary embedding matches its tokens;
- `vace_blocks.0`: the latent tokens and the (zero-padded) control tokens it adds together; later VACE blocks
  only see its split output, and the hints they return are already split like the latents;
- `blocks.0`: the latent tokens; the hints are added to them between blocks, both split alike;
- `proj_out`: its output is gathered, so every rank holds the whole prediction and steps the scheduler alike.

Text tokens are not split: self-attention runs Ulysses (all-to-all from a token split to a head split) and
cross-attention attends from a rank's own tokens to all text tokens (diffusers' Wan processor passes no
parallel config for it). Ulysses needs the token count and the head count to divide by the group size;
`split_refusal` says when they do not, and such a request runs on one rank with the plan switched off
(`serial`). On 2 gloo CPU ranks the tiny model's transformer output and frames equal a single-process
run's exactly (tests/pipelines/test_context_parallel.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import WanVACEPipeline
from diffusers.hooks.context_parallel import (
    EquipartitionSharder,
    apply_context_parallel,
    remove_context_parallel,
)
from diffusers.models._modeling_parallel import (
    ContextParallelConfig,
    ContextParallelInput,
    ContextParallelOutput,
)
from torch import nn

log = logging.getLogger(__name__)

_TOKENS = 1  # the sequence dimension of (batch, tokens, channels) and of rope's (1, tokens, 1, dim)
WAN_VACE_CP_PLAN: dict[str, Any] = {
    "rope": {
        0: ContextParallelInput(split_dim=_TOKENS, expected_dims=4, split_output=True),
        1: ContextParallelInput(split_dim=_TOKENS, expected_dims=4, split_output=True),
    },
    "vace_blocks.0": {
        "hidden_states": ContextParallelInput(split_dim=_TOKENS, expected_dims=3),
        "control_hidden_states": ContextParallelInput(split_dim=_TOKENS, expected_dims=3),
    },
    "blocks.0": {
        "hidden_states": ContextParallelInput(split_dim=_TOKENS, expected_dims=3),
    },
    "proj_out": ContextParallelOutput(gather_dim=_TOKENS, expected_dims=3),
}
# The diffusers attention backends (AttentionBackendName values) that implement context parallelism, among
# those pipelines/attention.py can select; FlashAttention-3 (`_flash_3`) is not one of them in 0.42.1.
CP_BACKENDS = frozenset({"native", "_native_cudnn", "sage"})
CP_FALLBACK_BACKEND = "native"
# Wan's VAE: 4x in time (plus the first frame), 8x in space.
_VAE_TIME, _VAE_SPACE = 4, 8
_STATE = "_vace_context_parallel"


@dataclass
class _State:
    config: Any  # diffusers' ParallelConfig, as enable_parallelism recorded it
    world_size: int
    active: bool = True


def latent_tokens(num_frames: int, height: int, width: int, num_references: int,
                  patch_size: tuple[int, int, int]) -> int:
    """The transformer's sequence length for a request: the reference images are extra latent frames
    (diffusers' WanVACEPipeline prepends them), then the patch embedding divides each axis."""
    frames = (num_frames - 1) // _VAE_TIME + 1 + num_references
    p_t, p_h, p_w = patch_size
    return (frames // p_t) * (height // _VAE_SPACE // p_h) * (width // _VAE_SPACE // p_w)


def split_refusal(tokens: int, heads: int, world_size: int) -> str | None:
    """Why a sequence of `tokens` over `heads` attention heads cannot be split over `world_size` ranks with
    Ulysses (each rank takes tokens / N of the sequence, then heads / N of the heads); None when it can."""
    reasons = []
    if tokens % world_size:
        reasons.append(f"{tokens} tokens")
    if heads % world_size:
        reasons.append(f"{heads} attention heads")
    if not reasons:
        return None
    return f"{' and '.join(reasons)} do not divide by the group's {world_size} ranks"


def request_refusal(pipe: WanVACEPipeline, num_frames: int, height: int, width: int,
                    num_references: int) -> str | None:
    """split_refusal for a request on this pipeline; None also when parallelism is not enabled."""
    state = _state(pipe.transformer)
    if state is None:
        return "context parallelism is not enabled"
    config = pipe.transformer.config
    tokens = latent_tokens(num_frames, height, width, num_references, tuple(config.patch_size))
    return split_refusal(tokens, int(config.num_attention_heads), state.world_size)


def enable_context_parallel(pipe: WanVACEPipeline, world_size: int) -> None:
    """Split the transformer's sequence over the `world_size` ranks of the initialised default process group
    (Ulysses degree = world size). Every rank calls it, after loading and placing the model.

    An attention backend without context parallelism (FlashAttention-3) is replaced by `native` first.
    """
    transformer = pipe.transformer
    backend = _attention_backend(transformer)
    if backend not in CP_BACKENDS:
        log.warning("Attention backend %s has no context parallelism in diffusers; using %s", backend,
                    CP_FALLBACK_BACKEND)
        transformer.set_attention_backend(CP_FALLBACK_BACKEND)
    with _accelerator_count_at_least_one():
        transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size),
                                       cp_plan=WAN_VACE_CP_PLAN)
    setattr(transformer, _STATE, _State(transformer._parallel_config, world_size))
    heads = int(transformer.config.num_attention_heads)
    if heads % world_size:
        log.warning("The model's %d attention heads do not divide by %d ranks: every job will run on one GPU",
                    heads, world_size)


def is_parallel(transformer: nn.Module) -> bool:
    state = _state(transformer)
    return state is not None and state.active


@contextmanager
def serial(transformer: nn.Module) -> Iterator[None]:
    """The plan switched off for a run on this rank alone (a request that does not split): the hooks are
    removed and the attention processors forget the group, then both are put back."""
    state = _state(transformer)
    if state is None or not state.active:
        yield
        return
    processors = _parallel_processors(transformer)
    remove_context_parallel(transformer, WAN_VACE_CP_PLAN)
    for processor in processors:
        processor._parallel_config = None
    state.active = False
    try:
        yield
    finally:
        state.active = True
        for processor in processors:
            processor._parallel_config = state.config
        apply_context_parallel(transformer, state.config.context_parallel_config, WAN_VACE_CP_PLAN)


def token_shard(transformer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """This rank's part of a full (batch, tokens, channels) tensor, as the plan splits it; the identity when
    the transformer runs whole. The step cache uses it to line its residuals up with the split body."""
    state = _state(transformer)
    if state is None or not state.active:
        return _identity
    mesh = state.config.context_parallel_config._flattened_mesh

    def shard(x: torch.Tensor) -> torch.Tensor:
        return EquipartitionSharder.shard(x, _TOKENS, mesh)

    return shard


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _state(transformer: nn.Module) -> _State | None:
    state = getattr(transformer, _STATE, None)
    return state if isinstance(state, _State) else None


def _parallel_processors(transformer: nn.Module) -> list[Any]:
    found = []
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and getattr(processor, "_parallel_config", None) is not None:
            found.append(processor)
    return found


def _attention_backend(transformer: nn.Module) -> str:
    """The backend the processors dispatch to; diffusers' own default (native) when none was set."""
    for module in transformer.modules():
        backend = getattr(getattr(module, "processor", None), "_attention_backend", None)
        if backend is not None:
            return str(getattr(backend, "value", backend))
    return CP_FALLBACK_BACKEND


@contextmanager
def _accelerator_count_at_least_one() -> Iterator[None]:
    """diffusers 0.42.1 picks the rank's device as `rank % torch.accelerator.device_count()`
    (ModelMixin._resolve_parallel_config), a division by zero on a CPU-only host, where the group runs
    over gloo. With a count of 1 the device is `cpu:0`; on CUDA hosts the count is left as it is."""
    count = torch.accelerator.device_count
    if count() > 0:
        yield
        return
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = count
