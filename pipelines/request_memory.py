"""Check one request's own GPU peak against the card before any work, and take the cheapest fix.

The worker's plan (pipelines/memory.py) is chosen once, for fal's default 720p/81f request; a request may be
longer, carry reference images (more tokens), or meet annotators still on the GPU. `request_fit` is a pure
function of numbers (usable bytes, ModelSize, the plan, the request's shape, the annotators' bytes): it
tries, cheapest first, VAE tiling for this request, dropping the annotators before generation, and sending
a resident text encoder back to RAM, each alone and then together, and says which set fits or that none
does. `request_memory` applies a fit to the pipeline for one job and undoes it afterwards. `read_gpu_memory`
is the one place that asks CUDA, and returns None on a CPU worker, where there is nothing to check.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from pipelines.memory import (
    GiB,
    MemoryPlan,
    ModelSize,
    Offload,
    RequestShape,
    plan_of,
    request_peak,
    set_plan,
    usable_bytes,
)

TILING = "VAE tiling for this request"
ANNOTATORS = "annotators dropped from the GPU before generation"
TEXT_ENCODER = "text encoder sent back to RAM for this request"
_SIZE_ATTR = "_vace_model_size"
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GpuMemory:
    """One reading of the card: mem_get_info's free and total, and what torch's allocator holds."""

    free: int
    total: int
    reserved: int = 0  # torch.cuda.memory_reserved: this process's cached blocks count as used in `free`

    @property
    def usable(self) -> int:
        """Bytes this process's tensors may peak at: its own reservation and what is free, less the margin."""
        return usable_bytes(self.free + self.reserved, self.total)


@dataclasses.dataclass(frozen=True)
class RequestFit:
    fits: bool
    vae_tiling: bool
    offload_annotators: bool
    evict_text_encoder: bool
    peak: int  # with the fixes below
    usable: int
    fixes: tuple[str, ...] = ()

    def describe(self) -> str:
        figures = f"estimated peak {self.peak / GiB:.1f} GiB of {self.usable / GiB:.1f} GiB usable"
        if not self.fits:
            return f"does not fit even with {', '.join(self.fixes) or 'no fix available'}: {figures}"
        return f"fits with {', '.join(self.fixes)}: {figures}" if self.fixes else f"fits as is: {figures}"


def request_fit(usable: int, size: ModelSize, plan: MemoryPlan, shape: RequestShape,
                annotator_bytes: int = 0) -> RequestFit:
    """The cheapest set of fixes under which the request's estimated peak fits `usable` bytes.

    Fixes in order of cost: tiling (slower decode, ~6 s at 720p/81f), annotators (reloaded from disk by the
    next job that needs them), the resident text encoder (6.5-7.9 s back to RAM, then moved in again after
    the job). Annotators count only under all_on_gpu: the offloading plans drop them before generation
    anyway (server/worker/models.py). When nothing fits, the fit has every fix and `fits` False.
    """
    on_gpu = plan.offload is Offload.ALL_ON_GPU
    available = (
        (TILING, not plan.vae_tiling),
        (ANNOTATORS, on_gpu and annotator_bytes > 0),
        (TEXT_ENCODER, on_gpu and plan.text_encoder_resident),
    )
    options = [name for name, applies in available if applies]
    # Subsets in order of their most expensive fix, then of the cheaper ones: {}, {T}, {A}, {T,A}, {E}, ...
    subsets = sorted((c for n in range(len(options) + 1) for c in itertools.combinations(options, n)),
                     key=lambda c: sorted((options.index(f) for f in c), reverse=True))
    fit: RequestFit | None = None
    for fixes in subsets:
        fit = _with(fixes, usable, size, plan, shape, annotator_bytes if on_gpu else 0)
        if fit.fits:
            return fit
    assert fit is not None  # the empty subset is always tried
    return fit


def _with(fixes: tuple[str, ...], usable: int, size: ModelSize, plan: MemoryPlan, shape: RequestShape,
          annotator_bytes: int) -> RequestFit:
    tiled = plan.vae_tiling or TILING in fixes
    evict = TEXT_ENCODER in fixes
    drop = ANNOTATORS in fixes
    applied = dataclasses.replace(plan, vae_tiling=tiled,
                                  text_encoder_resident=plan.text_encoder_resident and not evict)
    peak = request_peak(size, applied, shape, annotator_bytes=0 if drop else annotator_bytes)
    return RequestFit(peak <= usable, tiled, drop, evict, peak, usable, fixes)


def request_fits(usable: int, size: ModelSize, plan: MemoryPlan, shape: RequestShape,
                 annotator_bytes: int = 0) -> bool:
    """Whether the request fits with some fix (server/worker/capacity.py builds its tables on this)."""
    return request_fit(usable, size, plan, shape, annotator_bytes).fits


def model_size_of(pipe: Any) -> ModelSize:
    """The loaded pipeline's ModelSize, counted once and kept on it."""
    size = getattr(pipe, _SIZE_ATTR, None)
    if size is None:
        size = ModelSize.from_pipeline(pipe)
        setattr(pipe, _SIZE_ATTR, size)
    return size


def read_gpu_memory(pipe: Any) -> GpuMemory | None:
    """The card the pipeline runs on, or None when it runs on the CPU (no GPU memory to plan)."""
    device = getattr(pipe, "_execution_device", None)
    if not isinstance(device, torch.device) or device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return GpuMemory(free, total, torch.cuda.memory_reserved(device))


@contextmanager
def request_memory(pipe: Any, fit: RequestFit | None) -> Iterator[None]:
    """Apply a fit's per-request changes to the pipeline for one job, and undo them afterwards (even on
    error): VAE tiling on, and the text encoder's residency lifted (pipelines/memory.py's
    settle_text_encoder moves it to RAM after the prompts; it comes back to the GPU here). The annotators
    are the worker's to drop (server/worker/models.py)."""
    if fit is None or not (fit.evict_text_encoder or fit.vae_tiling):
        yield
        return
    plan = plan_of(pipe)
    tile = fit.vae_tiling and not plan.vae_tiling
    evict = fit.evict_text_encoder and plan.text_encoder_resident
    home = next(pipe.text_encoder.parameters()).device if evict else None  # where it lives between jobs
    if tile:
        pipe.vae.enable_tiling()
    set_plan(pipe, dataclasses.replace(plan, vae_tiling=plan.vae_tiling or tile,
                                       text_encoder_resident=plan.text_encoder_resident and not evict))
    try:
        yield
    finally:
        if tile:
            pipe.vae.disable_tiling()
        if home is not None:
            plan = _bring_back(pipe, home, plan)
        set_plan(pipe, plan)


def _bring_back(pipe: Any, home: torch.device, plan: MemoryPlan) -> MemoryPlan:
    """The evicted text encoder back on the GPU; if the card has no room now (a job that failed out of
    memory may still hold its tensors), it stays in RAM and the plan swaps it per request from now on."""
    try:
        pipe.text_encoder.to(home)
        return plan
    except torch.cuda.OutOfMemoryError:
        pipe.text_encoder.to("cpu")  # whatever part had moved
        log.warning("No GPU memory to bring the text encoder back after a job: it stays in RAM from now on")
        reason = f"{plan.reason}; text encoder moved to RAM after a job (no room left)"
        return dataclasses.replace(plan, text_encoder_resident=False, reason=reason)
