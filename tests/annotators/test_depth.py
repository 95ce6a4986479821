from __future__ import annotations

import numpy as np
import pytest
import torch

from preprocessors.annotators import depth as depth_mod
from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.tiny import build_tiny_depth_anything, build_tiny_midas


@pytest.fixture(scope="module")
def estimators(tiny_dir):
    da = depth_mod.load_depth_anything(build_tiny_depth_anything(tiny_dir / "da"), device="cpu")
    midas = depth_mod.load_midas(build_tiny_midas(tiny_dir / "midas"), device="cpu")
    return {"depth_anything": da, "midas": midas}


def _frames(n=3, h=40, w=72):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_depth_to_image_normalises_each_frame_and_resizes():
    ramp = torch.linspace(0, 1, 8).repeat(4, 1)  # (4, 8), bigger = nearer on the right
    depth = torch.stack([ramp * 3 + 7, -ramp, torch.full((4, 8), 5.0)])
    img = depth_mod.depth_to_image(depth, (16, 24))
    assert img.shape == (3, 16, 24, 3) and img.dtype == np.uint8
    for f in (0, 1):
        assert img[f].min() == 0 and img[f].max() == 255
    assert (img[2] == 0).all()  # constant: no information, black
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    # Frame 0: nearest (largest) on the right is brightest; frame 1 is the mirror image.
    assert img[0, :, -1].min() == 255 and img[0, :, 0].max() == 0
    assert img[1, :, 0].min() == 255 and img[1, :, -1].max() == 0
    assert (np.diff(img[0, 5, :, 0].astype(int)) >= 0).all()


def test_depth_to_image_same_size_is_exact_min_max():
    depth = np.array([[[0.0, 1.0], [2.0, 4.0]]], dtype=np.float32)
    img = depth_mod.depth_to_image(depth, (2, 2))
    assert img[0, :, :, 0].tolist() == [[0, 64], [128, 255]]


@pytest.mark.parametrize("name", ["depth_anything", "midas"])
def test_estimate_shape_range_and_batching(estimators, name):
    est = estimators[name]
    frames = _frames()
    out = est.estimate(frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    for f in out:
        assert f.min() == 0 and f.max() == 255
    est.batch_size = 1
    try:
        one_by_one = est.estimate(frames)
    finally:
        est.batch_size = 8
    # Float reductions differ slightly between batch sizes; allow a 1-level rounding difference.
    assert np.abs(out.astype(int) - one_by_one.astype(int)).max() <= 1


def test_near_is_bright_through_estimate(estimators, monkeypatch):
    est = estimators["depth_anything"]

    class Out:
        pass

    def fake_forward(pixel_values):
        n, _, h, w = pixel_values.shape
        o = Out()
        # Disparity grows downwards: the bottom of the picture is nearest.
        o.predicted_depth = torch.linspace(0, 10, h)[:, None].expand(h, w).repeat(n, 1, 1)
        return o

    monkeypatch.setattr(est, "model", fake_forward)
    frames = _frames(2, 30, 50)
    out = est.estimate(frames)
    assert out.shape == (2, 30, 50, 3)
    assert (out[:, -1] == 255).all() and (out[:, 0] == 0).all()
    assert (np.diff(out[0, :, 10, 0].astype(int)) >= 0).all()


def test_missing_folder_names_download_command(tmp_path):
    with pytest.raises(AnnotatorNotFoundError, match="vace download --annotators"):
        depth_mod.load_depth_anything(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotatorNotFoundError, match="config.json"):
        depth_mod.load_midas(tmp_path / "empty")


def test_rejects_non_uint8(estimators):
    with pytest.raises(ValueError, match="uint8"):
        estimators["midas"].estimate(np.zeros((1, 8, 8, 3), dtype=np.float32))


def test_vace_depth_sizes():
    # VACE's MiDaS input: the frame's own short side up to 1024, sides multiples of 64.
    assert depth_mod.vace_depth_size(480, 832) == (512, 832)
    assert depth_mod.vace_depth_size(720, 1280) == (704, 1280)
    assert depth_mod.vace_depth_size(1080, 1920) == (1024, 1792)
    assert depth_mod.vace_depth_size(240, 416) == (256, 384)


def test_midas_runs_at_the_frames_aspect_not_squashed(estimators, monkeypatch):
    est = estimators["midas"]
    seen = []
    real = depth_mod.hybrid_disparity

    def spy(model, pixel_values):
        disparity = real(model, pixel_values)
        seen.append((tuple(pixel_values.shape), tuple(disparity.shape)))
        return disparity

    monkeypatch.setattr(depth_mod, "hybrid_disparity", spy)
    frames = _frames(2, 240, 416)
    out = est.estimate(frames)
    # The tiny model's config says 64x64 (the real one 384x384); it runs at 384x256 instead, 384 columns.
    assert seen == [((2, 3, 256, 384), (2, 256, 384))]
    assert out.shape == frames.shape
    assert all(f.min() == 0 and f.max() == 255 for f in out)


def test_hybrid_path_is_transformers_own_network_at_the_config_size(estimators):
    model = estimators["midas"].model
    pixel_values = torch.from_numpy(np.random.default_rng(4).standard_normal((2, 3, 64, 64), np.float32))
    with torch.inference_mode():
        expected = model(pixel_values=pixel_values).predicted_depth
        ours = depth_mod.hybrid_disparity(model, pixel_values)
        with pytest.raises(ValueError, match="Input image size"):
            model(pixel_values=pixel_values[..., :48])  # what transformers alone does off its size
    torch.testing.assert_close(ours, expected)
    assert model.dpt.embeddings.image_size == (64, 64)  # restored after each call
