"""The --compile-warmup setting: the compiled transformer runs once per common shape before the worker is
ready.

With regional compile (pipelines/compile.py, `dynamic=False`) each new shape compiles on its first forward:
39.3 s for the first 720p/81f call on one H100 against 13.60 s for the next ones
(benchmarks/results/bench_nvidia-h100-80gb-hbm3_2026-11-26T0637Z.json). Warming up at load moves that cost
from the first user's request to the worker's start, where the persistent kernel cache
(TORCHINDUCTOR_CACHE_DIR under <data-dir>/compile_cache) makes it cheap on a restart: inductor's FX graph
cache serves the kernels and only dynamo's tracing runs again.

The default, `480p,720p`, is fal's two most requested presets at its default length, 16:9 at 81 frames:
832x480 is what `resolution: auto` gives a request whose input says nothing about size
(server/worker/reference_input.py) and 1280x720 what it gives any input of 720p or more. Each costs about one
compile (~26 s at 720p: the 39.3 s first call less one 13.6 s forward) plus one forward, only on workers where
compile is on. Other sizes, lengths, aspect ratios and requests with reference images (each adds a latent
frame) still compile on their first request.

What dynamo guards on is the input of each compiled block: sequence length, dtype, device, grad mode. So the
warm-up calls the transformer exactly as WanVACEPipeline's denoising loop does (pipeline_wan_vace.py in
diffusers 0.42: same keyword arguments, the pipeline's prompt length, the VACE control channels, transformer
dtype, under inference mode as generate() runs it), with zero tensors for the values, which the graphs do not
depend on. One call per shape: the unconditional CFG pass has the same shapes and reuses the graph, and the
step cache (pipelines/step_cache.py) wraps outside the blocks. tests/pipelines/test_compile_warmup.py checks
that a real request of a warmed shape compiles nothing new and one of another shape does.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipelines.memory import MAX_PROMPT_TOKENS
from preprocessors.sizing import RESOLUTION_SIZES

DEFAULT_WARMUP = "480p,720p"
NONE = "none"
DEFAULT_NUM_FRAMES = 81  # fal's num_frames default
_EXPLICIT = re.compile(r"^(\d+)x(\d+)(?:x(\d+))?$")
_SIDE_MULTIPLE = 16  # VAE x8 times the 2x2 patch (pipelines/generate.py checks requests the same way)
_TEMPORAL_STRIDE = 4
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmupShape:
    width: int
    height: int
    num_frames: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}x{self.num_frames}"


def parse_warmup(value: str) -> tuple[WarmupShape, ...]:
    """`none`, or a comma-separated list of presets (`480p`: 16:9 at 81 frames) or `WIDTHxHEIGHT[xFRAMES]`."""
    text = value.strip().lower()
    if text in ("", NONE):
        return ()
    presets = RESOLUTION_SIZES["16:9"]
    shapes: list[WarmupShape] = []
    for item in (part.strip() for part in text.split(",")):
        if item in presets:
            width, height = presets[item]
            shape = WarmupShape(width, height, DEFAULT_NUM_FRAMES)
        elif (match := _EXPLICIT.match(item)) is not None:
            width, height = int(match[1]), int(match[2])
            shape = WarmupShape(width, height, int(match[3] or DEFAULT_NUM_FRAMES))
        else:
            raise ValueError(f"--compile-warmup: {item!r} is not one of none, {', '.join(presets)} or "
                             "WIDTHxHEIGHT[xFRAMES]")
        if shape.width % _SIDE_MULTIPLE or shape.height % _SIDE_MULTIPLE or shape.width <= 0 \
                or shape.height <= 0 or shape.num_frames % _TEMPORAL_STRIDE != 1:
            raise ValueError(f"--compile-warmup: {item!r}: sides must be positive multiples of "
                             f"{_SIDE_MULTIPLE} and the frame count 4k+1")
        if shape not in shapes:
            shapes.append(shape)
    return tuple(shapes)


def is_compiled(transformer: nn.Module) -> bool:
    """Whether compile_blocks() compiled the transformer's blocks (nn.Module.compile sets this attribute)."""
    blocks = [*getattr(transformer, "blocks", ()), *getattr(transformer, "vace_blocks", ())]
    return any(getattr(block, "_compiled_call_impl", None) is not None for block in blocks)


def denoise_inputs(pipe: Any, shape: WarmupShape) -> dict[str, Any]:
    """The keyword arguments WanVACEPipeline's loop passes the transformer for a request of `shape` without
    reference images: latents (in_channels), the conditioning latents (vace_in_channels: video, reactive
    video and the 8x8 mask), prompt embeddings padded to the prompt length, one conditioning scale per VACE
    layer."""
    transformer = pipe.transformer
    config = transformer.config
    device, dtype = pipe._execution_device, transformer.dtype
    latent_frames = (shape.num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    spatial = pipe.vae_scale_factor_spatial
    latent_size = (shape.height // spatial, shape.width // spatial)

    def zeros(*size: int) -> torch.Tensor:
        return torch.zeros(*size, device=device, dtype=dtype)

    return {
        "hidden_states": zeros(1, config.in_channels, latent_frames, *latent_size),
        "timestep": torch.full((1,), 999, device=device, dtype=torch.int64),
        "encoder_hidden_states": zeros(1, MAX_PROMPT_TOKENS, config.text_dim),
        "control_hidden_states": zeros(1, config.vace_in_channels, latent_frames, *latent_size),
        "control_hidden_states_scale": torch.ones(len(config.vace_layers), device=device, dtype=dtype),
        "attention_kwargs": None,
        "return_dict": False,
    }


def warm_up(pipe: Any, shapes: tuple[WarmupShape, ...]) -> dict[str, float]:
    """Run the transformer once per shape if its blocks are compiled; returns the seconds each took (empty
    when compile is off). A shape that fails (e.g. out of memory) is logged and skipped: its first request
    compiles it instead, as without a warm-up."""
    if not shapes or not is_compiled(pipe.transformer):
        return {}
    seconds: dict[str, float] = {}
    for shape in shapes:
        started = time.monotonic()
        try:
            with torch.inference_mode(), pipe.transformer.cache_context("cond"):
                pipe.transformer(**denoise_inputs(pipe, shape))
            if torch.cuda.is_available() and pipe._execution_device.type == "cuda":
                torch.cuda.synchronize(pipe._execution_device)
        except Exception:  # noqa: BLE001 - a warm-up is an optimisation; the worker must still start
            log.exception("Compile warm-up of %s failed; its first request will compile it", shape)
            continue
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the warm-up's activations are not kept from the first request
        seconds[str(shape)] = time.monotonic() - started
        log.info("Compile warm-up %s: %.1f s", shape, seconds[str(shape)])
    return seconds
