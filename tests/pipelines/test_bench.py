"""`vace bench`: the --tiny run's JSON, the runner's budget and failure rules, the job-time projection."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.bench import report
from pipelines.bench.runner import ERROR, OK, SKIPPED, Phase, Runner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    """One `python -m pipelines.bench --tiny` run in a fresh process, as the GPU machine starts it."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "pipelines.bench", "--tiny", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("bench_tiny-cpu_*.json")
    return json.loads(path.read_text()), path, proc.stdout


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    return [n for v in value for n in _numbers(v)]


def _seconds(value: Any) -> list[float]:
    """Every timing figure (keys ending in _s, and the attention probe's "s"), wherever it is nested."""
    if isinstance(value, dict):
        found = [float(v) for k, v in value.items() if (k.endswith("_s") or k == "s")
                 and isinstance(v, int | float) and k not in ("estimate_s", "budget_s")]
        return found + [n for v in value.values() for n in _seconds(v)]
    if isinstance(value, list):
        return [n for v in value for n in _seconds(v)]
    return []


def test_tiny_run_records_where_and_how_it_ran(tiny_run: tuple[dict[str, Any], Path, str]) -> None:
    record, _, _ = tiny_run
    assert record["kind"] == "vace-bench" and record["tiny"] is True
    assert record["command"].startswith("python3 -m pipelines.bench --tiny --out ")
    env = record["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["packages"]["diffusers"].startswith("0.42")
    assert "fp8" not in record["not_built"]  # it has phases of its own (tests/pipelines/test_bench_fp8.py)
    assert record["shapes"]["720p"]["tokens"] > record["shapes"]["480p"]["tokens"] > 0
    assert 0 < record["elapsed_s"] < record["budget_s"] == 270


def test_tiny_run_runs_every_phase_it_can(tiny_run: tuple[dict[str, Any], Path, str]) -> None:
    phases = tiny_run[0]["phases"]
    ran = {name for name, p in phases.items() if p["status"] == OK}
    assert ran == {"sdpa_probe", "attention_auto", "build", "forward_720p_native", "forward_480p_native",
                   "vae_720p", "compile", "memory_plans"}, {n: p.get("error") for n, p in phases.items()}
    for name in ("forward_720p_cudnn", "forward_480p_flash3", "forward_720p_sage"):
        assert phases[name]["status"] == SKIPPED and "needs a CUDA GPU" in phases[name]["reason"]
    fp8_phases = [name for name in phases if name.startswith("fp8_")]
    assert fp8_phases == ["fp8_build", "fp8_error", "fp8_forward_720p", "fp8_forward_480p", "fp8_compile",
                          "fp8_memory"]
    for name in fp8_phases:
        assert phases[name] == {"estimate_s": phases[name]["estimate_s"], "status": SKIPPED,
                                "reason": "unavailable: FP8 needs a CUDA GPU of compute capability 8.9 or "
                                          "newer (device is cpu)"}
    for name in ran:
        figures = _numbers(phases[name]["results"]) + [phases[name]["wall_s"]]
        assert all(math.isfinite(n) and n >= 0 for n in figures), name
        seconds = _seconds(phases[name]["results"])
        assert all(n > 0 for n in seconds), (name, seconds)
    assert len(_seconds(phases)) > 20
    assert phases["attention_auto"]["results"]["choice"] == "native"
    forward = phases["forward_480p_native"]["results"]
    assert forward["forward_s"] > 0 and forward["output_finite"] is True
    assert phases["build"]["results"]["fp32_params"] > 0  # _keep_in_fp32_modules stayed fp32
    vae = phases["vae_720p"]["results"]
    assert min(vae["encode_s"], vae["encode_tiled_s"], vae["decode_s"], vae["decode_tiled_s"]) > 0
    assert vae["decode_finite"] and vae["decode_tiled_finite"]
    compiled = phases["compile"]["results"]
    assert compiled["backend"] == "native" and compiled["compiled_forward_s"] > 0
    plans = phases["memory_plans"]["results"]
    assert plans["all_on_gpu"]["forward_s"] > 0 and "CUDA" in plans["group_offload"]["skipped"]
    assert "sdpa_default" in phases["sdpa_probe"]["results"]["480p"]


def test_tiny_run_projects_job_times_from_its_forwards(tiny_run: tuple[dict[str, Any], Path, str]) -> None:
    record, path, stdout = tiny_run
    modes = record["projections"]["modes"]
    assert set(modes) == {"native", "native+compile", "all_on_gpu/native"}
    vae = record["phases"]["vae_720p"]["results"]
    vae_720 = 2 * vae["encode_s"] + vae["decode_s"]
    for mode, rows in modes.items():
        for row in rows.values():
            assert row["includes_vae"], mode
            assert row["forwards_s"] == pytest.approx(60 * row["forward_s"], abs=0.01)
            assert row["job_s"] == pytest.approx(row["forwards_s"] + row["vae_s"], abs=0.02)
    native = modes["native"]
    assert native["720p"]["forward_s"] == record["phases"]["forward_720p_native"]["results"]["forward_s"]
    assert native["720p"]["vae_s"] == pytest.approx(vae_720, abs=0.01)
    ratio = (32 * 48) / (48 * 64)  # tiny 480p and 720p frame sizes
    assert native["480p"]["vae_s"] == pytest.approx(vae_720 * ratio, abs=0.01)
    table = path.with_suffix(".txt").read_text()
    assert table.strip() in stdout and "native+compile" in table and "skipped: forward_720p_cudnn" in table


def _runner(tmp_path: Path, now: list[float], budget: float = 100.0) -> Runner:
    return Runner(path=tmp_path / "r.json", budget_s=budget, started=0.0, record={}, clock=lambda: now[0],
                  log=lambda line: None)


def test_phase_past_the_budget_is_skipped_not_run(tmp_path: Path) -> None:
    now = [60.0]
    runner = _runner(tmp_path, now)
    runner.run(Phase("fits", 40, lambda: {"x": 1.0}))
    runner.run(Phase("too_long", 41, lambda: pytest.fail("must not run")))
    saved = json.loads((tmp_path / "r.json").read_text())["phases"]
    assert saved["fits"]["status"] == OK and saved["fits"]["results"] == {"x": 1.0}
    assert saved["too_long"]["status"] == SKIPPED
    assert "60s elapsed + 41s estimate > 100s" in saved["too_long"]["reason"]


def test_a_failing_phase_is_recorded_and_the_next_runs(tmp_path: Path) -> None:
    now = [0.0]
    runner = _runner(tmp_path, now)
    cleaned: list[int] = []
    runner.cleanup = lambda: cleaned.append(1)

    def oom() -> dict[str, Any]:
        now[0] += 5
        raise MemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def after() -> dict[str, Any]:
        # The JSON on disk already holds the failed phase: a run killed now keeps it.
        on_disk = json.loads((tmp_path / "r.json").read_text())["phases"]
        assert on_disk["fails"]["status"] == ERROR
        return {"ok": True}

    runner.run(Phase("fails", 10, oom))
    runner.run(Phase("later", 10, after))
    runner.run(Phase("dependent", 1, lambda: pytest.fail("must not run"), requires=("fails",)))
    saved = json.loads((tmp_path / "r.json").read_text())["phases"]
    assert saved["fails"]["error"] == "MemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert saved["fails"]["wall_s"] == 5.0 and saved["later"]["status"] == OK and cleaned == [1, 1]
    assert saved["dependent"]["status"] == SKIPPED and "needs phase fails" in saved["dependent"]["reason"]


def test_unavailable_and_deselected_phases_say_why(tmp_path: Path) -> None:
    runner = _runner(tmp_path, [0.0])
    runner.skip = ("compile",)
    runner.run(Phase("forward_720p_flash3", 1, lambda: {}, unavailable="unavailable: not installed"))
    runner.run(Phase("compile", 1, lambda: {}))
    phases = runner.record["phases"]
    assert phases["forward_720p_flash3"]["reason"] == "unavailable: not installed"
    assert phases["compile"]["reason"] == "skipped on request (--skip)"


def test_non_finite_figures_are_written_as_null(tmp_path: Path) -> None:
    runner = _runner(tmp_path, [0.0])
    runner.run(Phase("p", 1, lambda: {"speedup": float("nan"), "s": [1.0, float("inf")]}))
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["phases"]["p"]["results"] == {"speedup": None, "s": [1.0, None]}


def test_projection_uses_tiled_decode_for_group_offload() -> None:
    record = {
        "shapes": {"480p": {"height": 480, "width": 832}, "720p": {"height": 720, "width": 1280}},
        "phases": {
            "vae_720p": {"status": OK, "results": {"encode_s": 4.0, "encode_tiled_s": 5.0, "decode_s": 8.0,
                                                   "decode_tiled_s": 13.0}},
            "forward_720p_cudnn": {"status": OK, "results": {"forward_s": 16.0, "peak_gib": 47.0}},
            "forward_480p_cudnn": {"status": ERROR, "error": "OutOfMemoryError"},
            "memory_plans": {"status": OK, "results": {"group_offload": {
                "shape": "480p", "backend": "cudnn", "forward_s": 5.0, "peak_gib": 8.0}}},
        },
    }
    modes = report.projections(record)["modes"]
    assert modes["cudnn"] == {"720p": {"forward_s": 16.0, "forwards_s": 960.0, "vae_s": 16.0,
                                       "job_s": 976.0, "includes_vae": True, "peak_gib": 47.0,
                                       "acceleration_job_s": {"none": 976.0, "regular": 496.0,
                                                              "fast": 80.0}}}
    tiled_480p = (2 * 5.0 + 13.0) * 480 * 832 / (720 * 1280)
    assert modes["group_offload/cudnn"]["480p"]["vae_s"] == pytest.approx(tiled_480p, abs=0.01)
    assert "errors: forward_480p_cudnn (OutOfMemoryError)" in report.table(record)


def test_projection_without_vae_says_so() -> None:
    record = {"shapes": {}, "phases": {"forward_720p_native": {"status": OK, "results": {"forward_s": 2.0}}}}
    row = report.projections(record)["modes"]["native"]["720p"]
    assert row == {"forward_s": 2.0, "forwards_s": 120.0, "vae_s": None, "job_s": 120.0,
                   "includes_vae": False, "peak_gib": None,
                   "acceleration_job_s": {"none": 120.0, "regular": 60.0, "fast": 8.0}}


def test_the_table_marks_the_issues_targets() -> None:
    record = {"shapes": {}, "phases": {"forward_480p_native": {"status": OK, "results": {"forward_s": 2.0}},
                                       "forward_720p_native": {"status": OK, "results": {"forward_s": 6.0}}}}
    lines = report.table(record).splitlines()
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[lines.index(next(
        line for line in lines if line.startswith("Per acceleration"))) + 2:] if line.startswith("native")}
    assert rows[("native", "480p")] == ["120.0", "60.0*", "8.0"]  # regular: 75 s target at 480p
    assert rows[("native", "720p")] == ["360.0*", "180.0*", "24.0*"]


def test_vace_bench_is_the_same_run(tmp_path: Path) -> None:
    from server.cli import main

    assert main(["bench", "--tiny", "--out", str(tmp_path), "--only", "build"]) == 0
    (path,) = tmp_path.glob("bench_tiny-cpu_*.json")
    record = json.loads(path.read_text())
    assert record["command"] == f"vace bench --tiny --out {tmp_path} --only build"
    assert record["phases"]["build"]["status"] == OK
    assert record["phases"]["vae_720p"]["reason"] == "not selected (--only)"
