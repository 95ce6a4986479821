"""Per-frame cost of each annotator on random frames: `python -m preprocessors.annotators.bench [folder]`.

Without a folder it builds the tiny random models in a temporary directory (their costs show the fixed
overheads at real frame sizes, not the real models' costs; for DWPose that is the letterboxing, cropping,
decoding and drawing around the two networks). With a folder laid out as in `layout`, it times
whichever real models are there.

`--full-size` times the real architectures at their real sizes with random weights instead (see
`full_size`): each model is written in its real on-disk format to a temporary folder, loaded by the loader
the server uses, run once on `--frames` frames (default 3) as the server's code path runs them (warm-up:
first calls at a new batch shape pay for kernel and allocator set-up), run and timed again on the same
frames, and deleted before the next one. One line per model: parameters, the resolution the model itself
processes (the input of its network, as the server's code path sizes an 832x480 frame), milliseconds per
frame for the whole annotator call and for the network alone, the frames timed and the load time. The
prompt LLM's line gives seconds per generated token instead. FILM and DWPose cannot be built at full size
here and are listed as skipped, with the reason. Random weights cost what real ones do wherever the work
does not depend on the values; OpenPose's peak grouping (part of its per-frame figure, not of its network
figure) does, so that part is indicative only.

Measured on AMD EPYC, 2 cores, CPU only (float32, torch 2.14.1, transformers 5.23.0, controlnet-aux
0.0.10), 2026-11-24, with `python -m preprocessors.annotators.bench --full-size` (832x480 frames, 2 threads):

    model                                params  network input  ms per frame (network alone)  timed
    depth depth-anything-v2-large       335.3 M  896x518        17651 (17643)                 3 frames
    depth midas dpt-hybrid              122.4 M  384x384         1441  (1436)                 3 frames
    pose openpose body (detect+render)   52.3 M  320x184         1123   (555)                 3 frames
    interpolate rife v4.26 (factor 1)     5.7 M  832x512          354   (350)                 3 new frames
    safety vit-b/16 nsfw (8 of 81)       85.8 M  224x224          211   (209)                 8 frames
    prompt llm qwen2.5-3b-instruct     3085.9 M  135-token prompt: 7.0 s to the first token, then 0.79 s per
                                                 generated token (8 timed): ~163 s for a 200-token expansion
    skipped: dwpose, film (no full-size random model can be built here; see FULL_SIZE_SKIPPED)

The machine is shared, and repeated runs spread: MiDaS 1.44-1.60 s, RIFE 0.35-0.50 s, OpenPose 1.12-1.47 s
(network 0.55-0.61 s), the safety check 0.21 s per frame, Depth-Anything 17.65-17.69 s, the LLM 0.68-0.79 s
per token. Load times (0.1-0.2 s; 12 s for the LLM, bfloat16 file to float32) are from the page
cache, the files having just been written. OpenPose's detect+render figure includes its peak grouping on
random heatmaps; the network figure is the dependable one. So on these 2 cores an 81-frame 832x480 job
spends about 24 min on depth with Depth-Anything-V2-Large (2 min with MiDaS), 1.5 min on OpenPose, and 28 s
on RIFE per doubling of the frame rate.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocessors.annotators import layout

FULL_SIZE_FRAMES = 3
TINY_FRAMES = 4
LLM_PROMPT = "a cat walks on a wall"
LLM_TIMED_TOKENS = 8
# Models whose full-size random version cannot be built here, and why (printed as such).
FULL_SIZE_SKIPPED = {
    layout.FILM: "its TorchScript export carries FILM's own network code, which is neither in this "
                 "repository nor in any installed package, so no full-size random export can be made (the "
                 "tiny stand-in is a cross-fade, not FILM's cost)",
    layout.DWPOSE: "yolox_l.onnx and dw-ll_ucoco_384.onnx are YOLOX-L and RTMPose-l graphs whose "
                   "architectures (mmdet/mmpose code) are not available here, so no full-size random ONNX "
                   "can be made",
}


def _time(fn, repeats: int = 2) -> float:
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
    parser.add_argument("--only", nargs="+", choices=layout.ALL, metavar="MODEL",
                        help=f"with --full-size: only these models ({', '.join(layout.ALL)})")
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

    for name, load in ((layout.DEPTH_ANYTHING, load_depth_anything), (layout.MIDAS, load_midas)):
        if (root / name).is_dir():
            est = load(root / name, args.device)
            report(f"depth {name}", _time(lambda est=est: est.estimate(frames)), n)
    if (root / layout.DWPOSE).is_dir():
        from preprocessors.annotators.dwpose import load_dwpose

        dw = load_dwpose(root / layout.DWPOSE, args.device, threads=args.threads)
        report("pose dwpose (detect only)", _time(lambda: dw.detect_video(frames)), n)
        report("pose dwpose (detect+render)", _time(lambda: dw.annotate(frames)), n)
    if (root / layout.OPENPOSE).is_dir():
        from preprocessors.annotators.pose_detect import load_openpose_body

        det = load_openpose_body(root / layout.OPENPOSE, args.device)
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

    for name, load in ((layout.FILM, load_film), (layout.RIFE, load_rife)):
        if (root / name).is_dir():
            interp = load(root / name, args.device)
            secs = _time(lambda interp=interp: interp.interpolate(frames, 1))
            report(f"interpolate {name} (factor 1)", secs, n - 1, "new frame")
    if (root / layout.NSFW).is_dir():
        from preprocessors.annotators.safety import load_safety_checker

        checker = load_safety_checker(root / layout.NSFW, args.device)
        video = np.repeat(frames, -(-81 // n), axis=0)[:81]
        report("safety check (8 of 81 frames)", _time(lambda: checker.check_frames(video)), 1, "video")
    if (root / layout.PROMPT_LLM).is_dir():
        from preprocessors.annotators.prompt_expansion import load_prompt_expander

        exp = load_prompt_expander(root / layout.PROMPT_LLM, args.device)
        secs = _time(lambda: exp.expand_prompt("a cat walks on a wall", "depth"), 1)
        report("prompt expansion", secs, 1, "prompt")


class _ForwardClock:
    """Time spent inside a module's forward, and the shape of its last first-tensor input (via hooks)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds = 0.0
        self.shape: tuple[int, ...] | None = None
        self._start = 0.0
        self._handles = [
            module.register_forward_pre_hook(self._pre, with_kwargs=True),
            module.register_forward_hook(self._post, with_kwargs=True),
        ]

    def _pre(self, module, args, kwargs) -> None:
        tensor = next((v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)), None)
        if tensor is not None:
            self.shape = tuple(tensor.shape)
        self._start = time.perf_counter()

    def _post(self, module, args, kwargs, output) -> None:
        self.seconds += time.perf_counter() - self._start

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass(frozen=True)
class _FullSize:
    label: str
    build: Callable[[Path], Path]
    # (folder, args) -> (annotator, its torch network), through the server's loader
    load: Callable[[Path, argparse.Namespace], tuple[Any, torch.nn.Module]]
    # (annotator, frames, n) -> frames processed; `frames` holds n + 1 frames
    run: Callable[[Any, np.ndarray, int], int]


