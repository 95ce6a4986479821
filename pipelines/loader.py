"""Find a Wan VACE model folder, pick dtypes for the device, and load the diffusers pipeline."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanVACEPipeline, WanVACETransformer3DModel

from pipelines.attention import apply_attention, parse_attention, select_for_device
from pipelines.compile import compile_blocks, parse_compile, should_compile, use_persistent_cache
from pipelines.download import verify_model_dir
from pipelines.fast_mode import check_fast_lora_file, install_fast_lora, lora_file_params
from pipelines.fp8 import (
    Fp8Choice,
    apply_fp8,
    bytes_per_param,
    check_requested,
    choose,
    parse_fp8,
    unavailable_reason,
)
from pipelines.memory import (
    AUTO,
    MemoryPlan,
    ModelSize,
    apply_plan,
    parse_memory_plan,
    parse_vae_tiling,
    plan_for_device,
    plan_of,
)
from pipelines.tiny import ensure_tiny_pipeline
from pipelines.vae_cache import install_zero_input_cache
from pipelines.weights_placement import meta_pipeline, placement_kwargs

PIPELINE_CLASS = "WanVACEPipeline"
TINY_MODEL = "tiny"
log = logging.getLogger(__name__)
_HINT = "Run `vace download` or pass --model /path/to/Wan2.1-VACE-14B-diffusers"


class ModelNotFoundError(FileNotFoundError):
    """No usable Wan VACE diffusers folder at the given path."""


@dataclass(frozen=True)
class Placement:
    device: str
    transformer_dtype: torch.dtype  # also used for the text encoder
    vae_dtype: torch.dtype


def choose_placement(device: str | None = None) -> Placement:
    """Pick device and dtypes. With an explicit `device` the answer depends on that string only."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        # bf16 for the 14B transformer and umt5-xxl; the Wan VAE decodes noticeably better in float32.
        return Placement(device=device, transformer_dtype=torch.bfloat16, vae_dtype=torch.float32)
    # CPUs have poor bf16 kernels and memory is not the constraint there.
    return Placement(device=device, transformer_dtype=torch.float32, vae_dtype=torch.float32)


def attention_heads(model_dir: Path) -> tuple[int, int]:
    """(heads, head size) of the folder's transformer, read from its config before any weight loads."""
    config = json.loads((model_dir / "transformer" / "config.json").read_text())
    return int(config["num_attention_heads"]), int(config["attention_head_dim"])


def check_model_dir(model_dir: Path) -> Path:
    """Raise ModelNotFoundError unless `model_dir` is a diffusers folder for WanVACEPipeline."""
    model_dir = Path(model_dir).expanduser()
    index = model_dir / "model_index.json"
    if not index.is_file():
        raise ModelNotFoundError(f"No Wan VACE model at {model_dir} (no model_index.json). {_HINT}")
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelNotFoundError(f"Unreadable {index} ({exc}). {_HINT}") from exc
    if class_name != PIPELINE_CLASS:
        raise ModelNotFoundError(f"{model_dir} holds a {class_name!r} model, not {PIPELINE_CLASS}. {_HINT}")
    missing = verify_model_dir(model_dir)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelNotFoundError(f"Incomplete model at {model_dir}: missing {shown}. {_HINT}")
    return model_dir


def resolve_model(model: str, data_dir: Path) -> Path:
    """Map the --model setting to a checked model folder; "tiny" builds the test model on first use."""
    if model == TINY_MODEL:
        return ensure_tiny_pipeline(Path(data_dir) / "models")
    return check_model_dir(Path(model))


def choose_memory_plan(
    placement: Placement, models: torch.nn.Module, memory_plan: str = AUTO, vae_tiling: str = AUTO,
    fp8: str = "off", extra_transformer_params: int = 0,
) -> Fp8Choice:
    """Decide where the weights live during a run (see pipelines/memory.py) together with --fp8, since FP8
    weights change what fits (pipelines/fp8.py). `models` holds the transformer, VAE and text encoder (loaded,
    or on the meta device, which lacks a fast-mode LoRA's `extra_transformer_params`); `memory_plan` and
    `vae_tiling` are the --memory-plan and --vae-tiling values; "auto" sizes the plan from the free memory of
    `placement.device`."""
    size, fp8_bytes_per_param = ModelSize.from_pipeline(models), bytes_per_param(models.transformer)
    size = dataclasses.replace(size, transformer_params=size.transformer_params + extra_transformer_params)

    def plan_with(transformer_bytes_per_param: float) -> MemoryPlan:
        return plan_for_device(placement.device, size, memory_plan, vae_tiling,
                               transformer_bytes_per_param=transformer_bytes_per_param)

    unavailable = unavailable_reason(placement.device) if fp8 != "off" else None
    choice = choose(fp8, unavailable, plan_with, fp8_bytes_per_param)
    log.info("Memory plan on %s: %s", placement.device, choice.plan.reason)
    return choice


