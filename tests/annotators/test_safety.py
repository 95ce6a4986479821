from __future__ import annotations

import numpy as np
import pytest
import torch

from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.safety import SafetyVerdict, load_safety_checker, sample_indices
from preprocessors.annotators.tiny import build_tiny_nsfw_classifier


@pytest.fixture(scope="module")
def checker(tiny_dir):
    return load_safety_checker(build_tiny_nsfw_classifier(tiny_dir / "nsfw"), device="cpu")


def test_sample_indices():
    assert sample_indices(81, 8) == [0, 11, 23, 34, 46, 57, 69, 80]
    assert sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(10, 1) == [0]
    assert sample_indices(10, 2) == [0, 9]
    with pytest.raises(ValueError):
        sample_indices(0, 8)


def test_real_tiny_model_gives_a_probability(checker):
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 40, 60, 3), dtype=np.uint8)
    scores = checker.unsafe_scores(frames)
    assert scores.shape == (5,) and ((scores >= 0) & (scores <= 1)).all()
    verdict = checker.check_frames(frames, sample=3)
    assert isinstance(verdict, SafetyVerdict) and verdict.frame_index in (0, 2, 4)
    assert verdict.flagged == (verdict.score >= 0.5)


def _video(n: int) -> np.ndarray:
    # Frame i is a flat image of value 3 * i, so the fake model can tell which frame it sees.
    return np.stack([np.full((20, 30, 3), 3 * i, np.uint8) for i in range(n)])


def _fake_forward(nsfw_prob: dict[int, float], seen: list[int]):
    class Out:
        pass

    def forward(pixel_values):
        # The processor maps v -> (v / 255 - 0.5) / 0.5; undo it to recover the frame index.
        values = ((pixel_values.mean(dim=(1, 2, 3)) * 0.5 + 0.5) * 255 / 3).round().long().tolist()
        seen.extend(values)
        p = torch.tensor([nsfw_prob.get(i, 0.01) for i in values])
        out = Out()
        out.logits = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)
        return out

    return forward


@pytest.mark.parametrize(
    ("probs", "flagged", "index"),
    [({}, False, 0), ({23: 0.7}, True, 23), ({23: 0.49, 57: 0.3}, False, 23), ({80: 0.5}, True, 80)],
)
def test_threshold_and_worst_frame(checker, monkeypatch, probs, flagged, index):
    seen: list[int] = []
    monkeypatch.setattr(checker, "model", _fake_forward(probs, seen))
    verdict = checker.check_frames(_video(81), sample=8)
    assert seen == [0, 11, 23, 34, 46, 57, 69, 80]
    assert verdict.flagged is flagged and verdict.frame_index == index
    assert verdict.score == pytest.approx(probs.get(index, 0.01), abs=1e-5)


def test_unsampled_frame_is_not_seen(checker, monkeypatch):
    seen: list[int] = []
    monkeypatch.setattr(checker, "model", _fake_forward({5: 0.99}, seen))
    assert not checker.check_frames(_video(81), sample=8).flagged


def test_missing_folder(tmp_path):
    with pytest.raises(AnnotatorNotFoundError, match="vace download --annotators"):
        load_safety_checker(tmp_path / "x")
