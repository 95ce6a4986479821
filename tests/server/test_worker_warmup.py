"""The worker configures its loaded model (CFG truncation, compile warm-up) before it reports ready."""

from pathlib import Path
from typing import Any

import pytest

import server.worker.loop as loop
from server.settings import Settings


def test_model_is_configured_while_the_worker_is_still_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = loop.Worker(Settings(data_dir=tmp_path, model="tiny", device="cpu", compile_warmup="32x32x5",
                                  cfg_truncation=0.25), "w-warm")
    states: list[str] = []
    real = loop.configure_model_run

    def spy(pipe: Any, settings: Settings, warmup: Any) -> None:
        states.append(worker.store.workers()[0]["state"])
        real(pipe, settings, warmup)

    monkeypatch.setattr(loop, "configure_model_run", spy)
    try:
        executor = worker.load()
    finally:
        worker.stopping.set()
    assert states == ["loading"]
    assert worker.store.workers()[0]["state"] == "ready"
    from pipelines.cfg_truncation import configured_fraction

    assert configured_fraction(executor.pipe) == 0.25


def test_a_bad_warm_up_shape_stops_the_start_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the shapes were parsed after the model had loaded (minutes for the 14B), on every worker."""
    import pipelines.loader

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipelines.loader, "load_pipeline", never)
    worker = loop.Worker(Settings(data_dir=tmp_path, model="tiny", device="cpu", compile_warmup="1000p"),
                         "w-bad")
    try:
        with pytest.raises(ValueError, match="--compile-warmup: '1000p'"):
            worker.load()
    finally:
        worker.stopping.set()
