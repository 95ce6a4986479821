"""Timing and memory readings that work on CUDA (device events, allocator peaks) and on a CPU (host clock)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch

GiB = 2**30


def sig(value: float, digits: int = 4) -> float:
    """Round to significant digits, so toy-sized (--tiny) figures stay positive instead of rounding to 0."""
    return float(f"{value:.{digits}g}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall time of one call with the device drained before and after; returns (seconds, fn's result)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def median_seconds(fn: Callable[[], Any], device: torch.device, reps: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = sorted(seconds(fn, device)[0] for _ in range(reps))
    return times[(len(times) - 1) // 2]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Largest allocated bytes since reset_peak, in GiB (None on a CPU: no allocator statistics)."""
    if device.type != "cuda":
        return None
    return sig(torch.cuda.max_memory_allocated(device) / GiB)


def allocated_gib(device: torch.device) -> float | None:
    return sig(torch.cuda.memory_allocated(device) / GiB) if device.type == "cuda" else None


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def weight_gib(module: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / GiB


def all_finite(output: Any) -> bool:
    tensor = output[0] if isinstance(output, tuple | list) else output
    return bool(torch.isfinite(tensor).all())
