"""Per-request memory (pipelines/request_memory.py, pipelines/memory.py): the estimate against the H100's
measurements, the text encoder's residency, the cheapest fix for a request, and applying it to a pipeline.

All of the decision is arithmetic on numbers, so it runs here exactly as on a GPU; the measured figures
are read from the committed result files, not copied.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from diffusers import WanVACEPipeline

from pipelines import request_memory as request_memory_module
from pipelines.memory import (
    WAN_VACE_14B,
    GiB,
    MemoryPlan,
    Offload,
    RequestShape,
    choose_plan,
    encode_prompts,
    num_tokens,
    phase_peaks,
    plan_of,
    request_peak,
    set_plan,
    settle_text_encoder,
    step_cache_bytes,
    transformer_activation_bytes,
    usable_bytes,
    vae_activation_bytes,
)
from pipelines.request_memory import (
    ANNOTATORS,
    TEXT_ENCODER,
    TILING,
    GpuMemory,
    RequestFit,
    read_gpu_memory,
    request_fit,
    request_fits,
    request_memory,
)
from pipelines.tiny import make_tiny_pipeline

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
BENCH = json.loads((RESULTS / "bench_nvidia-h100-80gb-hbm3_2026-11-26T0637Z.json").read_text())["phases"]
CHECK = json.loads((RESULTS / "gpu_check_h100-80gb-hbm3_2026-11-26.json").read_text())["phases"]
P720, P480 = 1280 * 720, 832 * 480
H100 = GpuMemory(free=int(CHECK["P0_env"]["free_gib"] * GiB), total=int(CHECK["P0_env"]["total_gib"] * GiB))


def _card(total_gib: float) -> GpuMemory:
    total = int(total_gib * GiB)
    return GpuMemory(total - GiB // 2, total)


# ---------------------------------------------------------------- the estimate is not under the measurements


@pytest.mark.parametrize(("area", "frames", "measured"), [
    (P720, 81, BENCH["forward_720p_native"]["results"]["activation_peak_gib"]),
    (P480, 81, BENCH["forward_480p_native"]["results"]["activation_peak_gib"]),
    (P720, 241, CHECK["P6_reduced_241f_and_fp8"]["720p/241f"]["extrapolated_48blk_act_peak_gib"]),
])
def test_activations_are_not_under_the_h100(area: int, frames: int, measured: float) -> None:
    estimate = transformer_activation_bytes(WAN_VACE_14B, num_tokens(area, frames)) / GiB
    assert measured <= estimate <= measured * 1.05


def test_plan_peaks_are_not_under_the_h100() -> None:
    plans = BENCH["memory_plans"]["results"]
    for offload in (Offload.ALL_ON_GPU, Offload.GROUP_OFFLOAD):
        denoise = phase_peaks(offload, False, WAN_VACE_14B, P480, 81)["denoise"] / GiB
        assert plans[offload.value]["peak_gib"] <= denoise <= plans[offload.value]["peak_gib"] * 1.08


@pytest.mark.parametrize(("tiled", "key"), [(False, "decode_peak_gib"), (True, "decode_tiled_peak_gib")])
def test_vae_decode_is_not_under_the_h100(tiled: bool, key: str) -> None:
    # gpu_check measured the VAE alone: its weights plus the decode.
    measured = CHECK["P4_vae"][key]
    estimate = (WAN_VACE_14B.vae_params * 4 + vae_activation_bytes(P720, 81, tiled)) / GiB
    assert measured <= estimate <= measured * 1.25
    # The bench measured it beside the resident transformer: the all_on_gpu "vae" phase covers that.
    beside = BENCH["vae_720p"]["results"][key]
    assert beside <= phase_peaks(Offload.ALL_ON_GPU, tiled, WAN_VACE_14B, P720, 81)["vae"] / GiB


def test_request_size_terms() -> None:
    # Each reference image is one more latent frame of tokens.
    assert num_tokens(P720, 81, 2) == num_tokens(P720, 81) + 2 * 3600
    assert step_cache_bytes(WAN_VACE_14B, 75_600) / GiB == pytest.approx(1.44, abs=0.01)
    assert step_cache_bytes(WAN_VACE_14B, 75_600, cfg=False) * 2 == step_cache_bytes(WAN_VACE_14B, 75_600)
    plan = MemoryPlan(Offload.ALL_ON_GPU, False)
    base = request_peak(WAN_VACE_14B, plan, RequestShape(P720, 81, step_cache=False))
    cached = request_peak(WAN_VACE_14B, plan, RequestShape(P720, 81))
    assert cached - base == step_cache_bytes(WAN_VACE_14B, 75_600)
    held = request_peak(WAN_VACE_14B, plan, RequestShape(P720, 81), annotator_bytes=3 * GiB)
    assert held == cached + 3 * GiB
    assert request_peak(WAN_VACE_14B, plan, RequestShape(P720, 81, 1)) > cached


# ---------------------------------------------------------------- the text encoder's residency (item 7)


def test_an_80_gb_card_keeps_the_text_encoder_at_720p_81f() -> None:
    plan = choose_plan(H100.free, H100.total, WAN_VACE_14B)
    assert (plan.offload, plan.vae_tiling, plan.text_encoder_resident) == (Offload.ALL_ON_GPU, False, True)
    assert plan.reason.endswith("; text encoder resident on the GPU")
    # 32.3 + 10.6 + 0.5 GiB of weights and the 720p/81f peaks fit the H100's usable memory.
    assert request_peak(WAN_VACE_14B, plan, RequestShape()) <= H100.usable


@pytest.mark.parametrize("gib", [24, 47.99, 48])
def test_smaller_cards_do_not(gib: float) -> None:
    card = _card(gib)
    plan = choose_plan(card.free, card.total, WAN_VACE_14B)
    assert not plan.text_encoder_resident and plan.offload is not Offload.ALL_ON_GPU


def test_all_on_gpu_without_room_for_the_encoder_swaps_it() -> None:
    # A card where all_on_gpu fits only with the text encoder in RAM.
    plan = MemoryPlan(Offload.ALL_ON_GPU, False)
    need = request_peak(WAN_VACE_14B, plan, RequestShape())
    total = int((need + GiB) / (1 - 0.08))  # usable = total - 8% = need + 1 GiB
    chosen = choose_plan(total, total, WAN_VACE_14B, offload=Offload.ALL_ON_GPU)
    assert (chosen.vae_tiling, chosen.text_encoder_resident) == (False, False)
    assert chosen.reason.endswith("; text encoder kept in RAM, moved in for each encode")


# ---------------------------------------------------------------- the cheapest fix for one request (item 6)


RESIDENT = MemoryPlan(Offload.ALL_ON_GPU, False, text_encoder_resident=True)


def _peak(plan: MemoryPlan, shape: RequestShape, annotators: int = 0) -> int:
    return request_peak(WAN_VACE_14B, plan, shape, annotator_bytes=annotators)


def test_the_default_request_fits_the_h100_as_is() -> None:
    fit = request_fit(H100.usable, WAN_VACE_14B, RESIDENT, RequestShape())
    assert fit.fits and fit.fixes == () and not (fit.vae_tiling or fit.evict_text_encoder)
    assert fit.describe().startswith("fits as is: estimated peak")


def test_a_720p_241f_request_on_80_gb_is_refused_after_every_fix() -> None:
    fit = request_fit(H100.usable, WAN_VACE_14B, RESIDENT, RequestShape(P720, 241), 2 * GiB)
    assert not fit.fits
    assert fit.fixes == (TILING, ANNOTATORS, TEXT_ENCODER)
    assert fit.peak > H100.usable
    assert fit.describe().startswith("does not fit even with VAE tiling")


def test_a_longer_request_evicts_the_text_encoder_alone() -> None:
    # 161 frames: the denoising phase binds, which tiling cannot help, so only the eviction is taken.
    fit = request_fit(H100.usable, WAN_VACE_14B, RESIDENT, RequestShape(P720, 161))
    assert fit.fits and fit.fixes == (TEXT_ENCODER,) and fit.evict_text_encoder and not fit.vae_tiling


def test_fixes_are_taken_cheapest_first() -> None:
    shape, held = RequestShape(P720, 81), 4 * GiB
    tiled = MemoryPlan(Offload.ALL_ON_GPU, True, text_encoder_resident=True)
    # Just enough for the untiled decode: nothing to do.
    usable = _peak(RESIDENT, shape, held)
    assert request_fit(usable, WAN_VACE_14B, RESIDENT, shape, held).fixes == ()
    # A byte short: tiling alone fixes the decode, the cheapest.
    assert request_fit(usable - 1, WAN_VACE_14B, RESIDENT, shape, held).fixes == (TILING,)
    # Below the tiled peak: the annotators go too (they count in every phase after the prompts).
    usable = _peak(tiled, shape, held) - 1
    fit = request_fit(usable, WAN_VACE_14B, RESIDENT, shape, held)
    assert fit.fixes == (TILING, ANNOTATORS) and fit.offload_annotators and fit.peak <= usable
    # Below that: the text encoder is evicted, with tiling; the annotators stay (the eviction suffices).
    usable = fit.peak - 1
    fit = request_fit(usable, WAN_VACE_14B, RESIDENT, shape, held)
    assert fit.fixes == (TILING, TEXT_ENCODER) and fit.evict_text_encoder and not fit.offload_annotators
    assert fit.peak == _peak(dataclasses.replace(tiled, text_encoder_resident=False), shape, held) <= usable


def test_offloading_plans_only_tile() -> None:
    plan = MemoryPlan(Offload.GROUP_OFFLOAD, False)
    shape = RequestShape(P720, 81)
    need = _peak(plan, shape)
    fit = request_fit(need - 1, WAN_VACE_14B, plan, shape, annotator_bytes=8 * GiB)
    # Annotators are dropped anyway under offloading plans, so they neither count nor are a fix.
    assert fit.fits and fit.fixes == (TILING,)
    refused = request_fit(GiB, WAN_VACE_14B, plan, shape)
    assert not refused.fits and refused.fixes == (TILING,)


def test_request_fits_is_a_fits_callable_for_capacity_tables() -> None:
    from server.worker.capacity import largest_fitting_frames

    def fits(width: int, height: int, frames: int) -> bool:
        return request_fits(H100.usable, WAN_VACE_14B, RESIDENT, RequestShape(width * height, frames))

    longest = largest_fitting_frames(lambda frames: fits(1280, 720, frames))
    assert longest % 4 == 1 and 161 <= longest < 241 and longest == 197
    assert fits(1280, 720, longest) and not fits(1280, 720, longest + 4)
    assert largest_fitting_frames(lambda frames: fits(832, 480, frames)) == 241
    assert largest_fitting_frames(lambda frames: False) == 0


def test_usable_counts_this_process_reservation() -> None:
    # torch's cached blocks are "used" to mem_get_info but are this process's to reuse.
    card = GpuMemory(free=30 * GiB, total=80 * GiB, reserved=40 * GiB)
    assert card.usable == usable_bytes(70 * GiB, 80 * GiB)


# ---------------------------------------------------------------- applying a fit to the pipeline


@pytest.fixture(scope="module")
def tiny() -> WanVACEPipeline:
    return make_tiny_pipeline()


def test_read_gpu_memory_is_none_off_the_gpu(tiny: WanVACEPipeline) -> None:
    assert read_gpu_memory(tiny) is None
    assert read_gpu_memory(SimpleNamespace()) is None


def test_tiling_is_for_this_request_only(tiny: WanVACEPipeline) -> None:
    set_plan(tiny, MemoryPlan(Offload.ALL_ON_GPU, False))
    fit = request_fit(10**12, WAN_VACE_14B, plan_of(tiny), RequestShape())
    assert not fit.vae_tiling
    tiled = dataclasses.replace(fit, vae_tiling=True)
    with pytest.raises(RuntimeError, match="boom"), request_memory(tiny, tiled):
        assert tiny.vae.use_tiling and plan_of(tiny).vae_tiling
        raise RuntimeError("boom")
    assert not tiny.vae.use_tiling and plan_of(tiny) == MemoryPlan(Offload.ALL_ON_GPU, False)


class FakeEncoder:
    """A text encoder whose device moves are recorded (no GPU here)."""

    def __init__(self, device: str, room: bool = True) -> None:
        self.device = torch.device(device)
        self.moves: list[str] = []
        self.room = room  # False: moving to the GPU runs out of memory

    def parameters(self) -> Iterator[Any]:
        yield SimpleNamespace(device=self.device)

    def to(self, device: Any) -> FakeEncoder:
        if not self.room and torch.device(device).type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")
        self.device = torch.device(device)
        self.moves.append(str(self.device))
        return self


def test_an_evicted_encoder_leaves_after_the_prompts_and_comes_back_after_the_job() -> None:
    encoder = FakeEncoder("cuda:0")
    pipe = SimpleNamespace(text_encoder=encoder, vae=None)
    resident = MemoryPlan(Offload.ALL_ON_GPU, False, text_encoder_resident=True)
    set_plan(pipe, resident)
    settle_text_encoder(pipe)  # resident: stays
    assert encoder.moves == []
    fit = request_fit(H100.usable, WAN_VACE_14B, resident, RequestShape(P720, 161))
    with request_memory(pipe, fit):
        assert not plan_of(pipe).text_encoder_resident
        settle_text_encoder(pipe)  # what generate() runs after the prompts (cached or encoded)
        assert encoder.moves == ["cpu"]
        settle_text_encoder(pipe)  # already in RAM: no second move
    assert encoder.moves == ["cpu", "cuda:0"] and plan_of(pipe) == resident


def test_a_resident_encoder_is_not_moved_by_encoding(tiny: WanVACEPipeline,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Any] = []
    monkeypatch.setattr(WanVACEPipeline, "_execution_device", property(lambda self: torch.device("cuda:0")))
    monkeypatch.setattr(tiny.text_encoder, "to", lambda device: events.append(("to", device)))
    monkeypatch.setattr(tiny, "encode_prompt", lambda **kwargs: events.append(("encode",)) or ("e", "n"))
    encode_prompts(tiny, "a", "b", MemoryPlan(Offload.ALL_ON_GPU, False, text_encoder_resident=True))
    assert events == [("encode",)]


def test_no_room_to_bring_the_encoder_back_leaves_it_swapped_per_request() -> None:
    encoder = FakeEncoder("cuda:0")
    pipe = SimpleNamespace(text_encoder=encoder, vae=None)
    resident = MemoryPlan(Offload.ALL_ON_GPU, False, "plan", text_encoder_resident=True)
    set_plan(pipe, resident)
    fit = request_fit(H100.usable, WAN_VACE_14B, resident, RequestShape(P720, 161))
    with pytest.raises(torch.cuda.OutOfMemoryError), request_memory(pipe, fit):
        settle_text_encoder(pipe)
        encoder.room = False  # the failed job still holds the card
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    # The original error surfaces; the encoder is wholly in RAM and the plan swaps it for each encode.
    assert encoder.device == torch.device("cpu")
    reason = "plan; text encoder in RAM after a job (no room to bring it back)"
    assert plan_of(pipe) == dataclasses.replace(resident, text_encoder_resident=False, reason=reason)
    # Until the next job, which finds room and makes it resident again.
    encoder.room = True
    with request_memory(pipe, None):
        assert plan_of(pipe) == resident
    assert encoder.device == torch.device("cuda:0") and plan_of(pipe) == resident


def test_a_failed_move_back_never_masks_the_jobs_error_and_the_next_job_retries(
        tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real tiny pipeline; the one move back after the failed job fails (any error, not only CUDA's)."""
    home = next(tiny.text_encoder.parameters()).device
    resident = MemoryPlan(Offload.ALL_ON_GPU, False, "plan", text_encoder_resident=True)
    set_plan(tiny, resident)
    real_to = tiny.text_encoder.to
    events: list[str] = []
    failures = [RuntimeError("CUDA error: an illegal memory access was encountered")]

    def move(*args: Any, **kwargs: Any) -> Any:
        events.append("to")
        if failures:
            raise failures.pop()
        return real_to(*args, **kwargs)

    monkeypatch.setattr(tiny.text_encoder, "to", move)
    monkeypatch.setattr(request_memory_module.gc, "collect", lambda: events.append("collect") or 0)
    evict = RequestFit(True, False, False, True, 0, 0, (TEXT_ENCODER,))
    try:
        with pytest.raises(torch.cuda.OutOfMemoryError, match="the job's own"), request_memory(tiny, evict):
            raise torch.cuda.OutOfMemoryError("the job's own")
        # Freed what could be freed, then tried; the plan says what is true: not resident, in RAM.
        assert events[:2] == ["collect", "to"] and not failures
        assert not plan_of(tiny).text_encoder_resident
        assert all(p.device.type == "cpu" for p in tiny.text_encoder.parameters())
        # The next job (a fit reckoned with the encoder in RAM) brings it back first, keeps it out of the way
        # during its own work as its fit assumed, and leaves it resident.
        fits = RequestFit(True, False, False, False, 0, 0)
        with request_memory(tiny, fits):
            assert not plan_of(tiny).text_encoder_resident
        assert plan_of(tiny) == resident
        assert next(tiny.text_encoder.parameters()).device == home
        # Resident again: later jobs pay nothing.
        events.clear()
        with request_memory(tiny, fits):
            assert plan_of(tiny) == resident
        assert events == []
    finally:
        set_plan(tiny, MemoryPlan(Offload.ALL_ON_GPU, False))
