"""Choose and apply a GPU memory plan for the Wan VACE pipeline.

The plan is picked from numbers only (free/total GPU bytes, parameter counts, frame size), so it is testable
without a GPU. The estimate for each plan is the peak over the phases of one request, in bytes:

* weights (CUDA placement): transformer and text encoder in bf16 (2 B/param), VAE in fp32 (4 B/param).
  14B: transformer 17.34 B params = 32.3 GiB; umt5-xxl 5.68 B unique params = 10.6 GiB (the often-quoted
  6.73 B counts the token embedding twice: `shared` and `encoder.embed_tokens` are one tied tensor);
  VAE 126.9 M = 0.47 GiB.
* transformer activations per token (tokens = (latent frames + reference images) x H/16 x W/16; 75,600 at
  720p/81 frames): the VACE hints kept for the whole forward (num_vace_layers x dim x 2 B; for 14B at
  720p/81f, 8 x 5120 x 2 B x 75,600 tokens = 5.8 GiB) plus a block's working set: bf16 hidden/control/normed
  states and two fp32 upcasts (12 x dim B) and the FFN intermediate with its GELU output (4 x ffn_dim B),
  times ACTIVATION_MARGIN. 14B at 720p/81f: 15.0 GiB. CFG runs the cond and uncond passes one after the
  other, so it does not double this.
* step cache (acceleration low/regular, pipelines/step_cache.py): one body residual per CFG branch, tokens x
  dim in the transformer's dtype (bf16), held from the first computed step through the VAE decode: 1.4 GiB
  at 720p/81f with CFG.
* VAE: 24 KiB per output pixel untiled (decode; measured 20.6 KiB/px on CPU with the real fp32 architecture,
  independent of frame count because the decoder is causal and frame-chunked; rounded up for cuDNN
  workspaces) plus the decoded fp32 video twice (output and post-processing); tiled, a 256 x 256 tile plus
  the video four times (the overlapping decoded tiles, their blend and the joined output).
* text encoder: 1 GiB of activations for 512 tokens (generous; the real figure is ~0.2 GiB).
* annotators left on the GPU (depth, pose...): their bytes, as the registry measured them when loading.

The margins are set so no estimate is below what the H100 measured (benchmarks/results/
bench_nvidia-h100-80gb-hbm3_2026-11-26T0637Z.json and gpu_check_h100-80gb-hbm3_2026-11-26.json): activations
14.69 GiB measured at 720p/81f (13.99 before the margin), 6.44 at 480p (6.06), 42.3 extrapolated at
720p/241f (40.6); the 14B transformer allocates 32.47 GiB (32.29 counted: 29.5 M parameters stay fp32, plus
buffers); tiled decode at 720p/81f peaks 4.0 GiB over the weights (3.2 before the four copies); group
offload's forward peaks 8.65 GiB at 480p (8.04 with two resident blocks and no group for the modules
outside them). Untiled decode (20.7 GiB measured, 22.8 estimated) needed no change.

Usable memory is the free memory minus a margin of 8% of the card (at least 1 GiB) for allocator
fragmentation. Plans are tried fastest first, each without and then with VAE tiling; all_on_gpu is tried
first with the text encoder resident (no swap per request) when its 10.6 GiB fit beside the peaks.
Per request (request_fit), the worker checks the request's own size against the same arithmetic.
"""

from __future__ import annotations

import dataclasses
import enum
import logging

import torch

log = logging.getLogger(__name__)

