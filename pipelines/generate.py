"""Run one VACE generation on a loaded pipeline: validated inputs in, uint8 frames out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import WanVACEPipeline
from PIL import Image

from pipelines.cfg_truncation import CfgTruncation, configured_fraction, counted_calls
from pipelines.fast_mode import use_for_request
from pipelines.memory import settle_text_encoder
from pipelines.prompt_cache import cached_prompt_embeds
from pipelines.schedulers import SAMPLERS, build_scheduler
from pipelines.step_cache import StepCache
from pipelines.step_policy import policy_for

# Wan's VAE compresses time 4x (so lengths are 4k+1) and space 8x, and the transformer patches 2x2.
TEMPORAL_STRIDE = 4
SPATIAL_MULTIPLE = 16
log = logging.getLogger(__name__)


class GenerationCancelled(Exception):
    """should_cancel() returned True; the run was stopped before decoding."""


@dataclass
class GenerationRequest:
    prompt: str
    negative_prompt: str
    video: np.ndarray  # float32 (F, H, W, 3) in [0, 1]
    mask: np.ndarray  # float32 (F, H, W) in {0, 1}; 1 = generate, 0 = keep
    reference_images: list[np.ndarray]  # uint8 (H, W, 3) each; may be empty
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    sampler: str = "unipc"  # fal's names: unipc, dpm++, euler
    flow_shift: float | None = None  # None: the loaded scheduler's own shift
    acceleration: str = "none"  # fal's none|low|regular: the step cache's policy (pipelines/step_policy.py)

    @property
    def num_frames(self) -> int:
        return len(self.video)

    def validate(self) -> None:
        """Raise ValueError saying what to change; diffusers would otherwise crash or silently pad/rescale."""
        _check_size(self.width, self.height)
        _check_video(self.video, self.width, self.height)
        _check_mask(self.mask, self.video.shape[:3])
        for i, ref in enumerate(self.reference_images):
            if not (
                isinstance(ref, np.ndarray) and ref.dtype == np.uint8 and ref.ndim == 3 and ref.shape[2] == 3
            ):
                raise ValueError(f"reference_images[{i}] must be a uint8 array of shape (H, W, 3)")
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}")
        if not np.isfinite(self.guidance_scale):
            raise ValueError("guidance_scale must be a finite number")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.flow_shift is not None and not (np.isfinite(self.flow_shift) and self.flow_shift > 0):
            raise ValueError(f"flow_shift must be a positive number, got {self.flow_shift}")
        policy_for(self.acceleration)  # raises ValueError naming the choices


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if value <= 0 or value % SPATIAL_MULTIPLE:
            lower = max(SPATIAL_MULTIPLE, value // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE)
            raise ValueError(
                f"{name} must be a positive multiple of {SPATIAL_MULTIPLE}, got {value}; use e.g. {lower} "
                f"or {lower + SPATIAL_MULTIPLE} and resize the video to match"
            )


def _check_video(video: np.ndarray, width: int, height: int) -> None:
    if not isinstance(video, np.ndarray) or video.ndim != 4 or video.shape[3] != 3:
        shape = getattr(video, "shape", None)
        raise ValueError(f"video must be a float array of shape (F, H, W, 3), got shape {shape}")
    if video.dtype != np.float32:
        raise ValueError(f"video must be float32 in [0, 1], got {video.dtype}")
    frames, h, w = video.shape[:3]
    if frames % TEMPORAL_STRIDE != 1:
        below = frames // TEMPORAL_STRIDE * TEMPORAL_STRIDE + 1
        raise ValueError(
            f"video has {frames} frames; the count must be 4k+1: resample or trim it to {below} "
            f"or pad it to {below + TEMPORAL_STRIDE}"
        )
    if (w, h) != (width, height):
        raise ValueError(
            f"video frames are {w}x{h} but width x height is {width}x{height}; resize the video to match"
        )
    # diffusers treats tensors with negative values as already in [-1, 1] and skips normalisation.
    if video.size and not (video.min() >= 0.0 and video.max() <= 1.0):
        raise ValueError("video values must lie in [0, 1] (divide 8-bit frames by 255)")


def _check_mask(mask: np.ndarray, video_fhw: tuple[int, ...]) -> None:
    if not isinstance(mask, np.ndarray) or mask.shape != tuple(video_fhw):
        shape = getattr(mask, "shape", None)
        raise ValueError(f"mask must have shape (F, H, W) = {tuple(video_fhw)} like the video, got {shape}")
    if mask.dtype != np.float32:
        raise ValueError(f"mask must be float32 with values 0 or 1, got {mask.dtype}")
    # The pipeline binarises at 0.5, so a soft mask would silently lose its feathering.
    if not np.isin(mask, (0.0, 1.0)).all():
        raise ValueError(
            "mask values must be exactly 0 (keep) or 1 (generate); threshold soft masks at 0.5 first"
        )


def _video_tensor(video: np.ndarray) -> torch.Tensor:
    # (F, H, W, 3) -> (1, F, 3, H, W) in [0, 1]: the layout preprocess_video takes as a batch of one video.
    # Tensors skip the PIL round trip, so values arrive as exactly 2v - 1 (0.5 -> 0.0, not 128/255 -> 0.004).
    return torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).unsqueeze(0)


def _mask_tensor(mask: np.ndarray) -> torch.Tensor:
    # (F, H, W) -> (1, F, 1, H, W): one channel like a PIL "L" mask.
    # The pipeline maps m -> 2m - 1 -> (x + 1) / 2, which gives back m exactly for 0 and 1.
    return torch.from_numpy(np.ascontiguousarray(mask))[None, :, None]


def _pipeline_reference_order(references: list[np.ndarray]) -> list[Image.Image] | None:
    """The reference images in the order that makes the model see them in the user's order.

    WanVACEPipeline.prepare_video_latents (diffusers 0.42) prepends each reference's latent in its loop, so
    [r1, r2] reaches the transformer as [r2, r1]; VACE itself keeps the given order. Passing them reversed
    undoes that (tests/pipelines/test_generate.py checks the latent order). None for no references: the
    pipeline rejects an empty list.
    """
    return [Image.fromarray(r) for r in reversed(references)] or None


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def generate(
    pipe: WanVACEPipeline,
    req: GenerationRequest,
    *,
    on_step: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_log: Callable[[str], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    on_encode: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    on_latents: Callable[[int, torch.Tensor], None] | None = None,
    latents_every: int = 0,
    cfg_truncation: float | None = None,
    on_forwards: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Generate a video; returns uint8 frames of shape (F, H, W, 3).

    on_step(done, total) runs after each denoising step. If should_cancel() turns true (checked before the
    run and after each step), GenerationCancelled is raised without running the remaining steps or the
    VAE decode. on_log(message) gets the step cache's summary (how many steps were computed).
    on_phase(name) is called as the run enters "text_encode", "vae_encode", "denoise" and "vae_decode";
    on_encode(video, latents) sees each VAE encode (pipelines/preview.py fits its colours from them);
    on_latents(step, latents) gets the current latents every `latents_every` steps and after the last.
    cfg_truncation: the share of last steps without the unconditional pass (pipelines/cfg_truncation.py);
    None takes the worker's setting stored on `pipe`. on_forwards(computed, called) after a finished run:
    the transformer calls that ran its blocks, of all the pipeline made (the step cache reused the others').
    """
    req.validate()
    if should_cancel is not None and should_cancel():
        raise GenerationCancelled("cancelled before start")

    # An installed distillation LoRA is on for this request or off (pipelines/fast_mode.py); in fast mode
    # every one of its few steps is computed.
    fast = use_for_request(pipe, req.num_inference_steps, req.guidance_scale, on_log)
    policy = None if fast else policy_for(req.acceleration)
    cache = None if policy is None else StepCache(pipe.transformer, policy, req.num_inference_steps)
    fraction = configured_fraction(pipe) if cfg_truncation is None else cfg_truncation
    truncation = CfgTruncation(fraction, req.num_inference_steps, req.guidance_scale > 1.0)
    calls = [0]  # the transformer's calls, counted while the pipeline runs

    def step_end(p: WanVACEPipeline, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        if cache is not None:
            cache.end_step()
        if truncation.after_step(p, step) and cache is not None:
            cache.drop_branch(1)  # the unconditional residual: no call will read it again
        if on_step is not None:
            on_step(step + 1, p.num_timesteps)
        done = step + 1
        if on_latents is not None and latents_every > 0 and "latents" in callback_kwargs and (
                done % latents_every == 0 or done == p.num_timesteps):
            on_latents(done, callback_kwargs["latents"])
        if should_cancel is not None and should_cancel():
            p._interrupt = True  # so anything reading pipe.interrupt sees the state
            # Raising (rather than only setting _interrupt) is what skips the VAE decode after the loop.
            raise GenerationCancelled(f"cancelled after step {step + 1} of {p.num_timesteps}")
        return {}

    refs = _pipeline_reference_order(req.reference_images)
    # A CPU generator gives the same initial noise whatever device the model runs on.
    generator = torch.Generator(device="cpu").manual_seed(req.seed)
    loaded = pipe.scheduler
    # This request's own scheduler for the duration of the call; the loaded one is put back afterwards, so
    # one request's sampler/shift never leaks into the next.
    pipe.scheduler = _request_scheduler(loaded, req)
    try:
        # Encoded here rather than inside the call so the memory plan can move the text encoder off the GPU
        # before denoising (all_on_gpu), and a repeated prompt is not encoded again
        # (pipelines/prompt_cache.py); the frames are the same either way.
        if on_phase is not None:
            on_phase("text_encode")
        prompt_embeds, negative_embeds = cached_prompt_embeds(
            pipe, req.prompt, req.negative_prompt, do_classifier_free_guidance=req.guidance_scale > 1.0
        )
        settle_text_encoder(pipe)  # a request that needs its room has it back in RAM, cached prompts or not
        with torch.inference_mode(), cache if cache is not None else nullcontext(), \
                _instrumented(pipe, on_phase, on_encode), \
                counted_calls(pipe.transformer) as calls:
            out = pipe(
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_embeds,
                video=_video_tensor(req.video),
                mask=_mask_tensor(req.mask),
                reference_images=refs,
                height=req.height,
                width=req.width,
                num_frames=req.num_frames,
                num_inference_steps=req.num_inference_steps,
                guidance_scale=req.guidance_scale,
                generator=generator,
                output_type="np",
                callback_on_step_end=step_end,
            )
        if on_forwards is not None:
            reused = 0 if cache is None else cache.stats.forwards_skipped
            on_forwards(calls[0] - reused, calls[0])
    except GenerationCancelled:
        # The exception skipped the pipeline's end-of-call cleanup: reset step caches and offload hooks,
        # so the next job starts from a clean state.
        pipe.maybe_free_model_hooks()
        raise
    finally:
        pipe.scheduler = loaded
        summaries = [] if cache is None else [f"{cache.stats.summary()} (acceleration {req.acceleration})"]
        if truncation.unguided_steps:
            summaries.append(truncation.summary(calls[0]))
        for summary in summaries:
            log.info(summary)
            if on_log is not None:
                on_log(summary)
    return _to_uint8(out.frames[0])


def _request_scheduler(loaded: Any, req: GenerationRequest) -> Any:
    config = loaded.config
    shift = req.flow_shift
    if shift is None:
        # Flow-matching UniPC/DPM++ call it flow_shift, FlowMatchEuler shift.
        shift = config.get("flow_shift") or config.get("shift") or 1.0
    return build_scheduler(config, req.sampler, float(shift))


@contextmanager
def _instrumented(pipe: WanVACEPipeline, on_phase: Callable[[str], None] | None,
                  on_encode: Callable[[torch.Tensor, torch.Tensor], None] | None) -> Iterator[None]:
    """Report the pipeline's phases from inside its call: the first VAE encode starts "vae_encode", the
    transformer's first forward "denoise", the VAE decode "vae_decode". Instance attributes shadow the
    VAE's methods for this call only; a forward pre-hook watches the transformer."""
    if on_phase is None and on_encode is None:
        yield
        return
    vae, transformer = pipe.vae, pipe.transformer
    current: list[str] = []

    def enter(name: str) -> None:
        if current[-1:] != [name]:
            current.append(name)
            if on_phase is not None:
                on_phase(name)

    encode, decode = vae.encode, vae.decode
    shadowed = {name: vae.__dict__[name] for name in ("encode", "decode") if name in vae.__dict__}

    def timed_encode(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        enter("vae_encode")
        out = encode(x, *args, **kwargs)
        if on_encode is not None:
            try:
                dist = out.latent_dist if hasattr(out, "latent_dist") else out[0]
                on_encode(x, dist.mode())
            except Exception:  # a preview's colour fit must never fail a generation
                log.exception("preview fit skipped")
        return out

    def timed_decode(*args: Any, **kwargs: Any) -> Any:
        enter("vae_decode")
        return decode(*args, **kwargs)

    handle = transformer.register_forward_pre_hook(lambda *_: enter("denoise"))
    vae.encode, vae.decode = timed_encode, timed_decode
    try:
        yield
    finally:
        handle.remove()
        for name in ("encode", "decode"):
            if name in shadowed:
                setattr(vae, name, shadowed[name])
            else:
                delattr(vae, name)
