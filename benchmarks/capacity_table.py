"""The capacity table a 14B worker would publish on a card: `python -m benchmarks.capacity_table [GIB ...]`.

For each card size (total GiB; free memory is taken as total minus 0.8 GiB for the CUDA context), it picks the
memory plan `--memory-plan auto` would (pipelines/memory.py's `choose_plan`) and prints the longest video per
resolution and aspect ratio that the estimate admits (server/worker/capacity.py's `capacity_table` over
`estimate_fits`): what the API may refuse at submit on a server of such workers. Estimates, not
measurements; no GPU needed.
"""

from __future__ import annotations

import argparse
import time

from pipelines.memory import WAN_VACE_14B, GiB, choose_plan, usable_bytes
from server.worker.capacity import capacity_table, estimate_fits

CONTEXT_GIB = 0.8


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity_table")
    parser.add_argument("cards", nargs="*", type=float, default=[80.0, 48.0, 24.0], help="card sizes, GiB")
    args = parser.parse_args(argv)
    for card in args.cards:
        total, free = int(card * GiB), int((card - CONTEXT_GIB) * GiB)
        plan = choose_plan(free, total, WAN_VACE_14B)
        started = time.perf_counter()
        table = capacity_table(estimate_fits(plan, WAN_VACE_14B, usable_bytes(free, total)))
        elapsed = time.perf_counter() - started
        print(f"{card:g} GiB card: {plan.reason} (table computed in {elapsed:.2f} s)")
        aspects = list(next(iter(table.values())))
        print("  resolution  " + "  ".join(f"{a:>5}" for a in aspects))
        for resolution, row in table.items():
            print(f"  {resolution:<10}  " + "  ".join(f"{row[a]:>5}" for a in aspects))


if __name__ == "__main__":
    main()
