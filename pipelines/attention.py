"""The transformer's attention backend: the --attention setting, availability checks and `auto` selection.

Each choice maps to one of diffusers' attention-dispatch backends (diffusers/models/attention_dispatch.py,
`AttentionBackendName`). `auto` runs on the worker's GPU once at start-up: every available backend is
checked against an fp32 reference on a small shape and timed at the 480p/81f attention shape, and the
fastest one that passes wins. On a CPU `auto` is `native` (torch's SDPA) without any timing.

The selection logic (`select_backend`) takes its availability, check and timing functions as arguments, so
it is tested on a CPU; the GPU-only measurements are the small `measure_*` functions below.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
# --attention value -> diffusers AttentionBackendName value. Dict order is auto's tie-break order.
DIFFUSERS_BACKENDS: dict[str, str] = {
    "native": "native",  # torch SDPA, torch picks the kernel (flash, cuDNN, mem-efficient or math)
    "cudnn": "_native_cudnn",  # torch SDPA forced to cuDNN's fused attention
    "flash3": "_flash_3",  # FlashAttention-3 (`flash_attn_interface`, built from flash-attention's hopper/)
    "sage": "sage",  # SageAttention >= 2.1.1 (8-bit QK); diffusers refuses 1.x
}
ATTENTION_CHOICES: tuple[str, ...] = (AUTO, *DIFFUSERS_BACKENDS)

# Largest relative error (L2 norm of the difference over the L2 norm of the fp32 reference) a backend may
# show on the check shape. Every bf16 kernel measured 2.3e-3 (that is bf16's output rounding) and
# SageAttention-1's 8-bit QK 1.3e-2 (benchmarks/results/gpu_check_h100-80gb-hbm3_2026-11-26.json, P2);
# a kernel fed the wrong layout, scale or head order is off by order 1. 2e-2 admits the 8-bit kernels the
# project accepts (the FP8 plan in issue 14 accepts more per GEMM) and nothing coarser.
MAX_REL_ERR = 2e-2
# The check shape: small enough for an exact fp32 reference (S x S scores per head), real head size.
CHECK_SHAPE = (1, 1024, 4, 128)  # batch, sequence, heads, head_dim: diffusers' (B, S, H, D) layout
# The timing shape: one 480p/81f self-attention of the 14B model (21 x 30 x 52 tokens, 40 heads of 128).
TIMING_SHAPE = (1, 32_760, 40, 128)
Shape = tuple[int, int, int, int]
CUDA_ONLY_REASON = "needs a CUDA GPU"
_MIN_CAPABILITY = (8, 0)  # cuDNN fused attention and SageAttention: Ampere or newer


class AttentionBackendError(RuntimeError):
    """An explicit backend that cannot run here or computes wrong results: the worker must not start."""


@dataclass(frozen=True)
class Trial:
    """What start-up learned about one candidate."""

    choice: str
    available: bool
    reason: str = ""  # why not available, or why it failed
    rel_err: float | None = None
    seconds: float | None = None  # median time at TIMING_SHAPE

    @property
    def passed(self) -> bool:
        return self.available and self.rel_err is not None and _within(self.rel_err)


@dataclass(frozen=True)
class AttentionSelection:
    choice: str  # one of DIFFUSERS_BACKENDS' keys
    requested: str
    reason: str
    trials: tuple[Trial, ...] = field(default_factory=tuple)

    @property
    def backend(self) -> str:
        """The name transformer.set_attention_backend() takes."""
        return DIFFUSERS_BACKENDS[self.choice]

    def as_dict(self) -> dict[str, Any]:
        return {"choice": self.choice, "backend": self.backend, "requested": self.requested,
                "reason": self.reason, "trials": [asdict(t) for t in self.trials]}


def parse_attention(value: str) -> str:
    if value not in ATTENTION_CHOICES:
        raise ValueError(f"--attention must be one of {', '.join(ATTENTION_CHOICES)}; got {value!r}")
    return value


def _within(rel_err: float, limit: float = MAX_REL_ERR) -> bool:
    return math.isfinite(rel_err) and rel_err <= limit


def select_backend(
    requested: str,
    on_gpu: bool,
    *,
    unavailable: Callable[[str], str | None],
    rel_err: Callable[[str], float],
    seconds: Callable[[str], float],
    max_rel_err: float = MAX_REL_ERR,
) -> AttentionSelection:
    """Resolve --attention into one backend.

    `unavailable(choice)` returns why a backend cannot run here (None when it can), `rel_err(choice)` its
    error against the fp32 reference, `seconds(choice)` its time. An explicit choice is checked, not timed,
    and raises AttentionBackendError when unavailable or wrong. `auto` off the GPU is `native`, untimed.
    """
    parse_attention(requested)
    if requested == AUTO and not on_gpu:
        return AttentionSelection("native", requested, "auto on a CPU: torch's SDPA, nothing to compare")
    if requested != AUTO:
        trial = _try(requested, unavailable, rel_err, None, max_rel_err)
        if not trial.passed:
            raise AttentionBackendError(f"--attention {requested} cannot be used: {trial.reason}")
        reason = f"requested; rel. error {trial.rel_err:.1e}"
        return AttentionSelection(requested, requested, reason, (trial,))
    trials = tuple(_try(c, unavailable, rel_err, seconds, max_rel_err) for c in DIFFUSERS_BACKENDS)
    timed = [t for t in trials if t.passed and t.seconds is not None and math.isfinite(t.seconds)]
    if not timed:
        raise AttentionBackendError("--attention auto found no working backend: " + _summary(trials))
    best = min(timed, key=lambda t: t.seconds)  # min() keeps the first of equals: DIFFUSERS_BACKENDS order
    return AttentionSelection(best.choice, requested, f"fastest that passed the check: {_summary(trials)}",
                              trials)


def _try(
    choice: str,
    unavailable: Callable[[str], str | None],
    rel_err: Callable[[str], float],
    seconds: Callable[[str], float] | None,
    max_rel_err: float,
) -> Trial:
    reason = unavailable(choice)
    if reason:
        return Trial(choice, False, reason)
    try:
        err = float(rel_err(choice))
    except Exception as exc:  # noqa: BLE001 - a kernel that raises is a failed candidate, not a crash
        return Trial(choice, True, f"check raised {type(exc).__name__}: {exc}"[:300])
    if not _within(err, max_rel_err):
        return Trial(choice, True, f"rel. error {err:.1e} above {max_rel_err:.0e}", rel_err=err)
    if seconds is None:
        return Trial(choice, True, rel_err=err)
    try:
        return Trial(choice, True, rel_err=err, seconds=float(seconds(choice)))
    except Exception as exc:  # noqa: BLE001
        return Trial(choice, True, f"timing raised {type(exc).__name__}: {exc}"[:300], rel_err=err)


def _summary(trials: tuple[Trial, ...]) -> str:
    parts = []
    for t in trials:
        if not t.available:
            parts.append(f"{t.choice} unavailable ({t.reason})")
        elif t.reason:
            parts.append(f"{t.choice} failed ({t.reason})")
        else:
            timing = f", {t.seconds * 1e3:.1f} ms" if t.seconds is not None else ""
            parts.append(f"{t.choice} ok (err {t.rel_err:.1e}{timing})")
    return "; ".join(parts)


# ------------------------------------------------------------------------------ availability (no kernel runs)


def unavailable_reason(choice: str, device: torch.device | str) -> str | None:
    """Why `choice` cannot run on `device` (None when it can): package, version, GPU generation."""
    device = torch.device(device)
    if choice == "native":
        return None
    if device.type != "cuda":
        return f"{choice} {CUDA_ONLY_REASON} (device is {device})"
    capability = torch.cuda.get_device_capability(device)
    return capability_reason(choice, capability, _installed_version) or _diffusers_refusal(choice)


def capability_reason(
    choice: str, capability: tuple[int, int], version_of: Callable[[str], str | None]
) -> str | None:
    """The package and compute-capability part of the check (pure, so it is tested without a GPU)."""
    cc = f"{capability[0]}.{capability[1]}"
    if choice == "cudnn":
        if capability < _MIN_CAPABILITY:
            return f"cuDNN fused attention needs compute capability 8.0 or newer (this GPU is {cc})"
        if not torch.backends.cudnn.is_available():
            return "torch was built without cuDNN"
        return None
    if choice == "flash3":
        if capability[0] != 9:
            return f"FlashAttention-3 runs on Hopper GPUs (compute capability 9.x) only; this GPU is {cc}"
        if version_of("flash_attn_interface") is None:
            return ("package flash_attn_interface (FlashAttention-3, built from flash-attention's hopper/ "
                    "folder) is not installed")
        return None
    if choice == "sage":
        if capability < _MIN_CAPABILITY:
            return f"SageAttention needs compute capability 8.0 or newer (this GPU is {cc})"
        version = version_of("sageattention")
        if version is None:
            return "package sageattention is not installed"
        if _version_tuple(version) < (2, 1, 1):
            return f"sageattention {version} is installed; diffusers' sage backend needs >= 2.1.1"
        return None
    raise ValueError(f"unknown attention backend {choice!r}")


def _installed_version(module: str) -> str | None:
    """The distribution version of an importable module ("0" when it has no metadata), else None."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _diffusers_refusal(choice: str) -> str | None:
    """diffusers' own requirement check (what set_attention_backend() would raise), as a reason."""
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
    )

    try:
        _check_attention_backend_requirements(AttentionBackendName(DIFFUSERS_BACKENDS[choice]))
    except RuntimeError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------------------ GPU measurements


