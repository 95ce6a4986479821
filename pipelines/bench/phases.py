"""The benchmark's phases, most valuable first, each a small function returning its figures.

Estimates (seconds on one H100 80GB) come from benchmarks/results/gpu_check_h100-80gb-hbm3_2026-11-26.json:
14B build 4.7 s, forward 4.4 s at 480p/81f and 16.0 s at 720p/81f, VAE 25.7 s for encode + both decodes
(a tiled encode adds about 6 s),
regional compile's first call 16.5 s on a 3-block model (more here: two block classes, 48 blocks to guard).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pipelines.attention import (
    DIFFUSERS_BACKENDS,
    select_for_device,
)
from pipelines.bench import fp8_phases, measure
from pipelines.bench.attention_probe import availability, sdpa_probe
from pipelines.bench.models import (
    WARMUP_SHAPE,
    ModelSet,
    Shape,
    build_transformer,
    build_vae,
    model_size,
    transformer_inputs,
)
from pipelines.bench.runner import OK, Phase, Runner
from pipelines.memory import GiB, MemoryPlan, Offload, apply_plan, phase_peaks, transformer_activation_bytes

FORWARD_ESTIMATE_S = {"480p": 12.0, "720p": 22.0}  # two calls at 480p, one at 720p, plus a warm-up
COMPILE_ESTIMATE_S = {"480p": 45.0, "720p": 70.0}
MEMORY_SHAPE = "480p"  # all_on_gpu vs group_offload: the smaller shape keeps two more forwards cheap
NOT_BUILT: dict[str, str] = {}  # parts of issue 14 with no phase yet (FP8 has its own: fp8_phases.py)
NOT_MEASURED = {
    "model_offload": "not run: while the transformer runs it is wholly on the GPU, so its forward peak is "
                     "all_on_gpu's; its cost is moving 32 GiB per request (gpu_check P7 timed such copies)",
    "sequential_offload": "not run: leaf-level offload moves all 32 GiB every forward; a 14B forward "
                          "under it would not fit the budget",
    "text_encoder": "not built: umt5-xxl (10.6 GiB) plays no part in a forward; encode_prompts' swap is "
                    "gpu_check P7's figure",
}


@dataclass
class Bench:
    """What the phases share: the device, the configs and the one resident 14B model."""

    models: ModelSet
    device: torch.device
    dtype: torch.dtype
    compile_shape: str
    runner: Runner
    log: Callable[[str], None] = print
    transformer: torch.nn.Module | None = None
    weights_gib: float = 0.0
    backend: str | None = None
    warmed: set[str] = field(default_factory=set)

    @property
    def model(self) -> torch.nn.Module:
        if self.transformer is None:
            raise RuntimeError("the transformer was not built")
        return self.transformer

    def use_backend(self, choice: str) -> None:
        """Switch the model's attention backend and run a small warm-up once per backend (plans, JIT)."""
        if self.backend != choice:
            self.model.set_attention_backend(DIFFUSERS_BACKENDS[choice])
            self.backend = choice
        if choice not in self.warmed:
            with torch.inference_mode():
                self.model(**transformer_inputs(self.models, WARMUP_SHAPE, self.device, self.dtype))
            measure.synchronize(self.device)
            self.warmed.add(choice)

    def forward(self, shape: Shape, calls: int) -> dict[str, Any]:
        """Time `calls` forwards at `shape`; the last is the figure, the first includes per-shape set-up."""
        x = transformer_inputs(self.models, shape, self.device, self.dtype)
        measure.reset_peak(self.device)
        times, finite = [], True
        with torch.inference_mode():
            for _ in range(calls):
                t, out = measure.seconds(lambda: self.model(**x), self.device)
                times.append(t)
                finite = finite and measure.all_finite(out)
                del out
        peak = measure.peak_gib(self.device)
        size = model_size(self.models, self.model, None)
        return {
            "shape": shape.label, "tokens": shape.tokens, "backend": self.backend,
            "first_call_s": measure.sig(times[0]), "forward_s": measure.sig(times[-1]),
            "output_finite": finite,
            "peak_gib": peak,
            "activation_peak_gib": None if peak is None else measure.sig(peak - self.weights_gib),
            "activation_estimate_gib": measure.sig(transformer_activation_bytes(size, shape.tokens) / GiB),
        }


