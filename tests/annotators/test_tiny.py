from __future__ import annotations

import numpy as np

from preprocessors.annotators import layout
from preprocessors.annotators.depth import load_depth_anything, load_midas
from preprocessors.annotators.dwpose import load_dwpose
from preprocessors.annotators.prompt_expansion import load_prompt_expander
from preprocessors.annotators.safety import load_safety_checker
from preprocessors.annotators.tiny import build_tiny_annotators
from preprocessors.interpolation.film import load_film
from preprocessors.interpolation.rife import load_rife


def test_build_all_and_load_each(tmp_path):
    root = build_tiny_annotators(tmp_path / "annotators", include_openpose=False)
    assert sorted(p.name for p in root.iterdir()) == sorted(set(layout.ALL) - {layout.OPENPOSE})
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 32, 48, 3), dtype=np.uint8)
    assert load_depth_anything(root / layout.DEPTH_ANYTHING, "cpu").estimate(frames).shape == frames.shape
    assert load_midas(root / layout.MIDAS, "cpu").estimate(frames).shape == frames.shape
    assert load_dwpose(root / layout.DWPOSE, "cpu", threads=1).annotate(frames).shape == frames.shape
    assert load_film(root / layout.FILM, "cpu").interpolate(frames, 1).shape == (3, 32, 48, 3)
    assert load_rife(root / layout.RIFE, "cpu").interpolate(frames, 1).shape == (3, 32, 48, 3)
    assert 0.0 <= load_safety_checker(root / layout.NSFW, "cpu").check_frames(frames).score <= 1.0
    assert load_prompt_expander(root / layout.PROMPT_LLM, "cpu", max_new_tokens=8).expand_prompt("a cat")
    # A second call keeps what is there.
    stamp = (root / layout.FILM / "film_net_fp32.pt").stat().st_mtime_ns
    build_tiny_annotators(root, include_openpose=False)
    assert (root / layout.FILM / "film_net_fp32.pt").stat().st_mtime_ns == stamp