GiB = 2**30
BF16_BYTES = 2
FP32_BYTES = 4
SAFETY_FRACTION = 0.08
SAFETY_MIN_BYTES = 1 * GiB
TEXT_ENCODER_ACTIVATION_BYTES = 1 * GiB
VAE_BYTES_PER_PIXEL = 24 * 1024
VAE_TILE_PIXELS = 256 * 256  # diffusers' AutoencoderKLWan default tile_sample_min_height/width
VAE_TILED_VIDEO_COPIES = 4
VAE_UNTILED_VIDEO_COPIES = 2
# Measured on the H100 (module docstring): activations ran 4-6% over the bare arithmetic.
ACTIVATION_MARGIN = 1.07
# The transformer's fp32 parameters (2 B more each) and buffers: 32.47 GiB allocated vs 32.29 counted.
TRANSFORMER_EXTRA_BYTES = GiB // 4
# The plan is chosen once per worker, before any request is seen: size it for the largest frame the server
# serves (720p) at fal's default length. Longer videos at 720p need proportionally more (see choose_plan).
DEFAULT_FRAME_AREA = 1280 * 720
REFERENCE_NUM_FRAMES = 81
MAX_PROMPT_TOKENS = 512  # WanVACEPipeline.__call__'s max_sequence_length default


class Offload(enum.StrEnum):
    """Where weights live while a request runs. Values are the --memory-plan flag values."""

    ALL_ON_GPU = "all_on_gpu"  # transformer + VAE resident; text encoder brought in only to encode prompts
    MODEL_OFFLOAD = "model_offload"  # enable_model_cpu_offload: one whole model on the GPU at a time
    GROUP_OFFLOAD = "group_offload"  # block-level group offloading, CUDA streams prefetch the next block
    SEQUENTIAL_OFFLOAD = "sequential_offload"  # leaf-level group offloading: the smallest footprint


AUTO = "auto"
MEMORY_PLAN_CHOICES: tuple[str, ...] = (AUTO, *(o.value for o in Offload))
VAE_TILING_CHOICES: tuple[str, ...] = (AUTO, "on", "off")


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """What the memory estimate needs to know about a model, in parameters and transformer dimensions."""

    transformer_params: int
    text_encoder_params: int  # unique parameters (tied embeddings once)
    vae_params: int
    transformer_block_params: int  # largest transformer block: the unit block-level offloading moves
    transformer_leaf_params: int  # largest single module's own parameters: the unit leaf-level moves
    dim: int
    ffn_dim: int
    num_vace_layers: int
    transformer_top_level_params: int  # outside the blocks (embeddings, time projection): one offload group

    @classmethod
    def from_pipeline(cls, pipe: torch.nn.Module) -> ModelSize:
        """Measure a loaded WanVACEPipeline (any size), so fine-tunes and the 1.3B model need no constants."""
        tr = pipe.transformer
        blocks = [*tr.blocks, *tr.vace_blocks]
        return cls(
            transformer_params=_count(tr),
            text_encoder_params=_count(pipe.text_encoder),
            vae_params=_count(pipe.vae),
            transformer_block_params=max(_count(b) for b in blocks),
            transformer_leaf_params=max(_count(m, recurse=False) for m in tr.modules()),
            dim=tr.config.num_attention_heads * tr.config.attention_head_dim,
            ffn_dim=tr.config.ffn_dim,
            num_vace_layers=len(tr.config.vace_layers),
            transformer_top_level_params=_count(tr) - sum(_count(b) for b in blocks),
        )


def _count(module: torch.nn.Module, recurse: bool = True) -> int:
    return sum(p.numel() for p in module.parameters(recurse=recurse))


