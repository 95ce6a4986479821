from __future__ import annotations

import numpy as np

from preprocessors.annotators import catalog
from preprocessors.annotators.catalog import (
    DEPTH_ANYTHING,
    DWPOSE,
    FILM,
    MIDAS,
    NSFW,
    OPENPOSE,
    PROMPT_LLM,
    RIFE,
)
from preprocessors.annotators.depth import load_depth_anything, load_midas
from preprocessors.annotators.dwpose import load_dwpose
from preprocessors.annotators.prompt_expansion import load_prompt_expander
from preprocessors.annotators.safety import load_safety_checker
from preprocessors.annotators.tiny import build_tiny_annotators
from preprocessors.interpolation.film import load_film
from preprocessors.interpolation.rife import load_rife


def test_build_all_and_load_each(tmp_path):
    root = build_tiny_annotators(tmp_path / "annotators", include_openpose=False)
    expected = {m.folder for m in catalog.ALL} - {OPENPOSE.folder}
    assert sorted(p.name for p in root.iterdir()) == sorted(expected)
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 32, 48, 3), dtype=np.uint8)
    assert load_depth_anything(root / DEPTH_ANYTHING.folder, "cpu").estimate(frames).shape == frames.shape
    assert load_midas(root / MIDAS.folder, "cpu").estimate(frames).shape == frames.shape
    assert load_dwpose(root / DWPOSE.folder, "cpu", threads=1).annotate(frames).shape == frames.shape
    assert load_film(root / FILM.folder, "cpu").interpolate(frames, 1).shape == (3, 32, 48, 3)
    assert load_rife(root / RIFE.folder, "cpu").interpolate(frames, 1).shape == (3, 32, 48, 3)
    assert 0.0 <= load_safety_checker(root / NSFW.folder, "cpu").check_frames(frames).score <= 1.0
    assert load_prompt_expander(root / PROMPT_LLM.folder, "cpu", max_new_tokens=8).expand_prompt("a cat")
    # A second call keeps what is there.
    stamp = (root / FILM.folder / "film_net_fp32.pt").stat().st_mtime_ns
    build_tiny_annotators(root, include_openpose=False)
    assert (root / FILM.folder / "film_net_fp32.pt").stat().st_mtime_ns == stamp
