"""The --fp8 setting: torchao row-wise float8 weights and activations for the transformer's block linears.

What is quantized: every `nn.Linear` inside the repeated blocks (`blocks`, `vace_blocks`): attention
projections, the FFN and the VACE blocks' hint projections, 98.6% of the 14B's parameters. Each weight is
stored as float8_e4m3 with one fp32 scale per output row, and each activation is scaled per row on the fly
(torchao `Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())`). What stays bf16, and why:
the patch embeddings (Conv3d, not a GEMM), the time and text embedders (they see one timestep or 512 prompt
tokens per forward, against 75,600 video tokens in each block linear at 720p: FP8 would gain nothing there,
and the time modulation they produce scales every block, so its error would reach every layer), the output
head `proj_out` (its error lands on the prediction unaveraged) and the norms and modulation tables (not
matrix multiplies; diffusers keeps them in fp32).

Why `auto` is cautious. On one H100 (benchmarks/results/gpu_check_h100-80gb-hbm3_2026-11-26.json, P5/P6)
the FP8 GEMM alone ran at 1.17-1.24 PFLOP/s against 780 TFLOP/s in bf16, but with the activation quantized
by separate eager kernels the linears of three blocks at 720p took 1.10 s against 1.03 s in bf16 (output
error 2.4%): FP8 only pays once the quantization is fused into neighbouring kernels, which torch.compile
does (pipelines/compile.py). An end-to-end gain has not been measured on this project yet, so `auto` turns
FP8 on only for its memory: where it lets a faster memory plan fit than bf16 would (a 48 GB card runs
all_on_gpu with ~16.4 GiB of FP8 weights instead of block offload with 32.3 GiB of bf16 ones).

Order matters: quantize first, then place the weights (apply_plan: offload hooks must see the quantized
parameters), then compile the blocks (the compiled graphs then contain the FP8 kernels and fuse the
activation quantization). pipelines/loader.py does it in that order.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from pipelines.memory import BF16_BYTES, FP32_BYTES, MemoryPlan, Offload

Fp8 = Literal["auto", "on", "off"]  # server/settings.py has the same choices
FP8_CHOICES: tuple[str, ...] = get_args(Fp8)
AUTO = "auto"
MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9) and Hopper (9.0) or newer; torchao asserts the same
MIN_TORCHAO = (0, 18)  # Float8DynamicActivationFloat8WeightConfig's version-2 Float8Tensor, as tested here
# torch._scaled_mm needs both GEMM dimensions divisible by 16; torchao silently leaves other weights in bf16,
# so the filter applies the same rule and the count of quantized layers is honest.
ALIGNMENT = 16
QUANTIZED_CONTAINERS = ("blocks", "vace_blocks")
FP8_BYTES = 1
# Counted on the meta device from the published config (tests/pipelines/test_fp8.py checks it): FP8 block
# linears with their row scales, everything else in bf16. 17.34 B params -> 16.4 GiB instead of 32.3 GiB.
WAN_VACE_14B_BYTES_PER_PARAM = 1.0145


class Fp8Error(RuntimeError):
    """--fp8 on where FP8 cannot run: the worker must not start."""


@dataclass(frozen=True)
class Fp8Choice:
    enabled: bool
    requested: str
    reason: str  # one line for the worker log
    plan: MemoryPlan  # the memory plan that goes with the choice

    @property
    def summary(self) -> str:
        return f"{'on' if self.enabled else 'off'} ({self.reason})"


def parse_fp8(value: str) -> str:
    if value not in FP8_CHOICES:
        raise ValueError(f"--fp8 must be one of {', '.join(FP8_CHOICES)}; got {value!r}")
    return value


# ------------------------------------------------------------------------------ which layers


def repeated_blocks(transformer: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for container in QUANTIZED_CONTAINERS:
        for index, block in enumerate(getattr(transformer, container)):
            yield f"{container}.{index}", block


def is_quantizable(module: nn.Module, name: str = "") -> bool:
    """A linear layer whose GEMM the FP8 kernel can run (both dimensions multiples of 16). A fast-mode LoRA's
    own low-rank layers (peft's `lora_A`/`lora_B`, pipelines/fast_mode.py) stay in bf16: they are small, and
    switched on and off per request."""
    return (isinstance(module, nn.Linear) and module.in_features % ALIGNMENT == 0
            and module.out_features % ALIGNMENT == 0 and ".lora_" not in f".{name}")


def quantizable_linears(transformer: nn.Module) -> list[str]:
    """Qualified names of the linears FP8 replaces: those inside the repeated blocks that are aligned."""
    return [f"{prefix}.{name}" for prefix, block in repeated_blocks(transformer)
            for name, module in block.named_modules() if is_quantizable(module, name)]


def weight_bytes(transformer: nn.Module) -> int:
    """The transformer's weight bytes once quantized: 1 B per FP8 weight plus an fp32 scale per output row,
    the rest (biases, embedders, head, norms) at 2 B as the bf16 estimate counts them (works on meta)."""
    total = sum(p.numel() for p in transformer.parameters()) * BF16_BYTES
    for _, block in repeated_blocks(transformer):
        for name, module in block.named_modules():
            if is_quantizable(module, name):
                total -= module.weight.numel() * (BF16_BYTES - FP8_BYTES)
                total += module.out_features * FP32_BYTES
    return total


def bytes_per_param(transformer: nn.Module) -> float:
    """The memory estimate's `transformer_bytes_per_param` under FP8 (pipelines/memory.py)."""
    params = sum(p.numel() for p in transformer.parameters())
    return weight_bytes(transformer) / params if params else float(BF16_BYTES)


# ------------------------------------------------------------------------------ availability


def unavailable_reason(device: torch.device | str) -> str | None:
    """Why FP8 cannot run on `device` (None when it can): device type, GPU generation, torchao."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"FP8 needs a CUDA GPU of compute capability 8.9 or newer (device is {device})"
    try:
        capability = torch.cuda.get_device_capability(device)
    except Exception as exc:  # noqa: BLE001 - under `auto` a failed check means bf16, not a failed start
        return f"could not read the compute capability of {device}: {type(exc).__name__}: {exc}"[:300]
    return capability_reason(capability, _version_of, _import_error)


def capability_reason(
    capability: tuple[int, int],
    version_of: Callable[[str], str | None],
    import_error: Callable[[], str | None] = lambda: None,
) -> str | None:
    """The GPU-generation and package part of the check (pure, so it is tested without a GPU)."""
    cc = f"{capability[0]}.{capability[1]}"
    if capability < MIN_CAPABILITY:
        return f"FP8 tensor cores need compute capability 8.9 or newer (Ada, Hopper); this GPU is {cc}"
    version = version_of("torchao")
    if version is None:
        return "package torchao is not installed (pip install 'torchao>=0.18,<0.19')"
    if _major_minor(version) < MIN_TORCHAO:
        return f"torchao {version} is installed; FP8 here needs torchao >= 0.18"
    return import_error()


def _version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> tuple[int, int]:
    """'0.18.0+cu130' -> (0, 18); what cannot be read counts as (0, 0)."""
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def _import_error() -> str | None:
    """torchao built for another torch may fail at import: say so rather than crash at quantization."""
    if importlib.util.find_spec("torchao") is None:
        return "package torchao is not installed"
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure is a reason, not a crash
        return f"torchao does not import with torch {torch.__version__}: {type(exc).__name__}: {exc}"[:300]
    return None


# ------------------------------------------------------------------------------ the decision


def check_requested(requested: str, unavailable: str | None) -> None:
    """Before any weight loads: an explicit `--fp8 on` that cannot run stops the start with the reason."""
    parse_fp8(requested)
    if requested == "on" and unavailable:
        raise Fp8Error(f"--fp8 on cannot be used: {unavailable}")


def choose(
    requested: str,
    unavailable: str | None,
    plan_with: Callable[[float], MemoryPlan],
    fp8_bytes_per_param: float,
) -> Fp8Choice:
    """Resolve --fp8 together with the memory plan.

    `plan_with(bytes_per_param)` is the memory plan the device would get with transformer weights of that
    size (pipelines/memory.py plan_for_device); `fp8_bytes_per_param` is the model's under FP8. `auto` is
    on only where FP8 is available and its plan is faster (earlier in the plan order: all_on_gpu first,
    untiled before tiled) than the bf16 one.
    """
    check_requested(requested, unavailable)
    if requested == "off":
        return Fp8Choice(False, requested, "--fp8 off", plan_with(BF16_BYTES))
    if requested == "on":
        return Fp8Choice(True, requested, "--fp8 on", plan_with(fp8_bytes_per_param))
    bf16 = plan_with(BF16_BYTES)
    if unavailable:
        return Fp8Choice(False, requested, f"auto: {unavailable}", bf16)
    fp8 = plan_with(fp8_bytes_per_param)
    if _rank(fp8) < _rank(bf16):
        reason = f"auto: FP8 weights fit {_name(fp8)} where bf16 needs {_name(bf16)}"
        return Fp8Choice(True, requested, reason, fp8)
    reason = (f"auto: bf16 already fits {_name(bf16)}, and FP8 has not been measured faster end to end on "
              "this project")
    return Fp8Choice(False, requested, reason, bf16)


def _rank(plan: MemoryPlan) -> int:
    """Position in choose_plan's fastest-first order (a resident text encoder before a swapped one)."""
    swapped = not plan.text_encoder_resident
    return list(Offload).index(plan.offload) * 4 + int(plan.vae_tiling) * 2 + int(swapped)


def _name(plan: MemoryPlan) -> str:
    return f"{plan.offload.value}{' with VAE tiling' if plan.vae_tiling else ''}"


# ------------------------------------------------------------------------------ applying it


def quantize_transformer(transformer: nn.Module, device: torch.device | str, keep_on_device: bool) -> int:
    """Replace the block linears' weights with torchao Float8Tensors, one block at a time on `device`
    (torchao quantizes only on a GPU that can run FP8, and one bf16 block at a time keeps the peak small).
    With `keep_on_device` the quantized blocks stay there (all_on_gpu), else they go back where they were
    (the offload plans start from RAM). Returns how many linears were quantized.
    """
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    # set_inductor_config=False: torchao would otherwise change global inductor options (coordinate descent
    # tuning, which lengthens every compile) and the fp32 matmul precision the VAE runs with.
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    target = torch.device(device)
    count = 0
    on_device = torch.cuda.device(target) if target.type == "cuda" else contextlib.nullcontext()
    with on_device, torch.no_grad():  # torchao checks the current device's capability
        for prefix, block in repeated_blocks(transformer):
            origin = next(block.parameters()).device
            block.to(target)
            for name, module in block.named_modules():
                if is_quantizable(module, name) and module.weight.dtype != torch.bfloat16:
                    raise Fp8Error(f"FP8 row-wise quantization starts from bf16 weights; {prefix}.{name} is "
                                   f"{module.weight.dtype}")
                count += is_quantizable(module, name)
            quantize_(block, config, filter_fn=lambda module, fqn: is_quantizable(module, fqn))
            if not keep_on_device:
                block.to(origin)
    return count


def is_quantized(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return weight is not None and type(weight).__name__ == "Float8Tensor"


def apply_fp8(transformer: nn.Module, choice: Fp8Choice, device: str) -> int:
    """Quantize as `choice` says (before apply_plan); returns the number of FP8 linears (0 when off)."""
    if not choice.enabled:
        return 0
    return quantize_transformer(transformer, device, keep_on_device=choice.plan.offload is Offload.ALL_ON_GPU)
