"""Before/after figures of issue 13's conditioning fixes: `python -m benchmarks.fidelity`.

Each figure is computed with the project's own functions on real pixels or real sizes; "before" is the
previous behaviour reproduced through today's code where it still exists (e.g. `aspect_ratio: 16:9`, which is
what `auto` gave a landscape input before), or the previous rule written out where it does not (marked).
The tiny random models stand in for the real ones where only shapes and orders matter.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from preprocessors.canvas import (
    canvas_size,
    expansion,
    fills_frame,
    kept_fraction,
    outpaint_placement,
    reframe_placement,
)
from preprocessors.masks import binarize_mask
from preprocessors.sizing import target_size


def _row(what: str, before: str, after: str) -> None:
    print(f"| {what} | {before} | {after} |")


def outpainting() -> None:
    # fal's typical request: a 16:9 source at 480p, left and right, expand_ratio 0.25.
    exp = expansion(832, 480, left=True, right=True, top=False, bottom=False, ratio=0.25)
    canvas = canvas_size(832, 480, exp)
    before = outpaint_placement(832, 480, exp, *target_size("480p", "16:9", *canvas))
    after = outpaint_placement(832, 480, exp, *target_size("480p", "auto", *canvas), follow_canvas=True)
    for name, p in (("before", before), ("after", after)):
        bands = "top+bottom+left+right" if p.dest.y > 0 else "left+right"
        print(f"  outpainting {name}: {p.width}x{p.height}, source {p.dest.width}x{p.dest.height} "
              f"at scale {p.dest.height / 480:.3f}, generated {1 - kept_fraction(p):.1%} ({bands})")
    _row("outpainting, fal's typical request: generated fraction (ideal 33.3%)",
         f"{1 - kept_fraction(before):.1%}", f"{1 - kept_fraction(after):.1%}")


def kept_by_cover(src: tuple[int, int], size: tuple[int, int]) -> float:
    scale = max(size[0] / src[0], size[1] / src[1])
    return size[0] * size[1] / (src[0] * scale * src[1] * scale)


def auto_aspect() -> None:
    for src in ((640, 480), (1080, 1080), (1920, 1080)):
        before = target_size("480p", "16:9", *src)  # what auto gave any landscape (or square) input
        after = target_size("480p", "auto", *src)
        _row(f"depth/pose/inpainting, {src[0]}x{src[1]} input at 480p auto: size, kept fraction",
             f"{before[0]}x{before[1]}, {kept_by_cover(src, before):.1%}",
             f"{after[0]}x{after[1]}, {kept_by_cover(src, after):.1%}")


def reframe() -> None:
    p = reframe_placement(854, 480, *target_size("480p", "16:9", 854, 480), 0.0)
    _row("reframe 854x480, auto, zoom 0: what runs",
         f"a full 14B run generating {1 - kept_fraction(p):.1%} (6-pixel bands)",
         "422 on aspect_ratio" if fills_frame(p) else "runs")


def soft_masks() -> None:
    size, radius, feather = 256, 60.0, 20.0
    yy, xx = np.mgrid[:size, :size]
    ramp = np.clip((radius + feather - np.hypot(xx - size / 2, yy - size / 2)) / feather, 0.0, 1.0)
    disc = np.rint(ramp * 255).astype(np.uint8)
    vace = int((disc > 0).sum())
    before = int((disc >= 128).sum())  # the previous rule: luma >= 128 only
    after = int((binarize_mask(disc)[0] == 255).sum())
    _row("soft mask (disc r=60 + 20-px feather): generate area vs VACE's (any non-zero)",
         f"{before / vace:.1%}", f"{after / vace:.1%}")


def reference_order() -> None:
    from pipelines.generate import _pipeline_reference_order
    from pipelines.tiny import make_tiny_pipeline

    pipe = make_tiny_pipeline()
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((32, 32, 3), np.uint8)
    blue[..., 2] = 220
    video = torch.zeros(1, 3, 5, 32, 32)
    mask = torch.ones(1, 1, 5, 32, 32)

    def latents(images: list) -> torch.Tensor:
        refs = [[pipe.video_processor.preprocess(img, 32, 32)[0] for img in images]]
        with torch.inference_mode():
            return pipe.prepare_video_latents(video, mask, refs, device=torch.device("cpu"))[0, :16]

    alone = {"red": latents([_pipeline_reference_order([red])[0]])[:, 0],
             "blue": latents([_pipeline_reference_order([blue])[0]])[:, 0]}

    def order(images: list) -> str:
        out = latents(images)
        nearest = [min(alone, key=lambda k: float((out[:, i] - alone[k]).abs().max())) for i in range(2)]
        return ", ".join(nearest)

    before = order([Image.fromarray(red), Image.fromarray(blue)])  # the list as given, as before
    after = order(_pipeline_reference_order([red, blue]) or [])
    _row("ref_image_urls [red, blue]: latent frames 0, 1", before, after)


def pose_and_depth() -> None:
    from preprocessors.annotators.depth import vace_depth_size
    from preprocessors.annotators.pose_render import vace_canvas_size

    h, w = vace_canvas_size(480, 832)
    _row("pose: frame DWPose detects on, 480p output", "832x480 (the output-size frame)", f"{w}x{h}")
    before_cols = 384  # transformers' DPT-Hybrid processor (Intel/dpt-hybrid-midas): a square 384x384 resize
    h, w = vace_depth_size(720, 1280)
    cols = measured_depth_columns()
    _row("depth (MiDaS): model input and depth-map columns, 720p frame",
         f"384x384 (squashed), {before_cols} columns", f"{w}x{h}, {cols} columns (measured, tiny model)")


def measured_depth_columns() -> int:
    from preprocessors.annotators import depth as depth_mod
    from preprocessors.annotators.tiny import build_tiny_midas

    with tempfile.TemporaryDirectory() as folder:
        estimator = depth_mod.load_midas(build_tiny_midas(Path(folder) / "midas"), device="cpu")
        seen: list[int] = []
        real = depth_mod.hybrid_disparity

        def spy(model, pixel_values: torch.Tensor) -> torch.Tensor:
            disparity = real(model, pixel_values)
            seen.append(disparity.shape[-1])
            return disparity

        depth_mod.hybrid_disparity = spy
        try:
            estimator.estimate(np.zeros((1, 720, 1280, 3), np.uint8))
        finally:
            depth_mod.hybrid_disparity = real
        return seen[0]


def mask_tracking() -> None:
    """Share of a moving square the inpainting mask covers in the clip's last frame, through the worker's
    InpaintingPlan.mask. The tracker is a deterministic colour tracker standing in for SAM 2.1 (the tiny
    random SAM 2 would show nothing): this measures the plumbing, not SAM 2's quality."""
    from server.worker.tasks import InpaintingPlan
    from server.worker.types import Timing

    class ColourTracker:
        def track(self, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
            colour = frames[0][first_mask > 0].mean(axis=0)
            near = np.abs(frames.astype(np.float32) - colour).max(axis=-1) <= 30
            return np.where(near, np.uint8(255), np.uint8(0))

    class Reader:  # the mask image as InputReader.image would return it
        def __init__(self, image: np.ndarray) -> None:
            self.image_array = image

        def image(self, *_: object, **__: object) -> np.ndarray:
            return self.image_array

    frames = np.full((9, 48, 96, 3), (0, 90, 200), np.uint8)
    for i in range(9):
        frames[i, 19:29, 5 + 8 * min(i, 6) : 15 + 8 * min(i, 6)] = (230, 20, 20)
    first = np.zeros((48, 96, 3), np.uint8)
    first[19:29, 5:15] = 255
    request = type("Request", (), {"mask_image_url": "mask.png", "mask_video_url": None})()
    square = np.zeros((48, 96), bool)
    square[19:29, 53:63] = True  # where the square is in the last frames

    def covered(tracker: object) -> float:
        mask = InpaintingPlan().mask(request, frames, Timing(16.0, 7), Reader(first),  # type: ignore[arg-type]
                                     tracker)  # type: ignore[arg-type]
        return float((mask[-1][square] == 255).mean())

    _row("mask_image_url on a moving square: share of it masked in the last frame (colour-tracker stand-in)",
         f"{covered(None):.0%}", f"{covered(ColourTracker()):.0%}")


def main() -> None:
    print("| figure | before | after |")
    print("|---|---|---|")
    outpainting()
    auto_aspect()
    reframe()
    soft_masks()
    reference_order()
    pose_and_depth()
    mask_tracking()


if __name__ == "__main__":
    main()
