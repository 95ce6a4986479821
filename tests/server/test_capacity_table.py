"""The worker's capacity table (server/worker/capacity.py): the binary search over the 4k+1 grid, the sizes
`aspect_ratio: auto` can give, and the table built from a `fits` function."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from preprocessors.sizing import RESOLUTION_SIZES, keep_aspect_size
from server.contract.capacity import FRAME_GRID
from server.worker.capacity import auto_sizes, capacity_table, largest_fitting_frames, plan_fits


def counted(limit: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def fits(width: int, height: int, num_frames: int) -> bool:
        calls.append(num_frames)
        return num_frames <= limit

    return calls, fits


@pytest.mark.parametrize(("limit", "expected"), [
    (121, 121), (120, 117), (17, 17), (16, 0), (0, 0), (241, 241), (10_000, 241), (18, 17), (240, 237)])
def test_the_largest_grid_count_that_fits(limit: int, expected: int) -> None:
    calls, fits = counted(limit)
    assert largest_fitting_frames(lambda frames: fits(1280, 720, frames)) == expected  # type: ignore[operator]
    assert len(calls) <= math.ceil(math.log2(len(FRAME_GRID) + 1)), "a binary search: 6 calls for 57 counts"
    assert all((n - 1) % 4 == 0 and 17 <= n <= 241 for n in calls), "only the pipeline's 4k+1 counts"


def test_the_grid_is_fals_range_on_4k_plus_1() -> None:
    assert FRAME_GRID[0] == 17 and FRAME_GRID[-1] == 241 and len(FRAME_GRID) == 57
    assert all(b - a == 4 for a, b in zip(FRAME_GRID, FRAME_GRID[1:], strict=False))


def test_every_size_auto_can_give_is_listed() -> None:
    """Random inputs (both orientations, ratios up to past the clamp) only ever get listed sizes."""
    rng = random.Random(7)
    for resolution, (w, h) in RESOLUTION_SIZES["16:9"].items():
        sizes = auto_sizes(resolution)
        assert (w, h) in sizes and (h, w) in sizes
        assert all(sw * sh <= w * h and sw % 16 == 0 and sh % 16 == 0 for sw, sh in sizes)
        for _ in range(1500):
            iw, ih = rng.randint(16, 4000), rng.randint(16, 4000)
            assert keep_aspect_size(w * h, iw, ih) in sizes, (resolution, iw, ih)
        for iw in range(100, 700):  # every ratio of a 100-pixel-high input from 1 to 7
            assert keep_aspect_size(w * h, iw, 100) in sizes, (resolution, iw)


def test_the_table_covers_every_preset_and_aspect_ratio() -> None:
    budget = 832 * 480 * 81  # pixels x frames: 480p 16:9 holds exactly 81 frames

    def fits(width: int, height: int, num_frames: int) -> bool:
        return width * height * num_frames <= budget

    table = capacity_table(fits)
    assert set(table) == set(RESOLUTION_SIZES["16:9"])
    assert all(set(row) == {"16:9", "9:16", "1:1", "auto"} for row in table.values())
    assert table["480p"]["16:9"] == table["480p"]["9:16"] == 81
    assert table["480p"]["1:1"] == 137  # 480x480: 140 frames by area, 137 on the grid
    assert table["720p"]["16:9"] == 33  # 1280x720: 35 by area
    assert table["240p"]["16:9"] == 241
    # auto: the most permissive size the input can give, never less than the 16:9 preset it includes.
    smallest = min(auto_sizes("720p"), key=lambda s: s[0] * s[1])
    longest = largest_fitting_frames(lambda frames: fits(*smallest, frames))
    assert table["720p"]["auto"] == longest >= table["720p"]["16:9"]


def test_nothing_fits_and_everything_fits() -> None:
    assert all(v == 0 for row in capacity_table(lambda w, h, n: False).values() for v in row.values())
    assert all(v == 241 for row in capacity_table(lambda w, h, n: True).values() for v in row.values())


def test_a_cpu_worker_publishes_no_limit() -> None:
    import torch

    assert plan_fits(torch.nn.Linear(2, 2)) is None


@pytest.mark.parametrize(("card_gib", "free_gib"), [(80, 79.2), (48, 47.3), (24, 23.4)])
def test_the_14b_plans_hold_what_they_were_chosen_for(card_gib: int, free_gib: float) -> None:
    """With pipelines/memory.py's estimate for the 14B model: the plan chosen for 720p/81f holds at least
    81 frames at 720p; on an 80 GB card (all on the GPU) 720p at 241 frames does not fit even with every fix
    (76.5 GiB estimated against 72.8 usable), so it is the one size a submit can be refused for there."""
    from pipelines.memory import WAN_VACE_14B, GiB, choose_plan, usable_bytes
    from server.worker.capacity import estimate_fits

    free, total = int(free_gib * GiB), card_gib * GiB
    plan = choose_plan(free, total, WAN_VACE_14B)
    table = capacity_table(estimate_fits(plan, WAN_VACE_14B, usable_bytes(free, total)))
    assert table["720p"]["16:9"] >= 81 and table["720p"]["16:9"] == table["720p"]["9:16"]
    assert table["480p"]["16:9"] == 241
    assert all(table[r]["1:1"] >= table[r]["16:9"] and table[r]["auto"] >= table[r]["16:9"] for r in table)
    if card_gib == 80:
        assert plan.offload.value == "all_on_gpu" and 81 <= table["720p"]["16:9"] < 241


def test_a_worker_group_publishes_no_limit(tmp_path: Path) -> None:
    """A group's ranks each hold a share of the sequence: one GPU's estimate would refuse what it runs."""
    from server.settings import Settings
    from server.worker.group import GroupWorker

    settings = Settings(data_dir=tmp_path / "data", model="tiny", device="cuda", gpus_per_job=2)
    worker = GroupWorker(settings, "group-0", leader=None)  # type: ignore[arg-type]
    assert worker.capacity(None) is None  # type: ignore[arg-type]


def test_fits_counts_the_vae_tiling_a_worker_may_turn_on() -> None:
    """A plan without tiling whose untiled VAE decode does not fit still admits the request when tiling makes
    it fit: the worker may tile that one request, so refusing it at submit would not be certain."""
    from pipelines.memory import WAN_VACE_14B, MemoryPlan, Offload, phase_peaks
    from server.worker.capacity import estimate_fits

    area = 1280 * 720
    tiled = max(phase_peaks(Offload.ALL_ON_GPU, True, WAN_VACE_14B, area, 17).values())
    untiled = max(phase_peaks(Offload.ALL_ON_GPU, False, WAN_VACE_14B, area, 17).values())
    assert tiled < untiled
    fits = estimate_fits(MemoryPlan(Offload.ALL_ON_GPU, False), WAN_VACE_14B, tiled)
    assert fits(1280, 720, 17)
    assert not estimate_fits(MemoryPlan(Offload.ALL_ON_GPU, False), WAN_VACE_14B, tiled - 1)(1280, 720, 17)


def test_the_capacity_script_prints_a_row_per_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.capacity_table import main

    main(["80"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("80 GiB card: all_on_gpu")
    assert [line.split()[0] for line in lines[2:]] == list(RESOLUTION_SIZES["16:9"])
    assert lines[-1].split()[1:] == ["217", "217", "241", "225"]  # 720p: 16:9, 9:16, 1:1, auto


def test_a_worker_group_runs_no_single_gpu_memory_check_and_agrees_on_fp8() -> None:
    """Before: rank 0 ran one GPU's per-request check (refusing what the group holds) and applied its fixes
    to its own pipeline only; and `--fp8 auto` was decided per rank from each GPU's free memory."""
    from types import SimpleNamespace

    from server.worker.group import group_fp8, lead_executor

    leader = SimpleNamespace(generate=lambda *args, **kwargs: None)
    executor = SimpleNamespace(generate=None, gpu_memory=lambda pipe: "one GPU's reading")
    led = lead_executor(executor, leader)  # type: ignore[arg-type]
    assert led.generate is leader.generate and led.gpu_memory(object()) is None
    assert (group_fp8("auto"), group_fp8("on"), group_fp8("off")) == ("off", "on", "off")
