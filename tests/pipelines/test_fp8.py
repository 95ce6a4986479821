"""--fp8 (pipelines/fp8.py): which layers, what it saves, when `auto` turns it on, real torchao quantization.

This machine has no GPU. torchao refuses to quantize unless the current GPU has FP8 tensor cores (an
assertion in torchao/float8/inference.py, `_check_hardware_support`), but the quantization itself and torch's
float8 matrix multiply run on a CPU: the `fp8_on_cpu` fixture lifts that one check, so the tests below
quantize with the real torchao code and compare real outputs. What cannot run here: the speed, the CUDA
kernels, and torchao's own check on a real GPU (`vace bench`'s fp8_* phases measure those).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from pipelines import configs, fp8
from pipelines.bench.fp8_phases import TINY_ERROR_SHAPE
from pipelines.bench.models import ModelSet, build_transformer, transformer_inputs
from pipelines.fp8 import Fp8Choice, Fp8Error, capability_reason, choose
from pipelines.memory import WAN_VACE_14B, GiB, MemoryPlan, Offload, choose_plan, phase_peaks, usable_bytes
from pipelines.tiny import make_tiny_pipeline
from server.settings import FP8_MODES

CONTEXT_RESERVE = GiB // 2  # as tests/pipelines/test_memory.py: what the CUDA context takes before loading
CPU = torch.device("cpu")


def _card(total_gib: float) -> tuple[int, int]:
    total = int(total_gib * GiB)
    return total - CONTEXT_RESERVE, total


@pytest.fixture
def fp8_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularities: None)


def _bench_tiny(seed: int = 0) -> nn.Module:
    """The benchmark's toy transformer (dim 32, FFN 64: every block linear is a multiple of 16) in bf16."""
    torch.manual_seed(seed)
    return build_transformer(ModelSet.choose(True).transformer, CPU, torch.bfloat16)


def _inputs() -> dict:
    return transformer_inputs(ModelSet.choose(True), TINY_ERROR_SHAPE, CPU, torch.bfloat16)


def _block_linears(transformer: nn.Module) -> set[str]:
    return {name for name, m in transformer.named_modules()
            if isinstance(m, nn.Linear) and name.startswith(("blocks.", "vace_blocks."))}


# ---------------------------------------------------------------- which layers, and the bytes they save


@pytest.fixture(scope="module")
def meta_14b() -> nn.Module:
    return configs.build_on_meta("transformer", configs.TRANSFORMER_14B)


def test_the_14b_quantizes_every_block_linear_and_keeps_embedders_and_head(meta_14b: nn.Module) -> None:
    names = fp8.quantizable_linears(meta_14b)
    assert set(names) == _block_linears(meta_14b) and len(names) == 489  # 40 x 10 + 8 x 11 + VACE proj_in
    left = {name for name, m in meta_14b.named_modules() if isinstance(m, nn.Linear)} - set(names)
    assert left == {"condition_embedder.time_embedder.linear_1", "condition_embedder.time_embedder.linear_2",
                    "condition_embedder.time_proj", "condition_embedder.text_embedder.linear_1",
                    "condition_embedder.text_embedder.linear_2", "proj_out"}
    share = sum(meta_14b.get_submodule(n).weight.numel() for n in names) / WAN_VACE_14B.transformer_params
    assert share == pytest.approx(0.986, abs=0.001)


def test_the_14b_weights_take_16_4_gib_in_fp8(meta_14b: nn.Module) -> None:
    assert fp8.weight_bytes(meta_14b) / GiB == pytest.approx(16.38, abs=0.01)  # 32.3 GiB in bf16
    assert fp8.bytes_per_param(meta_14b) == pytest.approx(fp8.WAN_VACE_14B_BYTES_PER_PARAM, abs=1e-4)


def test_the_tiny_test_models_linears_are_too_narrow_for_fp8() -> None:
    """The server's tiny model (dim 24, FFN 32) has block linears, but none with both sides a multiple of 16:
    torch's FP8 GEMM cannot run them, so none is listed (torchao would silently skip them too)."""
    transformer = make_tiny_pipeline().transformer
    assert _block_linears(transformer) and fp8.quantizable_linears(transformer) == []
    assert fp8.weight_bytes(transformer) == 2 * sum(p.numel() for p in transformer.parameters())


def test_the_bench_tiny_model_quantizes_exactly_its_block_linears() -> None:
    transformer = _bench_tiny()
    names = fp8.quantizable_linears(transformer)
    assert set(names) == _block_linears(transformer) and len(names) == 53  # 3 x 10 + 2 x 11 + proj_in