def _load_depth(loader_name: str):
    def load(folder: Path, args: argparse.Namespace):
        from preprocessors.annotators import depth

        est = getattr(depth, loader_name)(folder, args.device)
        return est, est.model

    return load


def _run_depth(est, frames: np.ndarray, n: int) -> int:
    est.estimate(frames[:n])
    return n


def _load_rife(folder: Path, args: argparse.Namespace):
    from preprocessors.interpolation.rife import load_rife

    interp = load_rife(folder, args.device)
    return interp, interp.net


def _run_interpolation(interp, frames: np.ndarray, n: int) -> int:
    interp.interpolate(frames[: n + 1], 1)  # n pairs: n new frames
    return n


def _load_openpose(folder: Path, args: argparse.Namespace):
    from pipelines.annotators import POSE_DETECT_RESOLUTION
    from preprocessors.annotators.pose_detect import load_openpose_body

    det = load_openpose_body(folder, args.device, POSE_DETECT_RESOLUTION)
    return det, det.body.model


def _run_pose(det, frames: np.ndarray, n: int) -> int:
    det.annotate(frames[:n])
    return n


def _load_safety(folder: Path, args: argparse.Namespace):
    from preprocessors.annotators.safety import load_safety_checker

    checker = load_safety_checker(folder, args.device)
    return checker, checker.model


def _run_safety(checker, frames: np.ndarray, n: int) -> int:
    from preprocessors.annotators.safety import sample_indices

    video = frames[np.arange(81) % len(frames)]  # an 81-frame output video, of which 8 frames are checked
    checker.check_frames(video)
    return len(sample_indices(len(video), 8))


def _full_size_models() -> dict[str, _FullSize]:
    from preprocessors.annotators import full_size as fs

    return {
        layout.MIDAS: _FullSize("depth midas dpt-hybrid", fs.build_full_midas, _load_depth("load_midas"),
                                _run_depth),
        layout.DEPTH_ANYTHING: _FullSize("depth depth-anything-v2-large", fs.build_full_depth_anything,
                                         _load_depth("load_depth_anything"), _run_depth),
        layout.RIFE: _FullSize("interpolate rife v4.26 (factor 1)", fs.build_full_rife, _load_rife,
                               _run_interpolation),
        layout.OPENPOSE: _FullSize("pose openpose body (detect+render)", fs.build_full_openpose_body,
                                   _load_openpose, _run_pose),
        layout.NSFW: _FullSize("safety vit-b/16 nsfw (8 of 81)", fs.build_full_nsfw_classifier, _load_safety,
                               _run_safety),
    }


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def _available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable), None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _bench_frames(spec: _FullSize, folder: Path, frames: np.ndarray, args: argparse.Namespace) -> None:
    spec.build(folder)
    start = time.perf_counter()
    annotator, net = spec.load(folder, args)
    load_seconds = time.perf_counter() - start
    clock = _ForwardClock(net)
    try:
        spec.run(annotator, frames, args.frames)  # warm-up: the same call, so the same shapes
        clock.seconds = 0.0
        start = time.perf_counter()
        count = spec.run(annotator, frames, args.frames)
        seconds = time.perf_counter() - start
    finally:
        clock.close()
    h, w = clock.shape[-2:] if clock.shape else ("?", "?")
    print(f"  {spec.label:<36} {_parameters(net) / 1e6:7.1f} M  at {f'{w}x{h}':<8} "
          f"{seconds / count * 1000:9.1f} ms/frame (network {clock.seconds / count * 1000:8.1f})  "
          f"{count} frames timed  load {load_seconds:5.1f} s", flush=True)