def plan(bench: Bench) -> list[Phase]:
    """Every phase in run order: the most valuable first, so a budget cut drops the least useful tail."""
    phases = [
        Phase("sdpa_probe", 15, lambda: sdpa_probe(bench)),
        Phase("attention_auto", 20, lambda: attention_auto(bench)),
        Phase("build", 12, lambda: build(bench)),
    ]
    for label in ("720p", "480p"):
        for choice in DIFFUSERS_BACKENDS:
            reason = availability(choice, bench.device)
            phases.append(Phase(
                f"forward_{label}_{choice}", FORWARD_ESTIMATE_S[label],
                lambda label=label, choice=choice: forward(bench, label, choice),
                requires=("build",), unavailable=f"unavailable: {reason}" if reason else None,
            ))
    phases += [
        Phase("vae_720p", 45, lambda: vae(bench)),
        Phase("compile", COMPILE_ESTIMATE_S[bench.compile_shape], lambda: compile_blocks(bench),
              requires=("build",)),
        # Last: group offload leaves the transformer in RAM behind diffusers' hooks.
        Phase("memory_plans", 35, lambda: memory_plans(bench), requires=("build",)),
    ]
    # After everything that needs the bf16 model: they quantize a fresh one in place.
    return phases + fp8_phases.plan(bench)


def attention_auto(bench: Bench) -> dict[str, Any]:
    """The worker's own start-up selection (`--attention auto`), on this device."""
    selection = select_for_device("auto", bench.device, bench.dtype)
    return selection.as_dict()


# ------------------------------------------------------------------------------------------ transformer


def build(bench: Bench) -> dict[str, Any]:
    seconds, model = measure.seconds(
        lambda: build_transformer(bench.models.transformer, bench.device, bench.dtype), bench.device)
    bench.transformer = model
    bench.weights_gib = measure.weight_gib(model)
    fp32 = sum(p.numel() for p in model.parameters() if p.dtype == torch.float32)
    return {"build_s": measure.sig(seconds), "params": sum(p.numel() for p in model.parameters()),
            "fp32_params": fp32, "weight_gib": measure.sig(bench.weights_gib),
            "allocated_gib": measure.allocated_gib(bench.device), "dtype": str(bench.dtype)}


def forward(bench: Bench, label: str, choice: str) -> dict[str, Any]:
    bench.use_backend(choice)
    # 480p: the first call is reported separately from a second (cuDNN builds plans per shape); 720p is a
    # single call after the warm-up, as the H100 baseline showed both calls equal.
    return bench.forward(bench.models.shape(label), calls=2 if label == "480p" else 1)


def best_backend(bench: Bench, label: str) -> str | None:
    """The fastest backend measured at `label` (None when no forward at that shape succeeded)."""
    timed = {}
    for choice in DIFFUSERS_BACKENDS:
        name = f"forward_{label}_{choice}"
        if bench.runner.status(name) == OK:
            timed[choice] = bench.runner.results(name)["forward_s"]
    return min(timed, key=timed.__getitem__) if timed else None


def compile_blocks(bench: Bench) -> dict[str, Any]:
    """Regional compile (diffusers' compile_repeated_blocks) with the fastest backend, at one shape."""
    label = bench.compile_shape
    choice = best_backend(bench, label)
    if choice is None:  # run alone (--only compile): time the eager forward here
        choice = "native"
        bench.use_backend(choice)
        eager = bench.forward(bench.models.shape(label), calls=1)["forward_s"]
    else:
        eager = bench.runner.results(f"forward_{label}_{choice}")["forward_s"]
        bench.use_backend(choice)
    # Inductor on a CPU needs a C++ toolchain and minutes on 2 cores: --tiny traces with the eager backend.
    backend = "inductor" if bench.device.type == "cuda" else "eager"
    bench.model.compile_repeated_blocks(fullgraph=False, dynamic=False, backend=backend)
    try:
        timing = bench.forward(bench.models.shape(label), calls=2)
    finally:
        _uncompile(bench.model)
    speedup = eager / timing["forward_s"] if timing["forward_s"] > 0 else float("nan")
    return {"backend": choice, "shape": label, "compile_backend": backend,
            "first_call_s": timing["first_call_s"], "compiled_forward_s": timing["forward_s"],
            "eager_forward_s": eager, "speedup": measure.sig(speedup), "peak_gib": timing["peak_gib"],
            "output_finite": timing["output_finite"]}


def _uncompile(model: torch.nn.Module) -> None:
    """Undo nn.Module.compile() on every block, so later phases time the eager model."""
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------ VAE