def random_qkv(
    shape: tuple[int, int, int, int], device: torch.device | str, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standard-normal query, key, value in diffusers' (batch, sequence, heads, head_dim) layout."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return tuple(torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(3))


def run_backend(choice: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One attention call through diffusers' dispatcher: the exact function the transformer will call."""
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    return dispatch_attention_fn(q, k, v, backend=AttentionBackendName(DIFFUSERS_BACKENDS[choice]))


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention computed in fp32 from the same (rounded) inputs, in the (B, S, H, D) layout."""
    qf, kf, vf = (x.float().transpose(1, 2) for x in (q, k, v))
    scores = (qf @ kf.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return (scores.softmax(dim=-1) @ vf).transpose(1, 2)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    return float((out - ref).norm() / ref.norm())


def measure_rel_err(choice: str, device: torch.device | str, dtype: torch.dtype,
                    shape: Shape = CHECK_SHAPE) -> float:
    q, k, v = random_qkv(shape, device, dtype)
    with torch.inference_mode():
        return relative_error(run_backend(choice, q, k, v), reference_attention(q, k, v))


def measure_seconds(choice: str, device: torch.device | str, dtype: torch.dtype, reps: int = 3,
                    shape: Shape = TIMING_SHAPE) -> float:
    """Median CUDA-event time of one attention call at `shape`, after one warm-up call."""
    q, k, v = random_qkv(shape, device, dtype, seed=1)
    times = []
    with torch.inference_mode():
        run_backend(choice, q, k, v)  # kernel selection, plans, Triton JIT
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run_backend(choice, q, k, v)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def select_for_device(requested: str, device: torch.device | str, dtype: torch.dtype,
                      heads: int = TIMING_SHAPE[2], head_dim: int = TIMING_SHAPE[3]) -> AttentionSelection:
    """The worker's start-up selection on `device`, with the real checks and timings, at the loaded model's
    head count and size (a kernel that passes at 128 may refuse another head size, e.g. the tiny model's)."""
    device = torch.device(device)
    check: Shape = (1, CHECK_SHAPE[1], min(heads, CHECK_SHAPE[2]), head_dim)
    timing: Shape = (1, TIMING_SHAPE[1], heads, head_dim)
    # CUDA events record on the current device's stream: time on the worker's own GPU (cuda:1 too).
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        selection = select_backend(
            requested,
            device.type == "cuda",
            unavailable=lambda c: unavailable_reason(c, device),
            rel_err=lambda c: measure_rel_err(c, device, dtype, check),
            seconds=lambda c: measure_seconds(c, device, dtype, shape=timing),
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the timing tensors (1 GiB at TIMING_SHAPE) must not stay reserved
    return selection


def apply_attention(transformer: torch.nn.Module, selection: AttentionSelection) -> None:
    transformer.set_attention_backend(selection.backend)
