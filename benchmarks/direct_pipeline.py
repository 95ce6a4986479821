"""Baseline: time one direct WanVACEPipeline call, with no server, queue or video I/O around it.

The server's end-to-end time for the same size, frame count and steps is compared against this.

    python benchmarks/direct_pipeline.py                # tiny random model, 416x240, 81 frames, 2 steps
    python benchmarks/direct_pipeline.py --model /models/Wan2.1-VACE-14B-diffusers --steps 30
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tiny model is built locally; never reach for the hub
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import torch  # noqa: E402
from diffusers import WanVACEPipeline  # noqa: E402

from pipelines.loader import choose_placement, resolve_model  # noqa: E402
from tests.server.conftest import moving_bar_frames  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", help='"tiny" or a Wan VACE diffusers folder')
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="where the tiny model is cached")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--width", type=int, default=416)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--frames", type=int, default=81, help="must be 4k+1")
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    placement = choose_placement(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {placement.device}")

    started = time.perf_counter()
    model_dir = resolve_model(args.model, args.data_dir)  # builds the tiny model on first use
    print(f"resolve: {time.perf_counter() - started:.2f} s ({model_dir})")
    started = time.perf_counter()
    # Plain diffusers, as a user without this server would load it: none of the server's optimisations.
    pipe = WanVACEPipeline.from_pretrained(
        model_dir, dtype=placement.transformer_dtype, local_files_only=True
    ).to(placement.device)
    pipe.vae.to(placement.vae_dtype)
    pipe.set_progress_bar_config(disable=True)
    print(f"load: {time.perf_counter() - started:.2f} s")

    # A depth/pose-style job: the control video everywhere (the moving bar of benchmarks/api_job.py), mask
    # all white. (B, F, C, H, W) in [0, 1], the same form pipelines.generate passes.
    frames = moving_bar_frames(args.frames, args.width, args.height)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float() / 255.0
    mask = torch.ones(1, args.frames, 1, args.height, args.width)
    started = time.perf_counter()
    with torch.inference_mode():
        frames = pipe(
            prompt="benchmark",
            video=video,
            mask=mask,
            height=args.height,
            width=args.width,
            num_frames=args.frames,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(args.seed),
            output_type="np",
        ).frames
    call_s = time.perf_counter() - started
    print(
        f"call: {call_s:.2f} s for {args.width}x{args.height}, {args.frames} frames, {args.steps} steps, "
        f"guidance {args.guidance_scale:g} -> output {tuple(frames.shape)}"
    )


if __name__ == "__main__":
    main()