def test_the_memory_estimate_counts_fp8_weights() -> None:
    area, frames, bpp = 1280 * 720, 81, fp8.WAN_VACE_14B_BYTES_PER_PARAM
    bf16 = phase_peaks(Offload.ALL_ON_GPU, False, WAN_VACE_14B, area, frames)
    low = phase_peaks(Offload.ALL_ON_GPU, False, WAN_VACE_14B, area, frames, transformer_bytes_per_param=bpp)
    saved = int(WAN_VACE_14B.transformer_params * 2) - int(WAN_VACE_14B.transformer_params * bpp)
    assert {phase: bf16[phase] - low[phase] for phase in bf16} == dict.fromkeys(bf16, saved)
    assert saved / GiB == pytest.approx(15.9, abs=0.1)
    assert max(low.values()) / GiB == pytest.approx(39.87, abs=0.05)  # README: the VAE decode is the peak
    assert max(bf16.values()) > usable_bytes(*_card(48)) > max(low.values())
    group = Offload.GROUP_OFFLOAD
    low_group = phase_peaks(group, False, WAN_VACE_14B, area, frames, transformer_bytes_per_param=bpp)
    assert low_group["denoise"] < phase_peaks(group, False, WAN_VACE_14B, area, frames)["denoise"]


# ---------------------------------------------------------------- the decision


def _choose(card_gib: float, requested: str = "auto", unavailable: str | None = None,
            num_frames: int = 81) -> Fp8Choice:
    def plan_with(bpp: float) -> MemoryPlan:
        return choose_plan(*_card(card_gib), WAN_VACE_14B, num_frames=num_frames,
                           transformer_bytes_per_param=bpp)

    return choose(requested, unavailable, plan_with, fp8.WAN_VACE_14B_BYTES_PER_PARAM)


def test_auto_on_a_48_gb_card_runs_all_on_gpu_with_fp8() -> None:
    choice = _choose(48)
    assert choice.enabled and (choice.plan.offload, choice.plan.vae_tiling) == (Offload.ALL_ON_GPU, False)
    assert choice.reason == "auto: FP8 weights fit all_on_gpu where bf16 needs group_offload"
    assert "OOM" not in choice.plan.reason


def test_auto_on_an_80_gb_card_stays_bf16_at_720p_81f() -> None:
    choice = _choose(80)
    assert not choice.enabled and choice.plan.offload is Offload.ALL_ON_GPU
    assert "has not been measured faster end to end" in choice.reason


def test_auto_on_a_24_gb_card_stays_bf16_with_block_offload() -> None:
    """FP8 would not let anything faster than block offload fit there, so nothing unmeasured is turned on."""
    choice = _choose(24)
    assert not choice.enabled
    assert (choice.plan.offload, choice.plan.vae_tiling) == (Offload.GROUP_OFFLOAD, True)


def test_auto_lets_720p_241f_stay_on_an_80_gb_card() -> None:
    choice = _choose(80, num_frames=241)
    assert choice.enabled and choice.plan.offload is Offload.ALL_ON_GPU
    assert _choose(80, "off", num_frames=241).plan.offload is Offload.GROUP_OFFLOAD


def test_auto_where_fp8_cannot_run_is_bf16_with_the_reason() -> None:
    choice = _choose(48, unavailable="package torchao is not installed")
    assert not choice.enabled and choice.plan.offload is Offload.GROUP_OFFLOAD
    assert choice.reason == "auto: package torchao is not installed"


def test_on_and_off_are_obeyed() -> None:
    on = _choose(80, "on")
    assert on.enabled and on.plan.offload is Offload.ALL_ON_GPU and on.reason == "--fp8 on"
    assert _choose(24, "on").plan.offload is Offload.GROUP_OFFLOAD  # weights smaller, plan as it must be
    off = _choose(48, "off")
    assert not off.enabled and off.plan.offload is Offload.GROUP_OFFLOAD


def test_on_where_fp8_cannot_run_stops_the_start() -> None:
    with pytest.raises(Fp8Error, match="--fp8 on cannot be used: needs a newer GPU"):
        _choose(48, "on", unavailable="needs a newer GPU")


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="--fp8 must be one of auto, on, off"):
        fp8.parse_fp8("fp4")
    assert FP8_MODES == fp8.FP8_CHOICES  # server/settings.py's copy (the API process imports no torch)


# ---------------------------------------------------------------- availability