def _bench_prompt_llm(folder: Path, args: argparse.Namespace) -> None:
    from preprocessors.annotators import full_size as fs
    from preprocessors.annotators.prompt_expansion import MAX_NEW_TOKENS, load_prompt_expander

    label = f"prompt llm {layout.PROMPT_LLM}"
    stored = fs.PROMPT_LLM_PARAMETERS * torch.finfo(fs.PROMPT_LLM_STORED_DTYPE).bits // 8
    loaded = fs.PROMPT_LLM_PARAMETERS * 4  # float32 on a CPU
    memory = _available_memory()
    need = loaded + stored // 4 + 2**30  # the model, loading buffers, headroom
    if memory is not None and memory < need:
        print(f"  {label:<36} skipped: needs about {need / 1e9:.0f} GB of free memory, {memory / 1e9:.1f} "
              "GB available")
        return
    disk = shutil.disk_usage(folder.parent).free
    if disk < stored * 1.1:
        print(f"  {label:<36} skipped: needs {stored / 1e9:.1f} GB of temporary disk, "
              f"{disk / 1e9:.1f} GB free")
        return
    fs.build_full_prompt_llm(folder)
    start = time.perf_counter()
    expander = load_prompt_expander(folder, args.device, max_new_tokens=1)
    load_seconds = time.perf_counter() - start
    generate = expander.model.generate
    runs: list[tuple[int, int]] = []  # (prompt tokens, new tokens) of each call

    def counting_generate(*a, **kw):
        out = generate(*a, **kw)
        prompt = kw["input_ids"].shape[1]
        runs.append((prompt, out.shape[1] - prompt))
        return out

    expander.model.generate = counting_generate
    expander.expand_prompt(LLM_PROMPT, "depth")  # warm-up
    start = time.perf_counter()
    expander.expand_prompt(LLM_PROMPT, "depth")
    first = time.perf_counter() - start  # tokenising, prefill, one token, decoding
    expander.max_new_tokens = 1 + LLM_TIMED_TOKENS
    start = time.perf_counter()
    expander.expand_prompt(LLM_PROMPT, "depth")
    total = time.perf_counter() - start
    prompt_tokens, new_tokens = runs[-1]
    per_token = (total - first) / max(1, new_tokens - 1)
    print(f"  {label:<36} {_parameters(expander.model) / 1e6:7.1f} M  prompt {prompt_tokens} tokens: "
          f"first token {first:.1f} s, then {per_token:.2f} s per generated token ({new_tokens - 1} timed); "
          f"a full {MAX_NEW_TOKENS}-token expansion ~{first + (MAX_NEW_TOKENS - 1) * per_token:.0f} s  "
          f"load {load_seconds:5.1f} s", flush=True)


def _quiet_progress_bars() -> None:
    """No per-file progress bars between the result lines."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def run_full_size(args: argparse.Namespace) -> None:
    from preprocessors.annotators._common import resolve_device

    names = list(args.only or layout.ALL)
    n = args.frames
    shape = (n + 1, args.height, args.width, 3)
    frames = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    print(f"Full-size annotators, random weights: {args.width}x{args.height} frames, {n} timed per model "
          f"after one warm-up call on the same frames; {_cpu_name()}, {torch.get_num_threads()} threads, "
          f"device {resolve_device(args.device)}", flush=True)
    models = _full_size_models()
    with tempfile.TemporaryDirectory(prefix="vace-full-size-", dir=args.tmp) as tmp:
        for name in names:
            folder = Path(tmp) / name
            try:
                if name in models:
                    _bench_frames(models[name], folder, frames, args)
                elif name == layout.PROMPT_LLM:
                    _bench_prompt_llm(folder, args)
            finally:
                shutil.rmtree(folder, ignore_errors=True)  # one model on disk at a time
                gc.collect()
    for name in names:
        if name in FULL_SIZE_SKIPPED:
            print(f"  {name:<36} skipped: {FULL_SIZE_SKIPPED[name]}")


if __name__ == "__main__":
    main()
