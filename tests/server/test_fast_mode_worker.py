"""--fast-lora through the worker: Worker.load() installs the LoRA from Settings, a job's fields decide fast
mode and its logs say so; a file that does not fit ends the worker process's start (exit 3, state failed)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.loader import load_pipeline
from server.contract.endpoints import APP_ID
from server.jobs.factory import open_settings_job_store
from server.settings import Settings
from server.worker.loop import Worker
from server.worker.runner import Executor, JobHooks
from tests.pipelines.wan_lora_file import write_wan_lora
from tests.server.test_current_fields_worker import Sizes, clip
from tests.server.test_execute_equivalence import job

REPO = Path(__file__).resolve().parents[2]
DEPTH = f"{APP_ID}/depth"


def data_dir_with_tiny(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A data dir whose `--model tiny` is the session's tiny model (built once, not per test)."""
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    return data_dir


@pytest.fixture
def lora_file(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return write_wan_lora(tmp_path / "loras" / "distill.safetensors",
                          load_pipeline(tiny_model_dir, device="cpu").transformer)


@pytest.fixture
def fast_worker(tmp_path: Path, tiny_model_dir: Path, lora_file: Path) -> Iterator[tuple[Worker, Executor]]:
    settings = Settings(model="tiny", data_dir=data_dir_with_tiny(tmp_path, tiny_model_dir), device="cpu",
                        fast_lora=lora_file, compile="off")
    worker = Worker(settings, "fast-worker")
    executor = worker.load()
    executor.sizes = Sizes()
    yield worker, executor
    worker.stopping.set()


def frames_and_logs(executor: Executor, payload: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    logs: list[str] = []
    generated = executor.generate_frames(job(DEPTH, payload), JobHooks(logs.append, lambda: False))
    return generated.frames, logs


def test_a_job_runs_in_fast_mode_only_when_its_fields_ask(
    fast_worker: tuple[Worker, Executor], tiny_model_dir: Path, tmp_path: Path
) -> None:
    _, executor = fast_worker
    plain = Executor(load_pipeline(tiny_model_dir, device="cpu"), executor.fetcher, executor.files,
                     executor.work_dir, sizes=Sizes(), annotators=executor.annotators)
    video, _ = clip(tmp_path, 17, 16.0)
    base = {"prompt": "a bar", "video_url": video, "resolution": "240p", "num_frames": 17,
            "frames_per_second": 16, "acceleration": "regular"}
    fast, fast_logs = frames_and_logs(executor, base | {"num_inference_steps": 4, "guidance_scale": 1})
    assert ("fast mode: distillation LoRA distill.safetensors at strength 1, 4 steps, no CFG, every step "
            "computed (step cache off)") in fast_logs
    assert not any(line.startswith("step cache:") for line in fast_logs)
    assert sum(line.startswith("Denoising step") for line in fast_logs) == 4
    without, _ = frames_and_logs(plain, base | {"num_inference_steps": 4, "guidance_scale": 1})
    assert fast.shape == without.shape == (17, 32, 64, 3) and not np.array_equal(fast, without)

    ordinary = base | {"num_inference_steps": 3, "guidance_scale": 5}
    frames, logs = frames_and_logs(executor, ordinary)
    assert ("fast mode off: the distillation LoRA is used when num_inference_steps <= 8 and guidance_scale "
            "<= 1 (this request: 3 steps, guidance_scale 5)") in logs
    np.testing.assert_array_equal(frames, frames_and_logs(plain, ordinary)[0])


def test_a_lora_that_does_not_fit_stops_the_worker_process(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # A file made for 40 blocks, as a 14B LoRA is, on the 3-block tiny model.
    deeper = write_wan_lora(tmp_path / "deeper.safetensors", load_pipeline(tiny_model_dir, device="cpu")
                            .transformer, num_blocks=40)
    settings = Settings(model="tiny", data_dir=data_dir_with_tiny(tmp_path, tiny_model_dir), device="cpu",
                        fast_lora=deeper)
    done = subprocess.run([sys.executable, "-m", "server.worker", "--worker-id", "w-lora", "--settings",
                           settings.to_json()], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 3, done.stderr
    message = (f"--fast-lora {deeper}: does not fit this model: it adapts blocks.3.attn1.to_k, "
               "blocks.3.attn1.to_out.0, blocks.3.attn1.to_q and 367 more, which the transformer does not "
               "have")
    assert f"could not load model: {message}" in done.stderr
    store = open_settings_job_store(settings)
    try:
        (row,) = store.workers()
        assert (row["id"], row["state"], row["detail"]) == ("w-lora", "failed", message)
    finally:
        store.close()
