"""The benchmark's FP8 phases (pipelines/fp8.py): the same transformer with its block linears in torchao
row-wise float8, timed eager and under regional compile, its output error against bf16 and its memory.

They run last and on a model of their own: quantization is in place and cannot be undone, so `fp8_build`
drops the bf16 model the earlier phases used and builds a fresh one (random weights again; the bf16
reference output for the error check is taken from it just before it is quantized). All are named `fp8_*`,
so `vace bench --only fp8` runs just them. On a device without FP8 (a CPU, a GPU older than compute
capability 8.9, no torchao) they are recorded as skipped with the reason.

Estimates (seconds on one H100 80GB): the 14B build and quantization ~15 s, the eager FP8 forwards as the
bf16 ones (gpu_check P6: FP8 linears 7% slower eager), the compile phase as the bf16 one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pipelines import fp8
from pipelines.bench import measure
from pipelines.bench.models import Shape, build_transformer, build_vae, model_size, transformer_inputs
from pipelines.bench.runner import Phase
from pipelines.memory import GiB, MemoryPlan, Offload, apply_plan, phase_peaks

if TYPE_CHECKING:
    from pipelines.bench.phases import Bench

# The error check: a real frame size with few frames (3,120 tokens for the 14B), cheap next to a forward.
ERROR_SHAPE = Shape("fp8-check", 480, 832, 5)
TINY_ERROR_SHAPE = Shape("fp8-check", 32, 48, 5)
MEMORY_SHAPE = "720p"  # the shape a 48 GB card is meant to run all_on_gpu with FP8
BUILD_ESTIMATE_S = 20.0
FORWARD_ESTIMATE_S = {"480p": 12.0, "720p": 22.0}
COMPILE_ESTIMATE_S = {"480p": 45.0, "720p": 70.0}


@dataclass
class Fp8State:
    """What the FP8 phases share besides the Bench: the bf16 reference and the quantized model's figures."""

    reference: torch.Tensor | None = None
    bytes_per_param: float = 2.0
    linears: int = 0
    eager: dict[str, float] = field(default_factory=dict)  # shape label -> FP8 eager forward_s


def availability(device: torch.device) -> str | None:
    try:
        return fp8.unavailable_reason(device)
    except Exception as exc:  # noqa: BLE001 - a broken check must not stop the other phases
        return f"availability check raised {type(exc).__name__}: {exc}"[:300]


def plan(bench: Bench, state: Fp8State | None = None) -> list[Phase]:
    state = state or Fp8State()
    reason = availability(bench.device)
    unavailable = f"unavailable: {reason}" if reason else None
    needs = ("fp8_build",)
    compile_shape = bench.compile_shape
    return [
        Phase("fp8_build", BUILD_ESTIMATE_S, lambda: build(bench, state), unavailable=unavailable),
        Phase("fp8_error", 5, lambda: error(bench, state), requires=needs, unavailable=unavailable),
        *(Phase(f"fp8_forward_{label}", FORWARD_ESTIMATE_S[label],
                lambda label=label: forward(bench, state, label), requires=needs, unavailable=unavailable)
          for label in ("720p", "480p")),
        Phase("fp8_compile", COMPILE_ESTIMATE_S[compile_shape], lambda: compile_blocks(bench, state),
              requires=needs, unavailable=unavailable),
        Phase("fp8_memory", 30, lambda: memory(bench, state), requires=needs, unavailable=unavailable),
    ]


def _error_shape(bench: Bench) -> Shape:
    return TINY_ERROR_SHAPE if bench.models.tiny else ERROR_SHAPE


def _backend(bench: Bench, label: str) -> str:
    from pipelines.bench.phases import best_backend

    return best_backend(bench, label) or "native"


def build(bench: Bench, state: Fp8State) -> dict[str, Any]:
    """A fresh bf16 model, its reference output at the error shape, then quantized in place, timed."""
    bench.transformer = None  # the bf16 model of the earlier phases (maybe behind offload hooks in RAM)
    bench.backend, bench.warmed = None, set()
    measure.free_memory(bench.device)
    build_s, model = measure.seconds(
        lambda: build_transformer(bench.models.transformer, bench.device, bench.dtype), bench.device)
    bench.transformer = model
    bf16_gib = measure.allocated_gib(bench.device)
    bench.use_backend(_backend(bench, "720p"))
    with torch.inference_mode():
        x = transformer_inputs(bench.models, _error_shape(bench), bench.device, bench.dtype)
        state.reference = model(**x)[0].float()
    state.bytes_per_param = fp8.bytes_per_param(model)
    quantize_s, state.linears = measure.seconds(
        lambda: fp8.quantize_transformer(model, bench.device, keep_on_device=True), bench.device)
    measure.free_memory(bench.device)
    reference_gib = state.reference.numel() * 4 / GiB if bench.device.type == "cuda" else 0.0
    allocated = measure.allocated_gib(bench.device)
    estimate_gib = fp8.weight_bytes(model) / GiB
    bench.weights_gib = estimate_gib if allocated is None else allocated - reference_gib
    linears = fp8.quantizable_linears(model)
    return {
        "build_s": measure.sig(build_s), "quantize_s": measure.sig(quantize_s),
        "quantized_linears": state.linears, "linears_listed": len(linears),
        "all_listed_are_fp8": all(fp8.is_quantized(model.get_submodule(n)) for n in linears),
        "bf16_allocated_gib": bf16_gib,
        "weight_gib": measure.sig(bench.weights_gib), "weight_estimate_gib": measure.sig(estimate_gib),
        "bytes_per_param": measure.sig(state.bytes_per_param),
        "config": "torchao Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())",
    }


