"""Seconds the compile warm-up takes cold and from the persistent kernel cache:
`python -m benchmarks.compile_warmup [--model tiny|PATH] [--device cpu|cuda] [--shapes 64x48x5]`.

Each run is a fresh process, as a restarted worker is: it loads the model, compiles the blocks with inductor
(pipelines/compile.py's settings) and runs pipelines/compile_warmup.py's warm-up with TORCHINDUCTOR_CACHE_DIR
pointing at one folder, empty for the first run. It prints the seconds of each run's warm-up per shape and
inductor's FX graph cache hits and misses. Figures measured so far are in the README's "Compile" paragraph.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = "--child"


def child(model: str, device: str, shapes: str, data_dir: Path) -> None:
    from torch._dynamo.utils import counters

    from pipelines.compile import compile_blocks
    from pipelines.compile_warmup import parse_warmup, warm_up
    from pipelines.loader import load_pipeline, resolve_model

    pipe = load_pipeline(resolve_model(model, data_dir), device=device, compile="off")
    compile_blocks(pipe.transformer)
    seconds = warm_up(pipe, parse_warmup(shapes))
    inductor = counters["inductor"]
    print(json.dumps({"seconds": seconds, "fxgraph_cache_hit": inductor["fxgraph_cache_hit"],
                      "fxgraph_cache_miss": inductor["fxgraph_cache_miss"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", default="64x48x5")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(_CHILD, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.device, args.shapes, args.data_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "compile_cache")}
        for run in range(1, args.runs + 1):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.compile_warmup", _CHILD, "--model", args.model, "--device",
                 args.device, "--shapes", args.shapes, "--data-dir", tmp],
                env=env, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            label = "cold cache" if run == 1 else "from the cache"
            timings = ", ".join(f"{shape} {s:.1f} s" for shape, s in result["seconds"].items())
            print(f"run {run} ({label}): {timings}; FX graph cache {result['fxgraph_cache_hit']} hits, "
                  f"{result['fxgraph_cache_miss']} misses")


if __name__ == "__main__":
    main()
