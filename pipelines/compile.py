"""The --compile setting: regional torch.compile of the transformer's repeated blocks.

Measured on one H100 80GB (benchmarks/results/bench_nvidia-h100-80gb-hbm3_2026-11-26T0637Z.json): a 720p/81f
forward takes 13.60 s with `compile_repeated_blocks` against 15.77 s eager (1.16x), and the first call pays
39.3 s of compilation. So `auto` compiles on CUDA when the transformer stays on the GPU (all_on_gpu,
model_offload); under group or sequential offload the per-block offload hooks run inside the compiled region,
which is unmeasured, so `auto` leaves them eager. On a CPU compiling costs minutes and gains little: off.

Only the blocks are compiled, not the model's forward, so the step cache (pipelines/step_cache.py) wraps
outside them. The same settings as the measurement: `fullgraph=False` (attention backends that are custom ops
may break the graph), `dynamic=False` (one graph per shape; each new resolution or length compiles once).
Compiled kernels persist in TORCHINDUCTOR_CACHE_DIR (inductor's FX graph and AOTAutograd caches and Triton's
kernels, all on by default in torch 2.14), set under the data dir unless the operator set it, so a restarted
worker loads them instead of compiling again. The worker runs the compiled transformer once per common shape
before it reports ready (pipelines/compile_warmup.py); other shapes compile on their first request.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, get_args

from torch import nn

from pipelines.memory import MemoryPlan, Offload

Compile = Literal["auto", "on", "off"]  # server/settings.py has the same choices
COMPILE_CHOICES: tuple[str, ...] = get_args(Compile)
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
log = logging.getLogger(__name__)


def parse_compile(value: str) -> str:
    if value not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {value!r}")
    return value


def should_compile(setting: str, device: str, plan: MemoryPlan) -> tuple[bool, str]:
    """Whether to compile, and why (for the log)."""
    parse_compile(setting)
    if setting != "auto":
        return setting == "on", f"--compile {setting}"
    if not device.startswith("cuda"):
        return False, f"auto: off on {device}"
    if plan.offload not in (Offload.ALL_ON_GPU, Offload.MODEL_OFFLOAD):
        return False, f"auto: off under {plan.offload.value} (unmeasured with offload hooks)"
    return True, "auto: on for CUDA (1.16x per 720p forward measured on an H100)"


def use_persistent_cache(cache_dir: Path) -> str:
    """Point inductor's caches at `cache_dir` unless the operator chose a folder; returns the folder used."""
    chosen = os.environ.setdefault(CACHE_ENV, str(cache_dir))
    Path(chosen).mkdir(parents=True, exist_ok=True)
    return chosen


def compile_blocks(transformer: nn.Module, **compile_options: Any) -> None:
    """Compile each main and VACE block in place (diffusers' regional compile); `compile_options` go to
    torch.compile on top of the measured settings (tests pass a cheap backend)."""
    options = {"fullgraph": False, "dynamic": False, **compile_options}
    transformer.compile_repeated_blocks(**options)  # type: ignore[operator]