def error(bench: Bench, state: Fp8State) -> dict[str, Any]:
    """The FP8 model's output against the same weights' bf16 output, at a small real shape."""
    if state.reference is None:
        raise RuntimeError("fp8_build kept no bf16 reference")
    shape = _error_shape(bench)
    with torch.inference_mode():
        out = bench.model(**transformer_inputs(bench.models, shape, bench.device, bench.dtype))[0].float()
    rel_err = float((out - state.reference).norm() / state.reference.norm())
    return {"shape": shape.as_dict(), "backend": bench.backend, "rel_err_vs_bf16": measure.sig(rel_err),
            "output_finite": measure.all_finite(out)}


def forward(bench: Bench, state: Fp8State, label: str) -> dict[str, Any]:
    """Eager FP8 forward with the backend that was fastest in bf16 at this shape (activation quantization as
    separate kernels: what gpu_check P6 measured slower than bf16)."""
    bench.use_backend(_backend(bench, label))
    result = bench.forward(bench.models.shape(label), calls=2 if label == "480p" else 1)
    state.eager[label] = result["forward_s"]
    bf16 = bench.runner.results(f"forward_{label}_{bench.backend}").get("forward_s")
    result.update(fp8=True, bf16_forward_s=bf16,
                  speedup_vs_bf16=measure.sig(bf16 / result["forward_s"]) if bf16 else None)
    return result


def compile_blocks(bench: Bench, state: Fp8State) -> dict[str, Any]:
    """Regional compile of the FP8 blocks (quantize, then compile: the order pipelines/loader.py uses)."""
    from pipelines.bench.phases import _uncompile

    label = bench.compile_shape
    choice = _backend(bench, label)
    bench.use_backend(choice)
    eager = state.eager.get(label)
    if eager is None:  # run without its forward phase: time the eager FP8 forward here
        eager = bench.forward(bench.models.shape(label), calls=1)["forward_s"]
    backend = "inductor" if bench.device.type == "cuda" else "eager"  # as phases.compile_blocks
    bench.model.compile_repeated_blocks(fullgraph=False, dynamic=False, backend=backend)
    try:
        timing = bench.forward(bench.models.shape(label), calls=2)
    finally:
        _uncompile(bench.model)
    compiled = timing["forward_s"]
    bf16 = bench.runner.results(f"forward_{label}_{choice}").get("forward_s")
    bf16_compiled = (bench.runner.results("compile").get("compiled_forward_s")
                     if bench.runner.results("compile").get("shape") == label else None)
    return {"backend": choice, "shape": label, "compile_backend": backend,
            "first_call_s": timing["first_call_s"], "compiled_forward_s": compiled, "eager_forward_s": eager,
            "speedup": measure.sig(eager / compiled) if compiled > 0 else None,
            "bf16_forward_s": bf16, "bf16_compiled_forward_s": bf16_compiled,
            "speedup_vs_bf16_compiled": measure.sig(bf16_compiled / compiled) if bf16_compiled else None,
            "peak_gib": timing["peak_gib"], "output_finite": timing["output_finite"]}


def memory(bench: Bench, state: Fp8State) -> dict[str, Any]:
    """The forward's peak under all_on_gpu with FP8 weights (apply_plan, the fp32 VAE on the GPU too), against
    pipelines/memory.py's estimate with the FP8 bytes per parameter."""
    from diffusers import WanVACEPipeline

    from pipelines.bench.models import WARMUP_SHAPE
    from pipelines.bench.phases import _toy_text_encoder

    shape = bench.models.shape(MEMORY_SHAPE)
    choice = _backend(bench, MEMORY_SHAPE)
    bench.use_backend(choice)
    vae_model = build_vae(bench.models.vae, torch.device("cpu"))
    pipe = WanVACEPipeline(tokenizer=None, text_encoder=_toy_text_encoder(), vae=vae_model, scheduler=None,
                           transformer=bench.model)
    apply_plan(pipe, MemoryPlan(Offload.ALL_ON_GPU, False, "bench"), str(bench.device))
    with torch.inference_mode():
        bench.model(**transformer_inputs(bench.models, WARMUP_SHAPE, bench.device, bench.dtype))
    timing = bench.forward(shape, calls=1)
    size = model_size(bench.models, bench.model, vae_model)
    peaks = phase_peaks(Offload.ALL_ON_GPU, False, size, shape.height * shape.width, shape.frames,
                        transformer_bytes_per_param=state.bytes_per_param)
    out: dict[str, Any] = {
        "plan": Offload.ALL_ON_GPU.value, "shape": shape.label, "backend": choice,
        "forward_s": timing["forward_s"], "peak_gib": timing["peak_gib"],
        "denoise_estimate_gib": measure.sig(peaks["denoise"] / GiB),
        "request_estimate_gib": measure.sig(max(peaks.values()) / GiB),  # the VAE decode is the largest phase
        "output_finite": timing["output_finite"],
    }
    if timing["peak_gib"]:
        out["estimate_over_measured"] = measure.sig(peaks["denoise"] / GiB / timing["peak_gib"])
    # bf16 at the same shape and backend, without the VAE on the GPU (0.47 GiB): the forward phase's peak.
    out["bf16_forward_peak_gib"] = bench.runner.results(f"forward_{MEMORY_SHAPE}_{choice}").get("peak_gib")
    return out
