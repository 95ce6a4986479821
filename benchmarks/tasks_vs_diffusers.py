"""Per task: the worker's code path against a plain diffusers call with the same inputs (tiny model).

For each task one 240p/81-frame job runs through `server.worker.runner.Executor.run` (input decoding,
conditioning, generation, trimming, H.264 encoding and storing, all included), and then the exact
GenerationRequest the worker built is replayed on a plain `WanVACEPipeline.from_pretrained(...)` (only the
pipeline call is timed). A ratio below 1 means the worker is faster than plain diffusers despite doing more.

    python -m benchmarks.tasks_vs_diffusers [--steps 2] [--tasks depth pose inpainting outpainting reframe]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import WanVACEPipeline  # noqa: E402
from PIL import Image  # noqa: E402

import server.worker.runner as execute  # noqa: E402
from pipelines.generate import GenerationRequest  # noqa: E402
from pipelines.loader import load_pipeline  # noqa: E402
from pipelines.tiny import ensure_tiny_pipeline  # noqa: E402
from preprocessors.video_io import write_mp4  # noqa: E402
from server.contract.endpoints import ENDPOINTS, stored_input  # noqa: E402
from server.files.local import LocalFileStore  # noqa: E402
from server.worker.fetch import Fetcher  # noqa: E402
from server.worker.runner import Executor, JobHooks  # noqa: E402
from tests.server.conftest import moving_bar_frames  # noqa: E402

APP = "fal-ai/wan-vace-14b"
TASKS = ("depth", "pose", "inpainting", "outpainting", "reframe")


@dataclass
class BenchJob:
    id: str
    endpoint: str
    input: dict[str, Any]
    public_base: str = "http://127.0.0.1"


def task_inputs(task: str, video: str, mask: str, steps: int) -> dict[str, Any]:
    base = {"prompt": "benchmark", "video_url": video, "resolution": "240p", "num_frames": 81,
            "num_inference_steps": steps, "seed": 0,
            "acceleration": "none"}  # plain diffusers runs every step: compare like with like
    if task == "inpainting":
        return base | {"mask_video_url": mask}
    if task == "outpainting":
        return base | {"expand_left": True, "expand_right": True}
    if task == "reframe":
        return base | {"aspect_ratio": "9:16", "match_input_num_frames": False,
                       "match_input_frames_per_second": False}
    return base


def plain_call(pipe: WanVACEPipeline, req: GenerationRequest) -> float:
    """The same request as a user of plain diffusers would make it."""
    started = time.perf_counter()
    with torch.inference_mode():
        pipe(
            prompt=req.prompt, negative_prompt=req.negative_prompt,
            video=torch.from_numpy(req.video).permute(0, 3, 1, 2)[None],
            mask=torch.from_numpy(req.mask)[None, :, None],
            reference_images=[Image.fromarray(r) for r in req.reference_images] or None,
            height=req.height, width=req.width, num_frames=req.num_frames,
            num_inference_steps=req.num_inference_steps, guidance_scale=req.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(req.seed), output_type="np",
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = ensure_tiny_pipeline(root / "models")
        write_mp4(moving_bar_frames(81, 416, 240), 16, root / "input.mp4")
        mask = np.zeros((81, 240, 416, 3), dtype=np.uint8)
        mask[:, 60:180, 140:280] = 255
        write_mp4(mask, 16, root / "mask.mp4")
        files = LocalFileStore(root / "files")
        # Inputs served as this server's own files, so no network is involved in either path.
        video_url = "http://127.0.0.1" + files.url(_copy(files, root / "input.mp4"))
        mask_url = "http://127.0.0.1" + files.url(_copy(files, root / "mask.mp4"))

        worker_pipe = load_pipeline(model_dir, device="cpu")
        plain_pipe = WanVACEPipeline.from_pretrained(model_dir, local_files_only=True)
        plain_pipe.set_progress_bar_config(disable=True)
        executor = Executor(worker_pipe, Fetcher(files, root / "work", 1 << 30, 30.0), files, root / "work")
        requests: list[GenerationRequest] = []
        real_generate = execute.generate

        def recording_generate(pipe: Any, req: GenerationRequest, **kwargs: Any) -> np.ndarray:
            requests.append(req)
            return real_generate(pipe, req, **kwargs)

        # One small call on each pipeline first, so neither side pays torch's first-call costs in the table.
        noise = np.random.default_rng(0).random((9, 48, 64, 3), dtype=np.float32)
        warm = GenerationRequest(prompt="warm-up", negative_prompt="", reference_images=[],
                                 width=64, height=48, video=noise,
                                 mask=np.ones((9, 48, 64), dtype=np.float32), num_inference_steps=1,
                                 guidance_scale=5.0, seed=0)
        real_generate(worker_pipe, warm)
        plain_call(plain_pipe, warm)
        execute.generate = recording_generate
        hooks = JobHooks(log=lambda message, level="INFO": None, should_cancel=lambda: False)
        print(f"{'task':12} {'worker s':>9} {'diffusers s':>12} {'ratio':>6}")
        for task in args.tasks:
            inputs = task_inputs(task, video_url, mask_url, args.steps)
            endpoint = ENDPOINTS[f"{APP}/{task}"]  # stored as the API stores it at submit
            stored = stored_input(endpoint, endpoint.input_model.model_validate(inputs), random_seed=0)
            job = BenchJob(f"bench-{task}", endpoint.id, stored)
            started = time.perf_counter()
            executor.run(job, hooks)  # type: ignore[arg-type]
            worker_s = time.perf_counter() - started
            plain_s = plain_call(plain_pipe, requests[-1])
            print(f"{task:12} {worker_s:9.2f} {plain_s:12.2f} {worker_s / plain_s:6.2f}", flush=True)


def _copy(files: LocalFileStore, source: Path) -> str:
    name = files.reserve(source.name)
    with files.writer(name) as out:
        out.write(source.read_bytes())
    return name


if __name__ == "__main__":
    main()