def vae(bench: Bench) -> dict[str, Any]:
    """fp32 VAE at 720p/81f: encode and decode, untiled and tiled (diffusers' 256 px tiles), with peaks."""
    shape = bench.models.shape("720p")
    model = build_vae(bench.models.vae, bench.device)
    out: dict[str, Any] = {"shape": shape.as_dict()}
    with torch.inference_mode():
        latents = _encode(bench, model, shape, out)
        for tiled in (False, True):
            _decode(bench, model, latents, tiled, out)
    return out


def _set_tiling(model: torch.nn.Module, tiled: bool) -> None:
    if tiled:
        model.enable_tiling()
    else:
        model.disable_tiling()


def _encode(bench: Bench, model: torch.nn.Module, shape: Shape, out: dict[str, Any]) -> torch.Tensor:
    """Encode untiled then tiled; returns the untiled latents for the decodes."""
    video = torch.rand(1, 3, shape.frames, shape.height, shape.width, device=bench.device) * 2 - 1
    model(video[:, :, :5, :64, :64])  # warm-up: cuDNN convolution algorithms
    latents = None
    for tiled in (False, True):
        _set_tiling(model, tiled)
        key = "encode_tiled" if tiled else "encode"
        measure.free_memory(bench.device)
        t, encoded = measure.seconds(lambda: model.encode(video).latent_dist.mode(), bench.device)
        out.update({f"{key}_s": measure.sig(t), f"{key}_peak_gib": measure.peak_gib(bench.device)})
        latents = encoded if latents is None else latents
    return latents


def _decode(
    bench: Bench, model: torch.nn.Module, latents: torch.Tensor, tiled: bool, out: dict[str, Any]
) -> None:
    _set_tiling(model, tiled)
    key = "decode_tiled" if tiled else "decode"
    measure.free_memory(bench.device)
    t, decoded = measure.seconds(lambda: model.decode(latents).sample, bench.device)
    out.update({f"{key}_s": measure.sig(t), f"{key}_peak_gib": measure.peak_gib(bench.device),
                f"{key}_finite": measure.all_finite(decoded)})


# ------------------------------------------------------------------------------------------ memory plans


def memory_plans(bench: Bench) -> dict[str, Any]:
    """The forward's peak under the project's own plans (pipelines/memory.py apply_plan), vs its estimate."""
    from diffusers import WanVACEPipeline

    shape = bench.models.shape(MEMORY_SHAPE)
    choice = best_backend(bench, MEMORY_SHAPE) or "native"
    bench.use_backend(choice)
    vae_model = build_vae(bench.models.vae, torch.device("cpu"))
    # apply_plan places the text encoder too; no forward uses it, so a toy one stands in for umt5-xxl.
    pipe = WanVACEPipeline(tokenizer=None, text_encoder=_toy_text_encoder(), vae=vae_model, scheduler=None,
                           transformer=bench.model)
    size = model_size(bench.models, bench.model, vae_model)
    out: dict[str, Any] = {"not_measured": NOT_MEASURED}
    for offload in (Offload.ALL_ON_GPU, Offload.GROUP_OFFLOAD):
        if offload is Offload.GROUP_OFFLOAD and bench.device.type != "cuda":
            out[offload.value] = {"skipped": "group offload needs a CUDA device"}
            continue
        if offload is Offload.GROUP_OFFLOAD:
            bench.model.to("cpu")  # the plan's starting point: weights in RAM, as after from_pretrained
            measure.free_memory(bench.device)
        t_apply, _ = measure.seconds(
            lambda offload=offload: apply_plan(pipe, MemoryPlan(offload, False, "bench"), str(bench.device)),
            bench.device)
        with torch.inference_mode():  # the first call under hooks: streams and pinned buffers set up
            bench.model(**transformer_inputs(bench.models, WARMUP_SHAPE, bench.device, bench.dtype))
        timing = bench.forward(shape, calls=1)
        estimate = phase_peaks(offload, False, size, shape.height * shape.width, shape.frames)["denoise"]
        out[offload.value] = {
            "shape": shape.label, "backend": choice, "apply_s": measure.sig(t_apply),
            "forward_s": timing["forward_s"], "peak_gib": timing["peak_gib"],
            "estimate_gib": measure.sig(estimate / GiB), "output_finite": timing["output_finite"],
        }
        if timing["peak_gib"] is not None and estimate > 0:
            out[offload.value]["estimate_over_measured"] = measure.sig(estimate / GiB / timing["peak_gib"])
    return out


def _toy_text_encoder() -> torch.nn.Module:
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    return UMT5EncoderModel(config).eval().requires_grad_(False)
