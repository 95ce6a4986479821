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

    def spy(pipe: Any, settings: Settings) -> None:
        states.append(worker.store.workers()[0]["state"])
        real(pipe, settings)

    monkeypatch.setattr(loop, "configure_model_run", spy)
    try:
        executor = worker.load()
    finally:
        worker.stopping.set()
    assert states == ["loading"]
    assert worker.store.workers()[0]["state"] == "ready"
    from pipelines.cfg_truncation import configured_fraction

    assert configured_fraction(executor.pipe) == 0.25
