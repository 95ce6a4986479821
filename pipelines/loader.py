"""Find a Wan VACE model folder, pick dtypes for the device, and load the diffusers pipeline."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanVACEPipeline, WanVACETransformer3DModel

from pipelines.attention import apply_attention, parse_attention, select_for_device
from pipelines.compile import compile_blocks, parse_compile, should_compile, use_persistent_cache
from pipelines.download import verify_model_dir
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
from pipelines.weights_placement import placement_kwargs, size_from_configs

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


def apply_memory_plan(
    pipe: WanVACEPipeline, placement: Placement, memory_plan: str = AUTO, vae_tiling: str = AUTO,
    plan: MemoryPlan | None = None,
) -> WanVACEPipeline:
    """Decide where the weights live during a run (see pipelines/memory.py) and put them there.

    `memory_plan` and `vae_tiling` are the --memory-plan and --vae-tiling values; "auto" sizes the plan from
    the free memory of `placement.device` and the loaded model's own parameter counts. A `plan` chosen before
    the weights were read (loaded straight to the GPU: pipelines/weights_placement.py) is applied as it is.
    """
    if plan is None:
        size = ModelSize.from_pipeline(pipe)
        plan = plan_for_device(placement.device, size, memory_plan, vae_tiling)
    log.info("Memory plan on %s: %s", placement.device, plan.reason)
    return apply_plan(pipe, plan, placement.device)


def load_pipeline(
    model_dir: Path,
    device: str | None = None,
    memory_plan: str = AUTO,
    vae_tiling: str = AUTO,
    attention: str = AUTO,
    compile: str = AUTO,
    compile_cache_dir: Path | None = None,
) -> WanVACEPipeline:
    """Load a WanVACEPipeline from a local folder, with per-component dtypes and a memory plan for the device.

    `memory_plan`: auto|all_on_gpu|model_offload|group_offload|sequential_offload; `vae_tiling`: auto|on|off;
    `attention`: auto|native|cudnn|flash3|sage (pipelines/attention.py); `compile`: auto|on|off
    (pipelines/compile.py), its kernels kept in `compile_cache_dir`. Bad values raise ValueError, and an
    attention backend that cannot run here AttentionBackendError, before any weights are read.
    """
    parse_memory_plan(memory_plan), parse_vae_tiling(vae_tiling), parse_attention(attention)
    parse_compile(compile)
    model_dir = check_model_dir(model_dir)
    placement = choose_placement(device)
    # Before the weights: an unusable --attention fails in seconds, and the timing has the GPU to itself.
    selection = select_for_device(attention, placement.device, placement.transformer_dtype,
                                  *attention_heads(model_dir))
    log.info("Attention backend on %s: %s (%s)", placement.device, selection.backend, selection.reason)
    # On CUDA the plan is chosen before the weights, from the configs, so that under all_on_gpu the
    # transformer and VAE load straight onto the GPU (pipelines/weights_placement.py); on a CPU as before.
    plan = None
    if placement.device.startswith("cuda"):
        plan = plan_for_device(placement.device, size_from_configs(model_dir), memory_plan, vae_tiling)
    direct = placement_kwargs(plan, placement.device)
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
    pipe.set_progress_bar_config(disable=True)  # progress is reported through generate()'s on_step
    install_zero_input_cache(pipe.vae)  # depth/pose jobs skip re-encoding their constant all-zero stream
    pipe = apply_memory_plan(pipe, placement, memory_plan, vae_tiling, plan)
    compiled, reason = should_compile(compile, placement.device, plan_of(pipe))
    if compiled:
        cache = use_persistent_cache(compile_cache_dir) if compile_cache_dir is not None else None
        compile_blocks(pipe.transformer)
        reason += f"; kernels cached in {cache}" if cache else ""
    log.info("Regional compile of the transformer blocks: %s (%s)", "on" if compiled else "off", reason)
    return pipe