# Counted on the meta device from the published configs (tests/pipelines/test_memory.py checks them).
WAN_VACE_14B = ModelSize(
    transformer_params=17_337_592_896,
    text_encoder_params=5_680_910_336,
    vae_params=126_892_531,
    transformer_block_params=403_833_344,
    transformer_leaf_params=157_317_120,  # condition_embedder.time_proj, 5120 -> 6 x 5120
    dim=5120,
    ffn_dim=13824,
    num_vace_layers=8,
    transformer_top_level_params=234_690_624,  # condition_embedder 232 M, patch embeddings, proj_out
)
WAN_VACE_1_3B = ModelSize(
    transformer_params=2_153_972_032,
    text_encoder_params=5_680_910_336,
    vae_params=126_892_531,
    transformer_block_params=51_162_368,
    transformer_leaf_params=14_164_992,
    dim=1536,
    ffn_dim=8960,
    num_vace_layers=15,
    transformer_top_level_params=26_367_040,
)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    offload: Offload
    vae_tiling: bool
    reason: str = ""  # one line with the figures, for the worker log
    # all_on_gpu only: umt5-xxl stays on the GPU between requests instead of moving in and out for each
    # encode (0.21 s in, 6.5-7.9 s back out on the H100: gpu_check_h100-80gb-hbm3_2026-11-26.json, P7).
    text_encoder_resident: bool = False
    # 2 for bf16 weights; less when the transformer's block linears are FP8 (pipelines/fp8.py).
    transformer_bytes_per_param: float = BF16_BYTES


_PLAN_ATTR = "_vace_memory_plan"


def plan_of(pipe: torch.nn.Module) -> MemoryPlan:
    """The plan apply_plan() applied to `pipe` (everything on its device if none was)."""
    return getattr(pipe, _PLAN_ATTR, None) or MemoryPlan(Offload.ALL_ON_GPU, False, "no plan applied")


def set_plan(pipe: torch.nn.Module, plan: MemoryPlan) -> None:
    """Record `plan` as the one in force (read by plan_of and encode_prompts); moves nothing."""
    setattr(pipe, _PLAN_ATTR, plan)


