"""Several machines on one (issue 16): two API replicas, two `vace worker` boxes with their own data
folders, a throwaway PostgreSQL and an S3-compatible server (moto); the box running the first job is
SIGKILLed mid-job. Prints the figures: jobs, kills, seconds until the lost job was requeued and restarted,
jobs completed exactly once, outputs downloadable, webhook deliveries (duplicates must be 0).

    python -m benchmarks.multibox [--jobs 2] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from tests.services.multibox import LEASE_S, run_scenario
from tests.services.postgres import running_postgres
from tests.services.s3 import running_s3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root, running_postgres() as pg, running_s3() as s3:
        figures = run_scenario(Path(root), pg, s3, jobs=args.jobs, steps=args.steps)
    print(json.dumps({**asdict(figures), "lease_s": LEASE_S,
                      "duplicate_deliveries": figures.duplicate_deliveries}, indent=2))


if __name__ == "__main__":
    main()
