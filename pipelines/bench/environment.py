"""What the figures were measured on: device, memory, library versions, SDPA settings."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sys
from typing import Any

import torch


def describe(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "packages": {name: _version(name) for name in (
            "diffusers", "transformers", "accelerate", "triton", "sageattention", "flash_attn_interface",
            "flash-attn", "torchao")},
    }
    if device.type == "cuda":
        try:
            info.update(_cuda(device))
        except Exception as exc:  # noqa: BLE001 - the figures matter more than the description
            info.update(name="cuda device", description_error=f"{type(exc).__name__}: {exc}"[:300])
    else:
        info.update(name=f"{platform.processor() or platform.machine()} CPU", capability=None)
    return info


def _cuda(device: torch.device) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(device)
    free, total = torch.cuda.mem_get_info(device)
    info: dict[str, Any] = {
        "name": props.name, "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
        "memory_total_gib": round(total / 2**30, 2), "memory_free_gib": round(free / 2**30, 2),
        "sdp_enabled": {kind: bool(getattr(torch.backends.cuda, f"{kind}_sdp_enabled")())
                        for kind in ("flash", "mem_efficient", "math", "cudnn")},
    }
    try:  # private: the order SDPA tries kernels in (torch may still prefer another at run time)
        info["sdp_priority_order"] = [torch.nn.attention.SDPBackend(int(i)).name
                                      for i in torch._C._get_sdp_priority_order()]
    except Exception as exc:  # noqa: BLE001
        info["sdp_priority_order"] = f"unknown ({type(exc).__name__})"
    return info


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (file names under benchmarks/results/)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