def num_tokens(frame_area: int, num_frames: int, reference_images: int = 0) -> int:
    """Transformer sequence length: 4x temporal and 8x spatial VAE compression, then 2x2 patches; each
    reference image is one more latent frame (WanVACEPipeline prepends their latents)."""
    latent_frames = (num_frames - 1) // 4 + 1 + reference_images
    return latent_frames * (frame_area // (16 * 16))


def transformer_activation_bytes(size: ModelSize, tokens: int) -> int:
    hints = size.num_vace_layers * size.dim * BF16_BYTES
    working_set = 12 * size.dim + 4 * size.ffn_dim
    return int(tokens * (hints + working_set) * ACTIVATION_MARGIN)


def step_cache_bytes(size: ModelSize, tokens: int, cfg: bool = True) -> int:
    """The step cache's residuals: one per CFG branch, tokens x dim in bf16 (pipelines/step_cache.py)."""
    return (2 if cfg else 1) * tokens * size.dim * BF16_BYTES


def vae_activation_bytes(frame_area: int, num_frames: int, tiled: bool) -> int:
    tiled = tiled and frame_area > VAE_TILE_PIXELS  # a frame within one tile is decoded whole
    pixels = VAE_TILE_PIXELS if tiled else frame_area
    copies = VAE_TILED_VIDEO_COPIES if tiled else VAE_UNTILED_VIDEO_COPIES
    decoded_video = num_frames * 3 * frame_area * FP32_BYTES
    return pixels * VAE_BYTES_PER_PIXEL + copies * decoded_video


@dataclasses.dataclass(frozen=True)
class RequestShape:
    """What one request's memory depends on: its generation size and length, references, and features."""

    frame_area: int = DEFAULT_FRAME_AREA  # width x height generated
    num_frames: int = REFERENCE_NUM_FRAMES  # frames generated (4k+1)
    reference_images: int = 0
    step_cache: bool = True  # acceleration low/regular (fal's default is regular)
    cfg: bool = True  # guidance_scale > 1: two branches, so two cached residuals


def phase_peaks(
    offload: Offload,
    vae_tiling: bool,
    size: ModelSize,
    frame_area: int,
    num_frames: int,
    *,
    reference_images: int = 0,
    step_cache: bool = False,
    cfg: bool = True,
    text_encoder_resident: bool = False,
    annotator_bytes: int = 0,
    transformer_bytes_per_param: float = BF16_BYTES,
) -> dict[str, int]:
    """Estimated GPU bytes in each phase of a request (prompt encoding, VAE, denoising) under a plan.

    `annotator_bytes`: annotators left on the GPU through generation. The step cache's residuals live from
    the first denoising step through the VAE decode, so they count in both of those phases.
    `transformer_bytes_per_param`: 2 for bf16; less with FP8 block weights (pipelines/fp8.py says how much).
    """
    dit = int(size.transformer_params * transformer_bytes_per_param) + TRANSFORMER_EXTRA_BYTES
    te = size.text_encoder_params * BF16_BYTES
    vae = size.vae_params * FP32_BYTES
    tokens = num_tokens(frame_area, num_frames, reference_images)
    act = transformer_activation_bytes(size, tokens)
    cache = step_cache_bytes(size, tokens, cfg) if step_cache else 0
    vae_act = vae_activation_bytes(frame_area, num_frames, vae_tiling) + cache
    te_act = TEXT_ENCODER_ACTIVATION_BYTES
    held = annotator_bytes
    if offload is Offload.ALL_ON_GPU:
        resident = dit + vae + held + (te if text_encoder_resident else 0)
        return {"encode": dit + vae + held + te + te_act, "vae": resident + vae_act,
                "denoise": resident + act + cache}
    if offload is Offload.MODEL_OFFLOAD:
        # The text encoder's hook only offloads it when the transformer starts, so it is still resident while
        # the VAE encodes the control video; the transformer is offloaded when the VAE decodes.
        return {"encode": held + te + te_act, "vae": held + te + vae + vae_act,
                "denoise": held + dit + vae + act + cache}
    # Group offloading: the VAE stays on the GPU (excluded: it is small, and diffusers warns against streams
    # with tiling). The text encoder has no ModuleList at its top level, so block-level offloading moves it as
    # one group; leaf-level moves one module at a time. Resident: the running unit, the one being prefetched
    # on the side stream, and at block level the group of the modules outside the blocks, onloaded for the
    # whole forward (0.44 GiB for 14B; without it the estimate was 7% under the H100's measurement).
    if offload is Offload.GROUP_OFFLOAD:
        block = int(size.transformer_block_params * transformer_bytes_per_param)
        units, te_peak = 2 * block + size.transformer_top_level_params * BF16_BYTES, te + te_act
    else:  # the largest leaf may be one FP8 leaves in bf16 (the 14B's, time_proj, is): counted at 2 B
        units, te_peak = 3 * size.transformer_leaf_params * BF16_BYTES, te_act
    return {"encode": held + vae + te_peak, "vae": held + vae + vae_act,
            "denoise": held + vae + units + act + cache}


def request_peak(size: ModelSize, plan: MemoryPlan, shape: RequestShape, *, annotator_bytes: int = 0) -> int:
    """The estimated GPU peak of one request under `plan` as it stands (tiling, text encoder residency)."""
    return max(phase_peaks(
        plan.offload, plan.vae_tiling, size, shape.frame_area, shape.num_frames,
        reference_images=shape.reference_images, step_cache=shape.step_cache, cfg=shape.cfg,
        text_encoder_resident=plan.offload is Offload.ALL_ON_GPU and plan.text_encoder_resident,
        annotator_bytes=annotator_bytes, transformer_bytes_per_param=plan.transformer_bytes_per_param,
    ).values())


def usable_bytes(free_bytes: int, total_bytes: int) -> int:
    return free_bytes - max(SAFETY_MIN_BYTES, int(SAFETY_FRACTION * total_bytes))


def choose_plan(
    free_bytes: int,
    total_bytes: int,
    model_params: ModelSize,
    frame_area: int | None = None,
    *,
    num_frames: int = REFERENCE_NUM_FRAMES,
    offload: Offload | None = None,
    transformer_bytes_per_param: float = BF16_BYTES,
) -> MemoryPlan:
    """The fastest plan whose estimated peak fits, preferring no VAE tiling within a plan.

    `frame_area` (width x height) defaults to 720p, the largest size served; the request is fal's default
    (step cache on, CFG, no reference images). `offload` fixes the strategy (a --memory-plan override) and
    leaves only the tiling and the text encoder's residency to choose. If nothing fits, the smallest plan is
    returned with a reason saying so: it may still run, since the estimate is deliberately generous.
    """
    shape = RequestShape(DEFAULT_FRAME_AREA if frame_area is None else frame_area, num_frames)
    usable = usable_bytes(free_bytes, total_bytes)
    candidates = [offload] if offload is not None else list(Offload)
    last = MemoryPlan(candidates[-1], True, transformer_bytes_per_param=transformer_bytes_per_param)
    for candidate in candidates:
        # all_on_gpu with the text encoder resident first: it saves a 7 s swap per request.
        residency = (True, False) if candidate is Offload.ALL_ON_GPU else (False,)
        for tiling in (False, True):
            for resident in residency:
                plan = MemoryPlan(candidate, tiling, text_encoder_resident=resident,
                                  transformer_bytes_per_param=transformer_bytes_per_param)
                need = request_peak(model_params, plan, shape)
                if need <= usable:
                    return dataclasses.replace(plan, reason=_reason(plan, need, usable, shape))
    need = request_peak(model_params, last, shape)
    reason = _reason(last, need, usable, shape) + " (does not fit the estimate: may run OOM)"
    return dataclasses.replace(last, reason=reason)


def _reason(plan: MemoryPlan, need: int, usable: int, shape: RequestShape) -> str:
    text = "" if plan.offload is not Offload.ALL_ON_GPU else (
        "; text encoder resident on the GPU" if plan.text_encoder_resident
        else "; text encoder kept in RAM, moved in for each encode")
    return (
        f"{plan.offload.value}, VAE tiling {'on' if plan.vae_tiling else 'off'}: estimated peak "
        f"{need / GiB:.1f} GiB of {usable / GiB:.1f} GiB usable for {shape.frame_area} px x "
        f"{shape.num_frames} frames{text}"
    )


def parse_memory_plan(value: str) -> Offload | None:
    """--memory-plan value -> a fixed strategy, or None for auto."""
    if value not in MEMORY_PLAN_CHOICES:
        raise ValueError(f"--memory-plan must be one of {', '.join(MEMORY_PLAN_CHOICES)}; got {value!r}")
    return None if value == AUTO else Offload(value)


def parse_vae_tiling(value: str) -> bool | None:
    """--vae-tiling value -> forced on/off, or None for auto."""
    if value not in VAE_TILING_CHOICES:
        raise ValueError(f"--vae-tiling must be one of {', '.join(VAE_TILING_CHOICES)}; got {value!r}")
    return None if value == AUTO else value == "on"


def plan_for_device(
    device: str,
    model_params: ModelSize,
    memory_plan: str = AUTO,
    vae_tiling: str = AUTO,
    frame_area: int | None = None,
    transformer_bytes_per_param: float = BF16_BYTES,
) -> MemoryPlan:
    """Resolve the flags into a plan for `device`, measuring free memory on CUDA."""
    offload, tiling = parse_memory_plan(memory_plan), parse_vae_tiling(vae_tiling)
    if torch.device(device).type != "cuda":
        # No GPU budget to plan for: everything lives in RAM. Tiling only if asked for (it saves RAM too).
        if offload is not None:
            log.warning("--memory-plan %s ignored on %s: everything stays in RAM", offload.value, device)
        return MemoryPlan(Offload.ALL_ON_GPU, bool(tiling), "everything in RAM (no GPU memory to plan)")
    free, total = torch.cuda.mem_get_info(torch.device(device))
    plan = choose_plan(free, total, model_params, frame_area, offload=offload,
                       transformer_bytes_per_param=transformer_bytes_per_param)
    if tiling is not None and tiling != plan.vae_tiling:
        forced = f"{plan.reason}; VAE tiling forced {'on' if tiling else 'off'}"
        plan = dataclasses.replace(plan, vae_tiling=tiling, reason=forced)
    return plan


def apply_plan(pipe: torch.nn.Module, plan: MemoryPlan, device: str) -> torch.nn.Module:
    """Place the pipeline's weights as `plan` says, with diffusers' own offloading calls. Returns `pipe`."""
    target = torch.device(device)
    set_plan(pipe, plan)  # read back by encode_prompts(plan=None) and plan_of()
    if plan.vae_tiling:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()
    if target.type != "cuda":
        return pipe.to(device)
    if plan.offload is Offload.ALL_ON_GPU:
        # Unless resident, the text encoder waits in RAM; encode_prompts() brings it in for each request and
        # sends it back.
        pipe.transformer.to(target)
        pipe.vae.to(target)
        pipe.text_encoder.to(target if plan.text_encoder_resident else "cpu")
    elif plan.offload is Offload.MODEL_OFFLOAD:
        pipe.enable_model_cpu_offload(device=target)
    else:
        level = "block_level" if plan.offload is Offload.GROUP_OFFLOAD else "leaf_level"
        pipe.enable_group_offload(
            onload_device=target,
            offload_device=torch.device("cpu"),
            offload_type=level,
            num_blocks_per_group=1 if level == "block_level" else None,
            use_stream=True,  # prefetch the next group while this one computes; CUDA only, checked above
            # Copies that do not block the host, with the streams' memory kept alive by record_stream rather
            # than a sync. Not a measured gain: on one H100 a 4-block 480p forward took 0.847 s with them
            # against 0.857 s without (P8 in benchmarks/results/gpu_check_h100-80gb-hbm3_2026-11-26.json).
            non_blocking=True,
            record_stream=True,
            exclude_modules=["vae"],  # 0.5 GiB; kept on the GPU, which also moves it there
        )
    return pipe


def encode_prompts(
    pipe: torch.nn.Module,
    prompt: str,
    negative_prompt: str,
    plan: MemoryPlan | None = None,
    *,
    do_classifier_free_guidance: bool = True,
    max_sequence_length: int = MAX_PROMPT_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode both prompts, honouring the plan; pass the results as prompt_embeds/negative_prompt_embeds.

    Under all_on_gpu the text encoder is moved to the GPU for the encode and, unless the plan keeps it
    resident, back to RAM right after (even on error), so its 10.6 GiB are free for the denoising
    activations. Under the offload plans diffusers' hooks move it. Call the pipeline with prompt=None and
    negative_prompt=None alongside the embeddings. `plan=None` uses the plan in force on `pipe`.
    """
    plan = plan or plan_of(pipe)
    device = pipe._execution_device
    swap = plan.offload is Offload.ALL_ON_GPU and device.type != "cpu" and not plan.text_encoder_resident
    if swap:
        pipe.text_encoder.to(device)  # a no-op when a request's plan evicts it after this encode
    try:
        with torch.inference_mode():
            return pipe.encode_prompt(
                prompt=prompt,
                negative_prompt=negative_prompt,
                do_classifier_free_guidance=do_classifier_free_guidance,
                max_sequence_length=max_sequence_length,
                device=device,
            )
    finally:
        if swap:
            pipe.text_encoder.to("cpu")


def settle_text_encoder(pipe: torch.nn.Module) -> None:
    """Send the text encoder to RAM if the plan in force says it is not resident but it is on the GPU.

    A request whose plan evicts it (pipelines/request_memory.py) may find its prompts cached, so no encode
    moved it: this runs after the prompts and before any VAE or denoising work (pipelines/generate.py).
    """
    plan = plan_of(pipe)
    if plan.offload is not Offload.ALL_ON_GPU or plan.text_encoder_resident:
        return
    encoder = getattr(pipe, "text_encoder", None)
    if encoder is not None and any(p.device.type == "cuda" for p in encoder.parameters()):
        encoder.to("cpu")
