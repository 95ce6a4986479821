"""Time one tiny-model job through the whole server: submit -> COMPLETED -> result.

Run from the repository root:  python -m benchmarks.api_job [--steps 2] [--resolution 240p] [--frames 81]
Compare with the same generation called directly:  python benchmarks/direct_pipeline.py
Prints wall-clock figures; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from preprocessors.video_io import write_mp4
from tests.server.conftest import data_uri, moving_bar_frames, start_server, wait_completed

APP = "fal-ai/wan-vace-14b"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--resolution", default="240p")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--task", default="depth", choices=["depth", "pose"])
    parser.add_argument("--jobs", type=int, default=2,
                        help="jobs in a row: the first pays one-time costs (e.g. the VAE's zero-input cache)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video = folder / "input.mp4"
        write_mp4(moving_bar_frames(args.frames, 416, 240), 16, video)
        started = time.perf_counter()
        server = start_server(folder / "data")
        print(f"server start until /health is 200: {time.perf_counter() - started:.1f} s")
        try:
            with server.client() as client:
                for n in range(1, args.jobs + 1):
                    payload = {"prompt": "benchmark", "video_url": data_uri(video), "num_frames": args.frames,
                               "resolution": args.resolution, "num_inference_steps": args.steps, "seed": n}
                    t0 = time.perf_counter()
                    submit = client.post(f"/queue/{APP}/{args.task}", json=payload).json()
                    status = wait_completed(client, submit["status_url"], timeout=3600)
                    result = client.get(submit["response_url"]).json()
                    wall = time.perf_counter() - t0
                    assert "error" not in status, status
                    print(f"job {n}: {args.task} {args.resolution} {args.frames} frames, {args.steps} steps")
                    print(f"  submit -> result (wall):          {wall:.2f} s")
                    print(f"  worker inference_time (metrics):  {status['metrics']['inference_time']:.2f} s")
                    print(f"  output: {result['video']['file_size']} bytes")
                    for entry in status["logs"]:
                        print(f"    {entry['timestamp']}  {entry['message']}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
