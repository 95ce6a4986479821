"""The benchmark's attention probe: which kernel torch's SDPA picks by itself at the model's real shapes and
layout, and how fast and how exact each way of computing that attention is."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from pipelines.attention import (
    DIFFUSERS_BACKENDS,
    reference_attention,
    relative_error,
    run_backend,
    unavailable_reason,
)
from pipelines.bench import measure
from pipelines.bench.models import Shape

if TYPE_CHECKING:
    from pipelines.bench.phases import Bench


def availability(choice: str, device: torch.device) -> str | None:
    """Why `choice` cannot run on `device`, or None."""
    try:
        return unavailable_reason(choice, device)
    except Exception as exc:  # noqa: BLE001 - a broken check must not stop the other phases
        return f"availability check raised {type(exc).__name__}: {exc}"[:300]


def sdpa_probe(bench: Bench) -> dict[str, Any]:
    """Which kernel torch's SDPA picks by itself at the model's real shapes and layout, and how fast each is.

    diffusers' `native` backend hands SDPA (B, H, S, D) views of (B, S, H, D) tensors (a permute, no copy);
    `_native_cudnn` makes them contiguous first. Timed here: SDPA with nothing forced, each forced kernel,
    both diffusers backends, and SageAttention's own call when the package is importable (any version).
    """
    config = bench.models.transformer
    heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
    out: dict[str, Any] = {}
    for shape in bench.models.shapes:
        q, k, v = (torch.randn(1, shape.tokens, heads, head_dim, device=bench.device, dtype=bench.dtype)
                   for _ in range(3))
        qt, kt, vt = (x.permute(0, 2, 1, 3) for x in (q, k, v))
        entry: dict[str, Any] = {
            "tokens": shape.tokens, "default_choice": _sdp_choice(qt, kt, vt),
            "default_choice_contiguous": _sdp_choice(*(x.contiguous() for x in (qt, kt, vt))),
        }
        candidates = _attention_calls(bench, q, k, v, qt, kt, vt)
        reference = _sampled_reference(q, k, v) if shape is bench.models.shapes[0] else None
        for name, call in candidates.items():
            entry[name] = _time_attention(bench, call, reference, shape, heads, head_dim)
        if shape is bench.models.shapes[0]:
            entry["default_kernels"] = _kernel_names(bench, candidates["sdpa_default"])
        out[shape.label] = entry
        del q, k, v, qt, kt, vt
        measure.free_memory(bench.device)
    return out


def _sdp_choice(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """The backend SDPA's dispatcher would pick for these inputs (torch._fused_sdp_choice)."""
    from torch.nn.attention import SDPBackend

    try:
        return SDPBackend(torch._fused_sdp_choice(q, k, v)).name
    except Exception as exc:  # noqa: BLE001 - private API: report, do not fail the phase
        return f"unknown ({type(exc).__name__}: {exc})"[:200]


def _attention_calls(
    bench: Bench, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qt: torch.Tensor, kt: torch.Tensor,
    vt: torch.Tensor,
) -> dict[str, Callable[[], torch.Tensor]]:
    """Each way of computing this attention; (q, k, v) are (B, S, H, D), (qt, kt, vt) their permuted views."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    def forced(backend: SDPBackend) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with sdpa_kernel(backend):
                return sdpa(qt, kt, vt).permute(0, 2, 1, 3)
        return call

    calls: dict[str, Callable[[], torch.Tensor]] = {
        "sdpa_default": lambda: sdpa(qt, kt, vt).permute(0, 2, 1, 3),
        "sdpa_flash": forced(SDPBackend.FLASH_ATTENTION),
        "sdpa_cudnn": forced(SDPBackend.CUDNN_ATTENTION),
        "sdpa_efficient": forced(SDPBackend.EFFICIENT_ATTENTION),
    }
    for choice in DIFFUSERS_BACKENDS:
        if availability(choice, bench.device) is None:
            calls[f"diffusers_{choice}"] = lambda choice=choice: run_backend(choice, q, k, v)
    if bench.device.type == "cuda":
        try:
            from sageattention import sageattn

            calls["sageattn_direct"] = lambda: sageattn(q, k, v, tensor_layout="NHD", is_causal=False)
        except Exception:  # noqa: BLE001 - not carried to this machine: no row
            pass
    return calls


def _sampled_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 attention for 256 sampled query rows (the full S x S scores would not fit at 720p)."""
    rows = torch.randperm(q.shape[1], device=q.device)[:256]
    return rows, reference_attention(q[:, rows], k, v)


def _time_attention(
    bench: Bench, call: Callable[[], torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor] | None,
    shape: Shape, heads: int, head_dim: int,
) -> dict[str, Any] | str:
    try:
        with torch.inference_mode():
            result: dict[str, Any] = {}
            if reference is not None:
                rows, ref = reference
                result["rel_err"] = float(f"{relative_error(call()[:, rows], ref):.3e}")
            seconds = measure.median_seconds(call, bench.device, reps=2, warmup=1)
        flops = 4 * shape.tokens**2 * head_dim * heads
        return {**result, "s": measure.sig(seconds), "tflops": measure.sig(flops / seconds / 1e12)}
    except Exception as exc:  # noqa: BLE001 - a kernel that refuses these inputs is a finding, not a failure
        return f"{type(exc).__name__}: {exc}"[:240]


def _kernel_names(bench: Bench, call: Callable[[], torch.Tensor]) -> list[str] | str:
    """The kernels (CUDA) or operators (CPU) one default SDPA call ran, longest first."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bench.device.type == "cuda" else [])
    try:
        with torch.inference_mode(), profile(activities=activities) as prof:
            call()
            measure.synchronize(bench.device)
        events = prof.key_averages()
        attr = "device_time_total" if bench.device.type == "cuda" else "self_cpu_time_total"
        ranked = sorted(events, key=lambda e: getattr(e, attr, 0) or 0, reverse=True)
        return [f"{e.key[:120]} ({(getattr(e, attr, 0) or 0) / 1e3:.1f} ms)" for e in ranked[:4]]
    except Exception as exc:  # noqa: BLE001 - the profiler is optional evidence
        return f"profiler failed: {type(exc).__name__}: {exc}"[:240]


