from __future__ import annotations

import numpy as np
import pytest
import torch

from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.tiny import build_tiny_film, build_tiny_rife
from preprocessors.interpolation.base import LinearBlend, output_length
from preprocessors.interpolation.film import PAD_MULTIPLE, load_film
from preprocessors.interpolation.rife import IFNet, load_rife, warp


def _frames(n=4, h=40, w=72):
    return np.random.default_rng(1).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


class _StrictBlend(torch.nn.Module):
    """Checks the call contract the real export has, then cross-fades."""

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        assert img0.shape[2] % 64 == 0 and img0.shape[3] % 64 == 0, "not padded"
        assert img0.shape == img1.shape and dt.shape == (img0.shape[0], 1), "bad shapes"
        assert float(img0.min()) >= 0.0 and float(img0.max()) <= 1.0, "not in [0, 1]"
        t = dt.view(-1, 1, 1, 1)
        return img0 * (1 - t) + img1 * t


@pytest.fixture(scope="module")
def strict_film(tmp_path_factory):
    folder = tmp_path_factory.mktemp("strict_film")
    torch.jit.save(torch.jit.script(_StrictBlend()), str(folder / "film_net_fp32.pt"))
    return load_film(folder, device="cpu", batch_size=2)


@pytest.mark.parametrize("factor", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_length_and_originals_kept(strict_film, n, factor):
    frames = _frames(n)
    out = strict_film.interpolate(frames, factor)
    assert out.shape == (output_length(n, factor), 40, 72, 3) == ((n - 1) * (factor + 1) + 1, 40, 72, 3)
    assert out.dtype == np.uint8
    assert np.array_equal(out[:: factor + 1], frames)


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_in_betweens_follow_time(strict_film, factor):
    a = np.zeros((1, 16, 16, 3), np.uint8)
    b = np.full((1, 16, 16, 3), 240, np.uint8)
    out = strict_film.interpolate(np.concatenate([a, b]), factor)
    # Bisection (factor 1, 3) and direct times (factor 2) both land on the linear ramp for a cross-fade.
    expected = [round(240 * j / (factor + 1)) for j in range(factor + 2)]
    assert [int(f[0, 0, 0]) for f in out] == pytest.approx(expected, abs=1)


def test_film_matches_linear_blend_for_a_cross_fade(strict_film):
    frames = _frames(3)
    out = strict_film.interpolate(frames, 3)
    ref = LinearBlend().interpolate(frames, 3)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_tiny_film_builder_loads(tmp_path):
    film = load_film(build_tiny_film(tmp_path / "film"), device="cpu")
    frames = _frames(3, 24, 40)
    out = film.interpolate(frames, 1)
    assert out.shape == (5, 24, 40, 3)
    assert np.array_equal(out[::2], frames)
    assert PAD_MULTIPLE == 64


def test_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        LinearBlend().interpolate(np.zeros((2, 4, 4, 3), np.float32), 1)
    with pytest.raises(ValueError, match="factor"):
        LinearBlend().interpolate(_frames(2), -1)


def test_missing_files(tmp_path):
    with pytest.raises(AnnotatorNotFoundError, match="vace download --annotators"):
        load_film(tmp_path / "nope")
    with pytest.raises(AnnotatorNotFoundError, match="film_net"):
        load_film(tmp_path)
    with pytest.raises(AnnotatorNotFoundError, match="flownet.pkl"):
        load_rife(tmp_path)


def test_rife_parameter_names_and_shapes_match_v4_25():
    state = IFNet().state_dict()
    assert state["block0.conv0.0.0.weight"].shape == (96, 39, 3, 3)
    assert state["block1.conv0.0.0.weight"].shape == (64, 52, 3, 3)
    assert state["block0.convblock.7.beta"].shape == (1, 192, 1, 1)
    assert state["block4.lastconv.0.weight"].shape == (32, 52, 4, 4)
    assert state["encode.cnn3.weight"].shape == (16, 16, 4, 4)
    assert not any(k.startswith("block5") for k in state)


def test_warp_identity_and_shift():
    img = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    flow = torch.zeros(2, 2, 5, 7)
    assert torch.allclose(warp(img, flow), img, atol=1e-4)
    flow[:, 0] = 1.0  # sample one pixel to the right
    shifted = warp(img, flow)
    assert torch.allclose(shifted[..., :-1], img[..., 1:], atol=1e-3)


@pytest.fixture(scope="module")
def tiny_rife(tmp_path_factory):
    return load_rife(build_tiny_rife(tmp_path_factory.mktemp("rife")), device="cpu")


@pytest.mark.parametrize("factor", [1, 2])
def test_tiny_rife_loads_and_keeps_originals(tiny_rife, factor):
    frames = _frames(3, 40, 72)
    out = tiny_rife.interpolate(frames, factor)
    assert out.shape == (output_length(3, factor), 40, 72, 3)
    assert np.array_equal(out[:: factor + 1], frames)


def test_rife_without_flow_or_mask_averages(tiny_rife):
    net = tiny_rife.net
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        with torch.no_grad():
            for i in range(net.num_blocks):
                for p in getattr(net, f"block{i}").lastconv.parameters():
                    p.zero_()
        a, b = _frames(2, 24, 40)
        out = tiny_rife.interpolate(np.stack([a, b]), 1)
        expected = (a.astype(float) + b) / 2
        assert np.abs(out[1] - expected).max() <= 1.0
    finally:
        net.load_state_dict(saved)
