"""server/worker/progress.py: phase lines with durations, the published dict, ETA and throttling."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from server.worker.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Progress, Clock, list[str], list[dict[str, Any]]]:
    clock, lines, published = Clock(), [], []
    return Progress(published.append, lines.append, clock), clock, lines, published


def test_each_phase_logs_its_start_and_its_duration() -> None:
    progress, clock, lines, _ = make()
    with progress.phase("fetch", "video_url"):
        clock.now += 1.5
    progress.enter("vae_encode")
    clock.now += 2.0
    progress.enter("denoise")  # ends vae_encode
    clock.now += 0.25
    progress.close()
    assert lines == ["Fetching inputs started: video_url", "Fetching inputs done in 1.50s",
                     "VAE encode started", "VAE encode done in 2.00s", "Denoising started",
                     "Denoising done in 0.25s"]


def test_a_failing_phase_says_it_stopped() -> None:
    progress, clock, lines, _ = make()
    with pytest.raises(RuntimeError), progress.phase("annotate"):
        clock.now += 3
        raise RuntimeError("boom")
    assert lines[-1] == "Conditioning (annotators) stopped in 3.00s"


def test_fraction_never_goes_back_and_eta_follows_the_step_time() -> None:
    progress, clock, _, published = make()
    progress.enter("probe")
    first = progress.fraction
    progress.enter("fetch")  # a reference image fetched after the probe
    assert progress.fraction >= first
    progress.enter("vae_encode")
    clock.now += 4.0
    progress.enter("denoise")
    for step in range(1, 5):
        clock.now += 2.0
        progress.denoise_step(step, 10)
    snap = progress.snapshot()
    assert snap["phase"] == "denoise" and snap["step"] == 4 and snap["steps"] == 10
    # 6 steps left at 2 s, plus about 1.5x the VAE encode (4 s) for what follows.
    assert snap["eta_seconds"] == pytest.approx(6 * 2.0 + 6.0)
    fractions = [p["fraction"] for p in published]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1
    progress.finish()
    final = published[-1]
    assert final["phase"] == "done" and final["fraction"] == 1.0
    assert final["step_seconds"] == [2.0, 2.0, 2.0, 2.0]
    assert final["phase_seconds"]["vae_encode"] == 4.0


def test_inner_progress_is_throttled_but_phase_changes_are_not() -> None:
    progress, clock, _, published = make()
    progress.enter("annotate")
    for i in range(10):
        progress.inner(i, 10)  # same instant: at most one write
    assert len(published) == 1
    clock.now += 1.0
    progress.inner(5, 10)
    progress.enter("vae_encode")
    assert [p["phase"] for p in published] == ["annotate", "annotate", "vae_encode"]


def test_a_failing_store_never_fails_the_job() -> None:
    def broken(_: dict[str, Any]) -> None:
        raise OSError("database is locked")

    progress = Progress(broken, None)
    progress.enter("fetch")  # logged, not raised
    progress.finish()


def test_unknown_phase_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        Progress().enter("teleport")


def test_interpolation_in_batches_equals_one_call_and_reports_progress(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner interpolates in batches of frame pairs (progress inside the phase): the tiny RIFE network
    (real code, random weights) gives the same frames as one call over the whole video."""
    from preprocessors.annotators.tiny import build_tiny_rife
    from preprocessors.interpolation.rife import load_rife
    from server.worker.models import RequestModels
    from server.worker.runner import INTERPOLATION_BATCH, _interpolate
    from server.worker.types import JobHooks

    rife = load_rife(build_tiny_rife(tmp_path / "rife"), "cpu")
    frames = np.random.default_rng(0).integers(0, 256, (2 * INTERPOLATION_BATCH + 5, 32, 32, 3), np.uint8)
    whole = rife.interpolate(frames, 2)
    monkeypatch.setattr("server.worker.progress.PUBLISH_EVERY_S", -1.0)  # every report is written
    published: list[dict[str, Any]] = []
    progress = Progress(published.append, None, Clock())
    hooks = JobHooks(log=lambda _: None, should_cancel=lambda: False, progress=progress)
    progress.enter("interpolate")
    timeline = SimpleNamespace(factor=2, output_frames=len(whole))
    # With an interpolator loaded, the request and annotators (for loading one) are not consulted.
    batched = _interpolate(RequestModels(interpolator=rife), None, None, timeline, frames,  # type: ignore[arg-type]
                           hooks)
    assert np.array_equal(batched, whole)
    fractions = [p["fraction"] for p in published if p["phase"] == "interpolate"]
    assert len(set(fractions)) >= 3 and fractions == sorted(fractions)
