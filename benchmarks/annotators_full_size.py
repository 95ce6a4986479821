"""The `--full-size` run of `python -m benchmarks.annotators`: real architectures, random weights.

Each model is written in its real on-disk format (benchmarks/full_size_models.py) to a temporary folder,
loaded by the loader the server uses, run once on `--frames` frames (default 3) as the server's code path
runs them (warm-up: first calls at a new batch shape pay for kernel and allocator set-up), run and timed
again on the same frames, and deleted before the next one. One line per model: parameters, the resolution
the model itself processes (the input of its network, as the server's code path sizes an 832x480 frame),
milliseconds per frame for the whole annotator call and for the network alone, the frames timed and the
load time. The prompt LLM's line gives seconds per generated token instead. FILM and DWPose cannot be built
at full size here and are listed as skipped, with the reason. Random weights cost what real ones do wherever
the work does not depend on the values; OpenPose's peak grouping (part of its per-frame figure, not of its
network figure) does, so that part is indicative only. Measured figures:
benchmarks/results/annotators_full_size_cpu-2cores_2026-11-24.md.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocessors.annotators import catalog

FULL_SIZE_FRAMES = 3
LLM_PROMPT = "a cat walks on a wall"
LLM_TIMED_TOKENS = 8
# Models whose full-size random version cannot be built here, and why (printed as such).
FULL_SIZE_SKIPPED = {
    catalog.FILM.folder: "its TorchScript export carries FILM's own network code, which is neither in this "
                         "repository nor in any installed package, so no full-size random export can be made "
                         "(the tiny stand-in is a cross-fade, not FILM's cost)",
    catalog.DWPOSE.folder: "yolox_l.onnx and dw-ll_ucoco_384.onnx are YOLOX-L and RTMPose-l graphs whose "
                           "architectures (mmdet/mmpose code) are not available here, so no full-size random "
                           "ONNX can be made",
}


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


# (folder, args) -> (annotator, its torch network)
Loader = Callable[[Path, argparse.Namespace], tuple[Any, torch.nn.Module]]


def _load_depth(loader_name: str) -> Loader:
    def load(folder: Path, args: argparse.Namespace) -> tuple[Any, torch.nn.Module]:
        from preprocessors.annotators import depth

        est = getattr(depth, loader_name)(folder, args.device)
        return est, est.model

    return load


def _run_depth(est, frames: np.ndarray, n: int) -> int:
    est.estimate(frames[:n])
    return n


def _load_rife(folder: Path, args: argparse.Namespace) -> tuple[Any, torch.nn.Module]:
    from preprocessors.interpolation.rife import load_rife

    interp = load_rife(folder, args.device)
    return interp, interp.net


def _run_interpolation(interp, frames: np.ndarray, n: int) -> int:
    interp.interpolate(frames[: n + 1], 1)  # n pairs: n new frames
    return n


def _load_openpose(folder: Path, args: argparse.Namespace) -> tuple[Any, torch.nn.Module]:
    from preprocessors.annotators.catalog import POSE_DETECT_RESOLUTION
    from preprocessors.annotators.pose_detect import load_openpose_body

    det = load_openpose_body(folder, args.device, POSE_DETECT_RESOLUTION)
    return det, det.body.model


def _run_pose(det, frames: np.ndarray, n: int) -> int:
    det.annotate(frames[:n])
    return n


def _load_safety(folder: Path, args: argparse.Namespace) -> tuple[Any, torch.nn.Module]:
    from preprocessors.annotators.safety import load_safety_checker

    checker = load_safety_checker(folder, args.device)
    return checker, checker.model


def _run_safety(checker, frames: np.ndarray, n: int) -> int:
    from preprocessors.annotators.safety import sample_indices

    video = frames[np.arange(81) % len(frames)]  # an 81-frame output video, of which 8 frames are checked
    checker.check_frames(video)
    return len(sample_indices(len(video), 8))


def _full_size_models() -> dict[str, _FullSize]:
    from benchmarks import full_size_models as fs

    return {
        catalog.MIDAS.folder: _FullSize(
            "depth midas dpt-hybrid", fs.build_full_midas, _load_depth("load_midas"), _run_depth),
        catalog.DEPTH_ANYTHING.folder: _FullSize(
            "depth depth-anything-v2-large", fs.build_full_depth_anything, _load_depth("load_depth_anything"),
            _run_depth),
        catalog.RIFE.folder: _FullSize(
            "interpolate rife v4.26 (factor 1)", fs.build_full_rife, _load_rife, _run_interpolation),
        catalog.OPENPOSE.folder: _FullSize(
            "pose openpose body (detect+render)", fs.build_full_openpose_body, _load_openpose, _run_pose),
        catalog.NSFW.folder: _FullSize(
            "safety vit-b/16 nsfw (8 of 81)", fs.build_full_nsfw_classifier, _load_safety, _run_safety),
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
    from benchmarks import full_size_models as fs
    from preprocessors.annotators.prompt_expansion import MAX_NEW_TOKENS, load_prompt_expander

    label = f"prompt llm {catalog.PROMPT_LLM.folder}"
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

    def counting_generate(*a: Any, **kw: Any) -> torch.Tensor:
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


def run_full_size(args: argparse.Namespace) -> None:
    from preprocessors.annotators._common import resolve_device

    names = list(args.only or [model.folder for model in catalog.ALL])
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
                elif name == catalog.PROMPT_LLM.folder:
                    _bench_prompt_llm(folder, args)
            finally:
                shutil.rmtree(folder, ignore_errors=True)  # one model on disk at a time
                gc.collect()
    for name in names:
        if name in FULL_SIZE_SKIPPED:
            print(f"  {name:<36} skipped: {FULL_SIZE_SKIPPED[name]}")


