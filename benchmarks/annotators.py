"""Per-frame cost of each annotator on random frames: `python -m benchmarks.annotators [folder]`.

Without a folder it builds the tiny random models in a temporary directory (their costs show the fixed
overheads at real frame sizes, not the real models' costs; for DWPose that is the letterboxing, cropping,
decoding and drawing around the two networks). With a folder laid out as in
preprocessors/annotators/catalog.py, it times whichever real models are there.

`--full-size` times the real architectures at their real sizes with random weights instead
(benchmarks/annotators_full_size.py says how; benchmarks/full_size_models.py builds them). Figures measured
so far are in benchmarks/results/annotators_full_size_cpu-2cores_2026-11-24.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.annotators_full_size import FULL_SIZE_FRAMES, run_full_size
from preprocessors.annotators import catalog

TINY_FRAMES = 4
def _time(fn: Callable[[], object], repeats: int = 2) -> float:
    fn()  # warm-up: first calls pay for allocator and kernel set-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=None,
                        help=f"frames timed per model (default {TINY_FRAMES}; {FULL_SIZE_FRAMES} with "
                             "--full-size)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=_cores(), help="torch threads (default: the cores)")
    parser.add_argument("--full-size", action="store_true",
                        help="time the real architectures at full size, with random weights")
    folders = [model.folder for model in catalog.ALL]
    parser.add_argument("--only", nargs="+", choices=folders, metavar="MODEL",
                        help=f"with --full-size: only these models ({', '.join(folders)})")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="with --full-size: where the temporary model folders go (default: the system's)")
    args = parser.parse_args()
    if args.frames is None:
        args.frames = FULL_SIZE_FRAMES if args.full_size else TINY_FRAMES
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    torch.set_num_threads(args.threads)
    _quiet_progress_bars()

    if args.full_size:
        if args.folder is not None:
            parser.error("--full-size builds its own models: give no folder")
        run_full_size(args)
        return
    if args.folder is not None:
        run(args, args.folder)
        return
    from preprocessors.annotators.tiny import build_tiny_annotators

    with tempfile.TemporaryDirectory(prefix="vace-annotators-") as tmp:  # the tiny OpenPose file is 210 MB
        run(args, build_tiny_annotators(Path(tmp)))


def run(args: argparse.Namespace, root: Path) -> None:
    n = args.frames
    frames = np.random.default_rng(0).integers(0, 256, size=(n, args.height, args.width, 3), dtype=np.uint8)
    print(f"{n} frames of {args.width}x{args.height}, models from {root}")

    def report(name: str, seconds: float, per: int, unit: str = "frame") -> None:
        print(f"  {name:<34} {seconds / per * 1000:9.1f} ms per {unit}")

    from preprocessors.annotators.depth import load_depth_anything, load_midas

    for name, load in ((catalog.DEPTH_ANYTHING.folder, load_depth_anything),
                       (catalog.MIDAS.folder, load_midas)):
        if (root / name).is_dir():
            est = load(root / name, args.device)
            report(f"depth {name}", _time(lambda est=est: est.estimate(frames)), n)
    if (root / catalog.DWPOSE.folder).is_dir():
        from preprocessors.annotators.dwpose import load_dwpose

        dw = load_dwpose(root / catalog.DWPOSE.folder, args.device, threads=args.threads)
        report("pose dwpose (detect only)", _time(lambda: dw.detect_video(frames)), n)
        report("pose dwpose (detect+render)", _time(lambda: dw.annotate(frames)), n)
    if (root / catalog.OPENPOSE.folder).is_dir():
        from preprocessors.annotators.pose_detect import load_openpose_body

        det = load_openpose_body(root / catalog.OPENPOSE.folder, args.device)
        report("pose openpose body (detect+render)", _time(lambda: det.annotate(frames[:1]), 1), 1)
    from preprocessors.annotators.pose_render import Pose, render_pose_video

    rng = np.random.default_rng(1)
    body, face = (np.concatenate([rng.random((k, 2)), np.ones((k, 1))], axis=1).astype(np.float32)
                  for k in (18, 68))
    poses = [[Pose(body, face=face)] for _ in range(n)]
    report("pose render only (direct)", _time(lambda: render_pose_video(poses, args.height, args.width)), n)
    report("pose render only (1024 canvas)",
           _time(lambda: render_pose_video(poses, args.height, args.width, canvas_short_side=1024)), n)
    from preprocessors.interpolation.film import load_film
    from preprocessors.interpolation.rife import load_rife

    for name, load in ((catalog.FILM.folder, load_film), (catalog.RIFE.folder, load_rife)):
        if (root / name).is_dir():
            interp = load(root / name, args.device)
            secs = _time(lambda interp=interp: interp.interpolate(frames, 1))
            report(f"interpolate {name} (factor 1)", secs, n - 1, "new frame")
    if (root / catalog.NSFW.folder).is_dir():
        from preprocessors.annotators.safety import load_safety_checker

        checker = load_safety_checker(root / catalog.NSFW.folder, args.device)
        video = np.repeat(frames, -(-81 // n), axis=0)[:81]
        report("safety check (8 of 81 frames)", _time(lambda: checker.check_frames(video)), 1, "video")
    if (root / catalog.PROMPT_LLM.folder).is_dir():
        from preprocessors.annotators.prompt_expansion import load_prompt_expander

        exp = load_prompt_expander(root / catalog.PROMPT_LLM.folder, args.device)
        secs = _time(lambda: exp.expand_prompt("a cat walks on a wall", "depth"), 1)
        report("prompt expansion", secs, 1, "prompt")


def _quiet_progress_bars() -> None:
    """No per-file progress bars between the result lines."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


if __name__ == "__main__":
    main()
