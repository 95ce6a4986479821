"""Options and the run of `vace bench` / `python -m pipelines.bench` (argparse only at import: no torch)."""

from __future__ import annotations

import argparse
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("benchmarks") / "results"
DESCRIPTION = ("Time the Wan2.1 VACE 14B transformer (random weights) and VAE on this GPU, per attention "
               "backend, with regional compile, memory plans and FP8; write JSON and a projected job-time "
               "table.")
DEFAULT_BUDGET_S = 270.0


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--tiny", action="store_true",
                        help="toy-sized model on the CPU: the same phases in seconds (a smoke test)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"skip any phase whose estimate would pass this many seconds since start "
                             f"(default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for the JSON result and the printed table (default {DEFAULT_OUT})")
    parser.add_argument("--device", default=None,
                        help="cuda, cuda:1 or cpu (default: cuda when available; cpu with --tiny)")
    parser.add_argument("--compile-shape", choices=("480p", "720p"), default="720p",
                        help="the one shape regional compile is timed at (default 720p)")
    parser.add_argument("--only", action="append", default=[],
                        help="run only phases whose name starts with this (repeatable), e.g. forward_720p")
    parser.add_argument("--skip", action="append", default=[],
                        help="skip phases whose name starts with this (repeatable), e.g. compile")
    return parser


def main(
    argv: list[str] | None = None,
    command: list[str] | None = None,
    started: float | None = None,
    prog: str = "python -m pipelines.bench",
) -> int:
    """`command` is recorded in the JSON as the exact command line; `started` is when the process began."""
    parser = add_arguments(argparse.ArgumentParser(prog=prog, description=DESCRIPTION))
    args = parser.parse_args(argv)
    return run(args, command or ["vace", "bench", *(argv or [])], started)


def run(args: argparse.Namespace, command: list[str], started: float | None = None) -> int:
    """Run every phase, write `<out>/bench_<device>_<UTC time>.json` (+ .txt table); 0 unless nothing ran."""
    started = time.monotonic() if started is None else started
    import torch  # here, not at import: `vace --help` and the API process stay torch-free

    from pipelines.bench import environment, measure, phases, report
    from pipelines.bench.models import ModelSet
    from pipelines.bench.runner import OK, Runner

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    models = ModelSet.choose(args.tiny)
    env = environment.describe(device)
    now = datetime.now(UTC)
    name = "tiny-" + environment.slug(device.type) if args.tiny else environment.slug(env["name"])
    path = Path(args.out) / f"bench_{name}_{now:%Y-%m-%dT%H%MZ}.json"
    record: dict[str, Any] = {
        "kind": "vace-bench", "schema": 1, "date": now.isoformat(timespec="seconds"),
        "command": shlex.join(command), "tiny": args.tiny, "environment": env,
        "transformer_config": models.transformer, "vae_config": models.vae,
        "shapes": {s.label: s.as_dict() for s in models.shapes}, "not_built": phases.NOT_BUILT,
    }

    def derive(rec: dict[str, Any]) -> None:
        rec["projections"] = report.projections(rec)

    runner = Runner(path=path, budget_s=args.budget_s, started=started, record=record,
                    cleanup=lambda: measure.free_memory(device), after_phase=derive,
                    only=tuple(args.only), skip=tuple(args.skip))
    bench = phases.Bench(models=models, device=device, dtype=torch.bfloat16, compile_shape=args.compile_shape,
                         runner=runner)
    print(f"vace bench on {env['name']} ({device}), budget {args.budget_s:.0f}s -> {path}", flush=True)
    torch.manual_seed(0)
    plan = phases.plan(bench)
    if args.only:  # a selected phase brings the phases it needs (the model build)
        needed = {name for p in plan if p.name.startswith(runner.only) for name in p.requires}
        runner.only = (*runner.only, *needed)
    for phase in plan:
        runner.run(phase)
    runner.save()
    text = report.table(record)
    path.with_suffix(".txt").write_text(text + "\n")
    print("\n" + text, flush=True)
    return 0 if any(p.get("status") == OK for p in record["phases"].values()) else 1
