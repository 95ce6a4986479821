"""`vace bench`'s fp8_* phases run end to end on the benchmark's toy model on a CPU (torchao's GPU check
lifted, as in tests/pipelines/test_fp8.py), so the GPU session runs code that has run before."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch

from pipelines.bench import fp8_phases, report
from pipelines.bench.models import ModelSet
from pipelines.bench.phases import Bench
from pipelines.bench.runner import OK, Runner


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bench:
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularities: None)
    runner = Runner(path=tmp_path / "bench.json", budget_s=600, started=time.monotonic(), record={},
                    log=lambda line: None,
                    after_phase=lambda rec: rec.update(projections=report.projections(rec)))
    return Bench(models=ModelSet.choose(True), device=torch.device("cpu"), dtype=torch.bfloat16,
                 compile_shape="720p", runner=runner, log=lambda line: None)


def test_fp8_phases_run_and_record_their_figures(bench: Bench) -> None:
    torch.manual_seed(0)
    for phase in fp8_phases.plan(bench):  # unavailable on a CPU: run them anyway
        bench.runner.run(dataclasses.replace(phase, unavailable=None))
    torch._dynamo.reset()
    phases = bench.runner.record["phases"]
    assert {name: p["status"] for name, p in phases.items()} == dict.fromkeys(phases, OK), {
        name: p.get("error") for name, p in phases.items()}
    built = phases["fp8_build"]["results"]
    assert built["quantized_linears"] == built["linears_listed"] == 53 and built["all_listed_are_fp8"]
    assert 1.0 < built["bytes_per_param"] < 2.0  # 1.0145 for the 14B; the toy's embedders weigh more
    assert 0.005 < phases["fp8_error"]["results"]["rel_err_vs_bf16"] < 0.04
    for label in ("480p", "720p"):
        forward = phases[f"fp8_forward_{label}"]["results"]
        assert forward["forward_s"] > 0 and forward["output_finite"] and forward["fp8"] is True
    compiled = phases["fp8_compile"]["results"]
    assert compiled["compiled_forward_s"] > 0 and compiled["eager_forward_s"] > 0
    assert compiled["output_finite"]
    memory = phases["fp8_memory"]["results"]
    assert memory["plan"] == "all_on_gpu" and memory["forward_s"] > 0 and memory["peak_gib"] is None  # CPU
    assert memory["request_estimate_gib"] > memory["denoise_estimate_gib"] > 0
    modes = bench.runner.record["projections"]["modes"]
    assert set(modes) == {"fp8/native", "fp8/native+compile", "all_on_gpu/fp8/native"}
    assert modes["fp8/native"]["720p"]["forwards_s"] == pytest.approx(
        60 * phases["fp8_forward_720p"]["results"]["forward_s"], abs=0.01)
