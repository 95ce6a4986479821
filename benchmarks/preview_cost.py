"""What a live preview costs: `python -m benchmarks.preview_cost [--device cuda] [--tiny-steps 4]`.

1. One preview (pipelines/preview.py: latents -> RGB by the fitted 16->3 map, then an animated WebP) at
   the latent sizes of 480p and 720p, 81 frames (21 latent frames); on --device the latents start there,
   so the copy of the small RGB result to the host is counted. Printed per preview, per step at the
   default --preview-every 5, and as a share of a 14B step on an H100 (8.7 s at 480p, 31.5 s at 720p: two
   transformer forwards with CFG, from benchmarks/results/bench_nvidia-h100-80gb-hbm3_2026-11-26T0637Z.txt).
2. The same inside a real denoising loop: the tiny random pipeline on the CPU, with a preview after every
   step against none (the tiny model's steps are short, so this is the worst case).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.preview import LatentPreview

SHAPES = {"480p": (21, 60, 104), "720p": (21, 90, 160)}
H100_STEP_S = {"480p": 2 * 4.351, "720p": 2 * 15.770}
DEFAULT_EVERY = 5


def fitted_preview() -> LatentPreview:
    preview = LatentPreview()
    video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    preview.observe(video, torch.randn(1, 16, 3, 8, 8))
    return preview


def time_one(preview: LatentPreview, shape: tuple[int, int, int], device: str, repeats: int) -> float:
    dtype = torch.bfloat16 if device != "cpu" else torch.float32  # the pipeline's dtype on a GPU
    latents = torch.randn(1, 16, *shape, device=device, dtype=dtype)
    preview.image(latents)  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        preview.image(latents)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_the_loop(steps: int) -> tuple[float, float]:
    """Median step seconds of the tiny pipeline (CPU) without and with a preview after every step."""
    from pipelines.generate import GenerationRequest
    from pipelines.loader import load_pipeline
    from pipelines.tiny import ensure_tiny_pipeline

    with tempfile.TemporaryDirectory() as folder:
        pipe = load_pipeline(ensure_tiny_pipeline(Path(folder)), device="cpu")
        rng = np.random.default_rng(0)
        frames, height, width = 9, 240, 416
        request = GenerationRequest(
            prompt="a bar", negative_prompt="",
            video=rng.random((frames, height, width, 3), dtype=np.float32),
            mask=np.ones((frames, height, width), dtype=np.float32), reference_images=[], width=width,
            height=height, num_inference_steps=steps, guidance_scale=5.0, seed=0)
        results = [(with_preview, _median_step(pipe, request, with_preview))
                   for with_preview in (False, True, False, True)]
        without = statistics.median(s for p, s in results if not p)
        with_ = statistics.median(s for p, s in results if p)
        return without, with_


def _median_step(pipe: object, request: object, with_preview: bool) -> float:
    from pipelines.generate import generate

    preview = LatentPreview(pipe.vae.config.latents_mean, pipe.vae.config.latents_std)  # type: ignore[attr-defined]
    marks: list[float] = []
    generate(pipe, request, on_step=lambda *_: marks.append(time.perf_counter()),  # type: ignore[arg-type]
             on_encode=preview.observe if with_preview else None,
             on_latents=(lambda _, z: preview.image(z)) if with_preview else None,
             latents_every=1 if with_preview else 0)
    return float(statistics.median(np.diff(marks)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tiny-steps", type=int, default=4, help="0 skips the in-the-loop measurement")
    args = parser.parse_args()
    preview = fitted_preview()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    print("size   ms/preview  ms/step@every5  share of an H100 14B step@every5")
    for name, shape in SHAPES.items():
        seconds = time_one(preview, shape, args.device, args.repeats)
        per_step = seconds / DEFAULT_EVERY
        print(f"{name:6} {seconds * 1000:10.1f}  {per_step * 1000:14.1f}  {per_step / H100_STEP_S[name]:.4%}")
    if args.tiny_steps:
        without, with_ = in_the_loop(args.tiny_steps)
        print(f"tiny pipeline, 240p x 9 frames, CPU: {without * 1000:.1f} ms/step without previews, "
              f"{with_ * 1000:.1f} ms/step with one after every step ({(with_ - without) * 1000:+.1f} ms)")


if __name__ == "__main__":
    main()
