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
import gc
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
_STRANDED_ATTR = "_vace_stranded_text_encoder"  # a _Stranded while a resident encoder is stuck in RAM
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
    are the worker's to drop (server/worker/models.py).

    A resident encoder that could not come back after an earlier job (see _bring_back) is moved back first.
    The fit was then reckoned with it in RAM, so this job still sends it to RAM after the prompts."""
    restored = _restore_stranded(pipe)
    evict_stranded = restored and fit is not None
    if not evict_stranded and (fit is None or not (fit.evict_text_encoder or fit.vae_tiling)):
        yield
        return
    assert fit is not None
    plan = plan_of(pipe)
    tile = fit.vae_tiling and not plan.vae_tiling
    evict = evict_stranded or (fit.evict_text_encoder and plan.text_encoder_resident)
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


@dataclasses.dataclass(frozen=True)
class _Stranded:
    """A resident text encoder left in RAM by a failed move back: where it belongs, and the plan's reason."""

    home: torch.device
    reason: str


def _bring_back(pipe: Any, home: torch.device, plan: MemoryPlan) -> MemoryPlan:
    """The evicted text encoder back on the GPU; returns the plan that says where it now is.

    Runs in a `finally`: after a job that failed (out of memory, say) its traceback may still hold the job's
    tensors, so the card may have no room. Any error here is logged, never raised, so it cannot replace the
    job's own; the encoder then stays in RAM, the plan swaps it per encode, and the next job's
    request_memory tries again (_restore_stranded), so one bad job does not demote it for good."""
    if _move_text_encoder(pipe, home):
        return plan
    log.warning("Could not bring the text encoder back to the GPU after a job: it stays in RAM until the "
                "next job moves it back")
    setattr(pipe, _STRANDED_ATTR, _Stranded(home, plan.reason))
    reason = f"{plan.reason}; text encoder in RAM after a job (no room to bring it back)"
    return dataclasses.replace(plan, text_encoder_resident=False, reason=reason)


def _restore_stranded(pipe: Any) -> bool:
    """Move a stranded text encoder back before a job (nothing to do, and free, in the usual case); True when
    it came back and the plan says resident again."""
    stranded: _Stranded | None = getattr(pipe, _STRANDED_ATTR, None)
    if stranded is None or not _move_text_encoder(pipe, stranded.home):
        return False
    delattr(pipe, _STRANDED_ATTR)
    set_plan(pipe, dataclasses.replace(plan_of(pipe), text_encoder_resident=True, reason=stranded.reason))
    log.info("Text encoder back on the GPU: resident again")
    return True


def _move_text_encoder(pipe: Any, device: torch.device) -> bool:
    """Move the text encoder to `device` after freeing what can be freed; False, with it wholly in RAM, if
    that failed for any reason (an exception here must not mask a job's own)."""
    gc.collect()  # tensors only cycles still hold
    if device.type == "cuda":
        torch.cuda.empty_cache()  # cached blocks of other sizes, so one large allocation can find room
    try:
        pipe.text_encoder.to(device)
        return True
    except Exception:
        log.warning("Moving the text encoder to %s failed", device, exc_info=True)
    try:
        pipe.text_encoder.to("cpu")  # whatever part had moved, so the plan's "in RAM" is true
    except Exception:
        log.exception("Moving the text encoder back to RAM failed too")
    return False