def load_pipeline(
    model_dir: Path,
    device: str | None = None,
    memory_plan: str = AUTO,
    vae_tiling: str = AUTO,
    attention: str = AUTO,
    compile: str = AUTO,
    compile_cache_dir: Path | None = None,
    fp8: str = AUTO,
    *,
    fast_lora: Path | None = None,
    fast_lora_strength: float = 1.0,
) -> WanVACEPipeline:
    """Load a WanVACEPipeline from a local folder, with per-component dtypes and a memory plan for the device.

    `memory_plan`: auto|all_on_gpu|model_offload|group_offload|sequential_offload; `vae_tiling`: auto|on|off;
    `attention`: auto|native|cudnn|flash3|sage (pipelines/attention.py); `compile`: auto|on|off
    (pipelines/compile.py), its kernels kept in `compile_cache_dir`; `fp8`: auto|on|off (pipelines/fp8.py);
    `fast_lora`: a distillation LoRA file for fast mode (pipelines/fast_mode.py). Bad values raise ValueError,
    an attention backend that cannot run here AttentionBackendError, `fp8="on"` where FP8 cannot run
    Fp8Error, and a missing LoRA file FastLoraError, before any weights are read.
    """
    parse_memory_plan(memory_plan), parse_vae_tiling(vae_tiling), parse_attention(attention)
    parse_compile(compile), parse_fp8(fp8)
    if fast_lora is not None:
        check_fast_lora_file(fast_lora, fast_lora_strength)
    model_dir = check_model_dir(model_dir)
    placement = choose_placement(device)
    check_requested(fp8, unavailable_reason(placement.device) if fp8 == "on" else None)
    # Before the weights: an unusable --attention fails in seconds, and the timing has the GPU to itself.
    selection = select_for_device(attention, placement.device, placement.transformer_dtype,
                                  *attention_heads(model_dir))
    log.info("Attention backend on %s: %s (%s)", placement.device, selection.backend, selection.reason)
    # On CUDA the plan (and FP8, which changes what fits) is chosen before the weights, from the configs, so
    # that under all_on_gpu the transformer and VAE load straight onto the GPU
    # (pipelines/weights_placement.py); on a CPU after loading, as before.
    choice = None
    if placement.device.startswith("cuda"):
        lora_params = 0 if fast_lora is None else lora_file_params(fast_lora)
        choice = choose_memory_plan(placement, meta_pipeline(model_dir), memory_plan, vae_tiling, fp8,
                                    lora_params)
    # An FP8 transformer loads into RAM and is quantized block by block on the GPU (pipelines/fp8.py): its
    # whole bf16 copy on the card could need more than the FP8 plan leaves.
    fp8_first = choice is not None and choice.enabled
    direct = {} if fp8_first else placement_kwargs(choice.plan if choice else None, placement.device)
    # Loaded on its own so it keeps float32 while the rest of the pipeline follows transformer_dtype.
    vae = AutoencoderKLWan.from_pretrained(
        model_dir, subfolder="vae", dtype=placement.vae_dtype, local_files_only=True, **direct
    )
    components = {"vae": vae}
    if direct:
        components["transformer"] = WanVACETransformer3DModel.from_pretrained(
            model_dir, subfolder="transformer", dtype=placement.transformer_dtype, local_files_only=True,
            **direct,
        )
    pipe = WanVACEPipeline.from_pretrained(
        model_dir, **components, dtype=placement.transformer_dtype, local_files_only=True
    )
    apply_attention(pipe.transformer, selection)
    if fast_lora is not None:  # before offload hooks and compile, which then see its layers from the start
        install_fast_lora(pipe, fast_lora, fast_lora_strength)
    pipe.set_progress_bar_config(disable=True)  # progress is reported through generate()'s on_step
    install_zero_input_cache(pipe.vae)  # depth/pose jobs skip re-encoding their constant all-zero stream
    if choice is None:
        choice = choose_memory_plan(placement, pipe, memory_plan, vae_tiling, fp8)
    # FP8 before the weights are placed; compiling comes after both (pipelines/fp8.py).
    layers = apply_fp8(pipe.transformer, choice, placement.device)
    log.info("FP8 transformer on %s: %s%s", placement.device, choice.summary,
             f"; {layers} block linears quantized" if choice.enabled else "")
    pipe = apply_plan(pipe, choice.plan, placement.device)
    compiled, reason = should_compile(compile, placement.device, plan_of(pipe))
    if compiled:
        cache = use_persistent_cache(compile_cache_dir) if compile_cache_dir is not None else None
        compile_blocks(pipe.transformer)
        reason += f"; kernels cached in {cache}" if cache else ""
    log.info("Regional compile of the transformer blocks: %s (%s)", "on" if compiled else "off", reason)
    return pipe