@pytest.mark.parametrize(("capability", "torchao", "expected"), [
    ((8, 0), "0.18.0", "compute capability 8.9 or newer (Ada, Hopper); this GPU is 8.0"),  # A100
    ((8, 6), "0.18.0", "this GPU is 8.6"),  # RTX 3090 / A6000
    ((8, 9), None, "package torchao is not installed"),  # RTX 4090 / L40S without torchao
    ((9, 0), "0.12.0", "torchao 0.12.0 is installed; FP8 here needs torchao >= 0.18"),
    ((9, 0), "0.18.0+cu130", None),  # H100
    ((8, 9), "0.18.1", None),
    ((10, 0), "0.18.0", None),  # Blackwell
])  # fmt: skip
def test_capability_and_package_reasons(capability: tuple[int, int], torchao: str | None,
                                        expected: str | None) -> None:
    reason = capability_reason(capability, lambda name: torchao if name == "torchao" else None)
    assert reason == expected if expected is None else expected in (reason or "")


def test_an_import_failure_is_a_reason() -> None:
    reason = capability_reason((9, 0), lambda name: "0.18.0", lambda: "torchao does not import: ABI")
    assert reason == "torchao does not import: ABI"


def test_a_cpu_has_no_fp8() -> None:
    assert fp8.unavailable_reason("cpu") == ("FP8 needs a CUDA GPU of compute capability 8.9 or newer "
                                             "(device is cpu)")
    assert fp8._import_error() is None  # torchao 0.18 imports with this torch (pyproject's bounds)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a CUDA driver")
def test_a_gpu_that_cannot_be_queried_is_a_reason_not_a_crash() -> None:
    """Under `auto` a failed check means bf16 (tests/pipelines/test_loader.py fakes a CUDA placement)."""
    reason = fp8.unavailable_reason("cuda:0") or ""
    assert reason.startswith("could not read the compute capability of cuda:0: RuntimeError")


# ---------------------------------------------------------------- real torchao quantization (on a CPU)


@pytest.mark.usefixtures("fp8_on_cpu")
def test_quantization_replaces_exactly_the_listed_weights_and_stays_close_to_bf16() -> None:
    transformer, x = _bench_tiny(), _inputs()
    with torch.inference_mode():
        reference = transformer(**x)[0].float()
    count = fp8.quantize_transformer(transformer, "cpu", keep_on_device=True)
    listed = set(fp8.quantizable_linears(transformer))
    assert count == len(listed) == 53
    for name, module in transformer.named_modules():
        if isinstance(module, nn.Linear):
            assert fp8.is_quantized(module) is (name in listed), name
            if name in listed:  # float8 e4m3 data with one fp32 scale per output row
                assert module.weight.qdata.dtype == torch.float8_e4m3fn
                assert module.weight.scale.shape == (module.out_features, 1)
            else:  # as loaded: bf16, or fp32 for the time embedder (diffusers' _keep_in_fp32_modules)
                assert module.weight.dtype in (torch.bfloat16, torch.float32)
    assert fp8.bytes_per_param(transformer) < 2.0
    with torch.inference_mode():
        out = transformer(**x)[0].float()
    rel_err = float((out - reference).norm() / reference.norm())
    # gpu_check P6 measured 2.4% at a toy model's output with the same row-wise scheme on an H100.
    assert torch.isfinite(out).all() and 0.005 < rel_err < 0.04, rel_err


@pytest.mark.usefixtures("fp8_on_cpu")
def test_fp8_blocks_run_under_block_offload_and_compile() -> None:
    """The two things that wrap the quantized blocks at load: diffusers' group-offload hooks (here without
    CUDA streams) and regional compile (dynamo tracing, eager backend): both give the same output."""
    x = _inputs()
    plain, offloaded, compiled = _bench_tiny(), _bench_tiny(), _bench_tiny()
    for model in (plain, offloaded, compiled):
        fp8.quantize_transformer(model, "cpu", keep_on_device=True)
    offloaded.enable_group_offload(onload_device=CPU, offload_device=CPU, offload_type="block_level",
                                   num_blocks_per_group=1, use_stream=False)
    compiled.compile_repeated_blocks(fullgraph=False, dynamic=False, backend="eager")
    with torch.inference_mode():
        expected = plain(**x)[0]
        torch.testing.assert_close(offloaded(**x)[0], expected, rtol=0, atol=0)
        torch.testing.assert_close(compiled(**x)[0], expected, rtol=0, atol=0)
    torch._dynamo.reset()


