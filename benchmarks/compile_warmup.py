"""Seconds the compile warm-up takes cold and from the persistent kernel cache:
`python -m benchmarks.compile_warmup [--model tiny|PATH] [--device cpu|cuda] [--shapes 64x48x5]`, or on a GPU
without weights `python -m benchmarks.compile_warmup --full-size --device cuda --shapes 480p,720p` (the 14B
transformer with random weights built on the GPU, as `vace bench` does; ~35 GB).

Each run is a fresh process, as a restarted worker is: it loads the model, compiles the blocks with inductor
(pipelines/compile.py's settings) and runs pipelines/compile_warmup.py's warm-up with TORCHINDUCTOR_CACHE_DIR
pointing at one folder, empty for the first run. It prints the seconds of each run's warm-up per shape,
inductor's FX graph cache hits and misses, and then, per shape, the seconds of a whole 2-step request
(`--full-size`: of one more forward) with the number of graphs it compiled (0: the warm-up covered it).
Figures measured so far are in the README's "Compile" paragraph.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

_CHILD = "--child"


def _full_size_pipe(device: str) -> Any:
    """What warm_up() reads of a pipeline, around the 14B transformer with random weights (nothing else)."""
    import torch

    from pipelines.bench.models import build_transformer
    from pipelines.configs import TRANSFORMER_14B

    transformer = build_transformer(TRANSFORMER_14B, torch.device(device), torch.bfloat16)
    return SimpleNamespace(transformer=transformer, _execution_device=torch.device(device),
                           vae_scale_factor_temporal=4, vae_scale_factor_spatial=8)


def _request(shape: Any) -> Any:
    import numpy as np

    from pipelines.generate import GenerationRequest

    frames, size = shape.num_frames, (shape.height, shape.width)
    video = np.random.default_rng(0).random((frames, *size, 3), dtype=np.float32)
    return GenerationRequest("a cat", "blurry", video, np.ones((frames, *size), dtype=np.float32), [],
                             shape.width, shape.height, num_inference_steps=2, guidance_scale=5.0, seed=0,
                             acceleration="regular")


def child(model: str, device: str, shapes: str, data_dir: Path, full_size: bool) -> None:
    import torch
    from torch._dynamo.utils import counters

    from pipelines.compile import compile_blocks
    from pipelines.compile_warmup import denoise_inputs, parse_warmup, warm_up
    from pipelines.generate import generate
    from pipelines.loader import load_pipeline, resolve_model

    if full_size:
        pipe = _full_size_pipe(device)
    else:
        pipe = load_pipeline(resolve_model(model, data_dir), device=device, compile="off")
    compile_blocks(pipe.transformer)
    parsed = parse_warmup(shapes)
    seconds = warm_up(pipe, parsed)
    inductor = counters["inductor"]
    result: dict[str, Any] = {"seconds": seconds, "fxgraph_cache_hit": inductor["fxgraph_cache_hit"],
                              "fxgraph_cache_miss": inductor["fxgraph_cache_miss"], "after": {}}
    for shape in parsed:
        graphs = counters["stats"]["unique_graphs"]
        started = time.monotonic()
        if full_size:  # no VAE or text encoder: one more forward as the denoising loop calls it
            with torch.inference_mode():
                pipe.transformer(**denoise_inputs(pipe, shape))
        else:  # a whole request of that shape, CFG and the step cache included
            generate(pipe, _request(shape))
        if pipe._execution_device.type == "cuda":
            torch.cuda.synchronize(pipe._execution_device)
        new_graphs = counters["stats"]["unique_graphs"] - graphs
        result["after"][str(shape)] = [time.monotonic() - started, new_graphs]
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", default="64x48x5")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--full-size", action="store_true", help="the 14B transformer, random weights")
    parser.add_argument(_CHILD, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.device, args.shapes, args.data_dir, args.full_size)
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "compile_cache")}
        for run in range(1, args.runs + 1):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.compile_warmup", _CHILD, "--model", args.model, "--device",
                 args.device, "--shapes", args.shapes, "--data-dir", tmp,
                 *(["--full-size"] if args.full_size else [])],
                env=env, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            label = "cold cache" if run == 1 else "from the cache"
            timings = ", ".join(f"{shape} {s:.1f} s" for shape, s in result["seconds"].items())
            after = ", ".join(f"{shape} {s:.2f} s ({n} graphs compiled)"
                              for shape, (s, n) in result["after"].items())
            print(f"run {run} ({label}): warm-up {timings}; FX graph cache {result['fxgraph_cache_hit']} "
                  f"hits, {result['fxgraph_cache_miss']} misses; then {after}")


if __name__ == "__main__":
    main()
