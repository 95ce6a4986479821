"""The worker's annotator registry: lazy, cached, tiny models built on demand, clear errors when missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data

from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.catalog import DEPTH_ANYTHING, DWPOSE, MIDAS, NSFW, OPENPOSE
from preprocessors.annotators.registry import AnnotatorConfig, Annotators


def test_tiny_registry_builds_only_what_is_used_and_caches(tmp_path: Path) -> None:
    registry = Annotators(AnnotatorConfig(root=tmp_path, device="cpu", tiny=True))
    checker = registry.safety()
    assert registry.safety() is checker
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [NSFW.folder]
    # The tiny checker is biased to "normal": the default threshold passes, threshold 0 flags.
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 40, 60, 3), dtype=np.uint8)
    verdict = checker.check_frames(frames)
    assert not verdict.flagged and verdict.score < 0.01
    strict = Annotators(AnnotatorConfig(root=tmp_path, device="cpu", tiny=True, safety_threshold=0.0))
    assert strict.safety().check_frames(frames).flagged
    depth = registry.depth().estimate(frames)
    assert depth.shape == frames.shape and (tmp_path / MIDAS.folder).is_dir()
    assert not (tmp_path / DEPTH_ANYTHING.folder).exists() and not (tmp_path / DWPOSE.folder).exists()


@pytest.mark.parametrize("get", [
    lambda r: r.depth(), lambda r: r.pose(), lambda r: r.interpolator("rife"),
    lambda r: r.interpolator("film"), lambda r: r.safety(), lambda r: r.prompt_expander(),
])
def test_missing_folders_name_the_download_command(tmp_path: Path, get) -> None:
    registry = Annotators(AnnotatorConfig(root=tmp_path / "nothing-here", device="cpu"))
    with pytest.raises(AnnotatorNotFoundError, match="vace download --annotators"):
        get(registry)
    with pytest.raises(AnnotatorNotFoundError, match="vace download --annotators"):
        get(Annotators(AnnotatorConfig(root=None)))


def test_depth_backend_choice(tmp_path: Path) -> None:
    registry = Annotators(AnnotatorConfig(root=tmp_path, device="cpu", tiny=True,
                                          depth_backend="depth-anything-v2"))
    registry.depth()
    assert (tmp_path / DEPTH_ANYTHING.folder).is_dir() and not (tmp_path / MIDAS.folder).exists()
    with pytest.raises(ValueError, match="VACE_DEPTH_MODEL"):
        AnnotatorConfig(root=tmp_path, depth_backend="zoe")


def test_pose_backend_choice(tmp_path: Path) -> None:
    registry = Annotators(AnnotatorConfig(root=tmp_path, device="cpu", tiny=True))
    assert registry.config.pose_backend == "dwpose"  # VACE's own annotator, body + face
    frames = np.ascontiguousarray(skimage.data.astronaut()[None, ::2, ::2])
    video = registry.pose().annotate(frames)
    assert video.shape == frames.shape and video.dtype == np.uint8 and video.any()
    assert (tmp_path / DWPOSE.folder).is_dir() and not (tmp_path / OPENPOSE.folder).exists()
    assert registry.loaded() == [DWPOSE.folder]
    openpose = Annotators(AnnotatorConfig(root=tmp_path / "nothing", device="cpu", pose_backend="openpose"))
    with pytest.raises(AnnotatorNotFoundError, match=OPENPOSE.folder):
        openpose.pose()
    with pytest.raises(ValueError, match="VACE_POSE_MODEL"):
        AnnotatorConfig(root=tmp_path, pose_backend="mediapipe")
    env = {"VACE_POSE_MODEL": "openpose"}
    assert AnnotatorConfig.for_worker("/m", tmp_path, None, env).pose_backend == "openpose"
    assert AnnotatorConfig.for_worker("/m", tmp_path, None, {}).pose_backend == "dwpose"
    with pytest.raises(ValueError, match="VACE_POSE_MODEL"):
        AnnotatorConfig.for_worker("/m", tmp_path, None, {"VACE_POSE_MODEL": "x"})


def test_offload_keeps_models_on_a_cpu_worker(tmp_path: Path) -> None:
    registry = Annotators(AnnotatorConfig(root=tmp_path, device="cpu", tiny=True))
    assert registry.offload() == []  # nothing loaded: a no-op
    checker = registry.safety()
    assert registry.offload() == []  # no GPU memory to free: the model stays
    assert registry.safety() is checker and registry.loaded() == [NSFW.folder]


def test_offload_on_a_gpu_worker_drops_and_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    registry = Annotators(AnnotatorConfig(root=tmp_path, device="cpu", tiny=True))
    checker, pose = registry.safety(), registry.pose()
    emptied: list[bool] = []
    monkeypatch.setattr(Annotators, "_uses_gpu", lambda self: True)  # as if the device were cuda
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    assert sorted(registry.offload()) == sorted([NSFW.folder, DWPOSE.folder])
    assert registry.loaded() == [] and emptied == [True]
    frames = np.random.default_rng(0).integers(0, 256, size=(1, 40, 60, 3), dtype=np.uint8)
    again = registry.safety()  # loaded again on next use, and works
    assert again is not checker and not again.check_frames(frames).flagged
    assert registry.pose() is not pose and registry.loaded() == [NSFW.folder, DWPOSE.folder]