def test_quantization_refuses_weights_that_are_not_bf16() -> None:
    transformer = build_transformer(ModelSet.choose(True).transformer, CPU, torch.float32)
    with pytest.raises(Fp8Error, match=r"starts from bf16 weights; blocks\.0\.attn1\.to_q is torch.float32"):
        fp8.quantize_transformer(transformer, "cpu", keep_on_device=True)


# ---------------------------------------------------------------- the loader


def test_loader_refuses_fp8_on_a_cpu_before_reading_weights(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import loader

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights were read")

    monkeypatch.setattr(loader.AutoencoderKLWan, "from_pretrained", never)
    with pytest.raises(Fp8Error, match=r"--fp8 on cannot be used: FP8 needs a CUDA GPU .*\(device is cpu\)"):
        loader.load_pipeline(tiny_model_dir, device="cpu", fp8="on")
    with pytest.raises(ValueError, match="--fp8 must be one of"):
        loader.load_pipeline(tiny_model_dir, device="cpu", fp8="yes")


def test_loader_logs_the_choice_once(tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pipelines.loader import load_pipeline

    with caplog.at_level(logging.INFO, logger="pipelines.loader"):
        load_pipeline(tiny_model_dir, device="cpu")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FP8 transformer")]
    assert lines == ["FP8 transformer on cpu: off (auto: FP8 needs a CUDA GPU of compute capability 8.9 or "
                     "newer (device is cpu))"]


def test_loader_quantizes_before_placing_and_compiling(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Offload hooks must see the quantized weights and the compiled graphs must contain them."""
    from pipelines import loader

    order: list[str] = []
    real_fp8, real_plan = loader.apply_fp8, loader.apply_plan

    def traced_fp8(transformer: nn.Module, choice: Fp8Choice, device: str) -> int:
        order.append(f"fp8 {'on' if choice.enabled else 'off'}")
        return real_fp8(transformer, choice, device)

    def traced_plan(*args: object, **kwargs: object) -> object:
        order.append("place")
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(loader, "unavailable_reason", lambda device: None)  # as on an FP8 GPU
    monkeypatch.setattr(loader, "apply_fp8", traced_fp8)
    monkeypatch.setattr(loader, "apply_plan", traced_plan)
    monkeypatch.setattr(loader, "compile_blocks", lambda transformer: order.append("compile"))
    with caplog.at_level(logging.INFO, logger="pipelines.loader"):
        loader.load_pipeline(tiny_model_dir, device="cpu", fp8="on", compile="on")
    assert order == ["fp8 on", "place", "compile"]
    assert "FP8 transformer on cpu: on (--fp8 on); 0 block linears quantized" in caplog.text  # dim 24


def test_the_per_request_check_counts_the_plans_fp8_weights() -> None:
    """The plan carries its transformer's bytes per parameter, so each request on an FP8 worker is checked
    with FP8 weights: on an 80 GB card 720p/241f fits with FP8 and is refused in bf16."""
    from pipelines.fp8 import WAN_VACE_14B_BYTES_PER_PARAM
    from pipelines.memory import WAN_VACE_14B, RequestShape, choose_plan, usable_bytes
    from pipelines.request_memory import request_fit

    free, total = int(79.2 * GiB), 80 * GiB
    shape = RequestShape(1280 * 720, 241)
    fitted = {}
    for bytes_per_param in (2.0, WAN_VACE_14B_BYTES_PER_PARAM):
        plan = choose_plan(free, total, WAN_VACE_14B, transformer_bytes_per_param=bytes_per_param)
        assert plan.transformer_bytes_per_param == bytes_per_param
        fitted[bytes_per_param] = request_fit(usable_bytes(free, total), WAN_VACE_14B, plan, shape).fits
    assert fitted == {2.0: False, WAN_VACE_14B_BYTES_PER_PARAM: True}


def test_a_fast_mode_loras_own_layers_are_not_quantized() -> None:
    """peft wraps each adapted linear: its base layer is quantized, its low-rank lora_A/lora_B (switched per
    request, pipelines/fast_mode.py) stay bf16."""
    from peft import LoraConfig, inject_adapter_in_model

    transformer = _bench_tiny()
    before = fp8.quantizable_linears(transformer)
    config = LoraConfig(r=16, target_modules=["to_q", "to_k"])
    inject_adapter_in_model(config, transformer, adapter_name="fast")
    names = fp8.quantizable_linears(transformer)
    assert not any(".lora_" in name for name in names)
    wrapped = {name.removesuffix(".base_layer") for name in names if name.endswith(".base_layer")}
    assert wrapped and {name for name in names if not name.endswith(".base_layer")} | wrapped == set(before)
