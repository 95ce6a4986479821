from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.tiny import build_tiny_film, build_tiny_rife
from preprocessors.interpolation.base import PairInterpolator, output_length
from preprocessors.interpolation.film import PAD_MULTIPLE, FilmInterpolator, load_film, recursion_order
from preprocessors.interpolation.rife import IFNet, RifeInterpolator, load_rife, pad_multiple, warp


class LinearBlend(PairInterpolator):
    """Cross-fade: the simplest PairInterpolator, needing no weights (checks the shared batching logic)."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 4) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size

    def _between(self, img0, img1, ts):
        return [img0 * (1 - t) + img1 * t for t in ts]


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


@pytest.mark.parametrize(
    ("step", "order"),
    [
        (2, [(0, 1, 2)]),
        (4, [(0, 2, 4), (0, 1, 2), (2, 3, 4)]),  # bisection: every dt is 0.5
        (3, [(0, 1, 3), (1, 2, 3)]),  # 1/3 from the ends, then the middle of (1/3, 1) at dt 0.5
        (6, [(0, 3, 6), (0, 1, 3), (1, 2, 3), (3, 4, 6), (4, 5, 6)]),
    ],
)
def test_film_recursion_order(step, order):
    assert recursion_order(step) == order


class _FilmSpy(torch.nn.Module):
    """Plain-module stand-in for the export: records its inputs, returns img0 + img1 (may exceed 1)."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, img0, img1, dt):
        self.calls.append((img0.clone(), img1.clone(), dt.clone()))
        return img0 + img1


def test_film_pads_centred_with_zeros_clamps_and_recurses():
    spy = _FilmSpy()
    film = FilmInterpolator(spy, torch.device("cpu"))
    frames = _frames(2, 40, 72)
    out = film.interpolate(frames, 2)
    assert [round(float(c[2][0, 0]), 6) for c in spy.calls] == [round(1 / 3, 6), 0.5]
    img0, img1, dt = spy.calls[0]
    assert img0.shape == (1, 3, 64, 128) and dt.shape == (1, 1)
    # 24 rows and 56 columns of padding, split evenly around the picture (the export's util.pad_batch).
    original = torch.from_numpy(frames[:1]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(img0[..., 12:52, 28:100], original)
    assert not img0[..., :12, :].any() and not img0[..., 52:, :].any()
    assert not img0[..., :28].any() and not img0[..., 100:].any()
    # The first in-between is img0 + img1 clamped; the second call is fed that clamped frame.
    first = np.clip(frames[0].astype(int) + frames[1], 0, 255)
    assert np.abs(out[1].astype(int) - first).max() <= 1
    second_in = spy.calls[1][0][..., 12:52, 28:100]
    assert float(second_in.max()) <= 1.0


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


# --- RIFE: the published checkpoint's layout, written down as data ------------------------------------------
#
# Practical-RIFE v4.25 / v4.26 `IFNet_HDv3` (see rife.py's docstring for the sources): Head `encode` =
# Conv2d(3,16,3,2,1), Conv2d(16,16,3,1,1) x2, ConvTranspose2d(16,F,4,2,1) with F = 4 feature channels;
# five IFBlock(cin, c) with c = 192, 128, 96, 64, 32 and cin = 7 + 2F (block0) or 8 + 4 + 8 + 2F (the
# others); an IFBlock is conv0 = [Conv2d(cin, c/2, 3, 2, 1), Conv2d(c/2, c, 3, 2, 1)] (each followed by a
# LeakyReLU, hence `conv0.k.0`), convblock = 8 x ResConv(c) (`conv` 3x3 and `beta` (1, c, 1, 1)), and
# lastconv = [ConvTranspose2d(c, 4*13, 4, 2, 1), PixelShuffle(2)].

V4_25_WIDTHS = (192, 128, 96, 64, 32)
V4_25_FEATURES = 4
V4_25_KEYS = 158  # 5 blocks x (4 conv0 + 8 x 3 convblock + 2 lastconv) + 8 encode
V4_25_PARAMETERS = 5_664_776  # summed by hand from the shapes below, not read from our module
V4_26_HEAVY_PARAMETERS = 5_723_156  # the same with 16 feature channels
V4_25_SAMPLE_SHAPES = {
    "encode.cnn0.weight": (16, 3, 3, 3),
    "encode.cnn2.bias": (16,),
    "encode.cnn3.weight": (16, 4, 4, 4),  # ConvTranspose2d: (in, out, kh, kw)
    "encode.cnn3.bias": (4,),
    "block0.conv0.0.0.weight": (96, 15, 3, 3),
    "block0.conv0.1.0.weight": (192, 96, 3, 3),
    "block0.convblock.0.conv.weight": (192, 192, 3, 3),
    "block0.convblock.7.beta": (1, 192, 1, 1),
    "block0.lastconv.0.weight": (192, 52, 4, 4),
    "block0.lastconv.0.bias": (52,),
    "block1.conv0.0.0.weight": (64, 28, 3, 3),
    "block3.convblock.4.conv.bias": (64,),
    "block4.conv0.0.0.weight": (16, 28, 3, 3),
    "block4.lastconv.0.weight": (32, 52, 4, 4),
}


def published_shapes(widths=V4_25_WIDTHS, features=V4_25_FEATURES) -> dict[str, tuple[int, ...]]:
    """Every inference tensor of a v4.25-style `flownet.pkl` (without `module.`), from the layout above."""
    shapes = {
        "encode.cnn0.weight": (16, 3, 3, 3), "encode.cnn0.bias": (16,),
        "encode.cnn1.weight": (16, 16, 3, 3), "encode.cnn1.bias": (16,),
        "encode.cnn2.weight": (16, 16, 3, 3), "encode.cnn2.bias": (16,),
        "encode.cnn3.weight": (16, features, 4, 4), "encode.cnn3.bias": (features,),
    }
    for i, c in enumerate(widths):
        cin = 7 + 2 * features if i == 0 else 8 + 4 + 8 + 2 * features
        p = f"block{i}."
        shapes[p + "conv0.0.0.weight"] = (c // 2, cin, 3, 3)
        shapes[p + "conv0.0.0.bias"] = (c // 2,)
        shapes[p + "conv0.1.0.weight"] = (c, c // 2, 3, 3)
        shapes[p + "conv0.1.0.bias"] = (c,)
        for k in range(8):
            shapes[p + f"convblock.{k}.beta"] = (1, c, 1, 1)
            shapes[p + f"convblock.{k}.conv.weight"] = (c, c, 3, 3)
            shapes[p + f"convblock.{k}.conv.bias"] = (c,)
        shapes[p + "lastconv.0.weight"] = (c, 52, 4, 4)
        shapes[p + "lastconv.0.bias"] = (52,)
    return shapes


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _published_file(folder, widths=V4_25_WIDTHS, features=V4_25_FEATURES, extra=None, drop=()):
    """A `flownet.pkl` shaped like the published one: `module.` keys, random values, plus the training-only
    `teacher` (an IFBlock) and `caltime` (a conv stack) the real files carry."""
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) * 0.01
             for k, shape in published_shapes(widths, features).items() if k not in drop}
    state["teacher.conv0.0.0.weight"] = torch.zeros(32, 8 + 4 + 8 + 3 + 2 * features, 3, 3)
    state["teacher.lastconv.0.bias"] = torch.zeros(52)
    for k in (0, 2, 4, 6, 8):
        state[f"caltime.{k}.weight"] = torch.zeros(8, 8, 3, 3)
        state[f"caltime.{k}.bias"] = torch.zeros(8)
    state.update(extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, folder / "flownet.pkl")
    return folder, state


def test_rife_state_dict_is_the_published_v4_25_v4_26_layout():
    shapes = _shapes(IFNet())
    expected = published_shapes()
    assert set(shapes) == set(expected)  # names: nothing missing, nothing extra
    assert shapes == expected  # and every shape
    assert len(shapes) == V4_25_KEYS
    assert {k: shapes[k] for k in V4_25_SAMPLE_SHAPES} == V4_25_SAMPLE_SHAPES
    assert sum(p.numel() for p in IFNet().parameters()) == V4_25_PARAMETERS
    assert sum(p.numel() for p in IFNet(features=16).parameters()) == V4_26_HEAVY_PARAMETERS
    assert sum(math.prod(s) for s in expected.values()) == V4_25_PARAMETERS  # the data agrees with itself


def test_published_layout_loads_strictly_with_training_modules_dropped(tmp_path):
    folder, state = _published_file(tmp_path / "rife")
    rife = load_rife(folder, device="cpu")
    loaded = rife.net.state_dict()
    assert set(loaded) == set(published_shapes())
    for key in ("encode.cnn3.weight", "block0.conv0.0.0.weight", "block4.lastconv.0.bias"):
        assert torch.equal(loaded[key], state[key])
    frames = _frames(2, 24, 40)
    out = rife.interpolate(frames, 1)
    assert out.shape == (3, 24, 40, 3) and np.array_equal(out[::2], frames)


def test_file_without_module_prefix_loads(tmp_path):
    folder, state = _published_file(tmp_path / "rife")
    torch.save(dict(state), folder / "flownet.pkl")
    assert load_rife(folder, device="cpu").net.encode.cnn3.out_channels == 4


@pytest.mark.parametrize(("widths", "features"), [((384, 256, 192, 128, 64), 4), (V4_25_WIDTHS, 16)])
def test_heavy_variants_load(tmp_path, widths, features):
    """4.25.heavy (wider blocks) and 4.26.heavy (16 feature channels) share the forward."""
    net = load_rife(_published_file(tmp_path / "rife", widths, features)[0], device="cpu").net
    assert _shapes(net) == published_shapes(widths, features)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"widths": (192, 128, 96, 64, 24)}, "4.25.lite"),
        ({"drop": ("block2.convblock.3.beta",)}, "Missing key"),
        ({"extra": {"refine.conv.weight": torch.zeros(1)}}, "Unexpected key"),
        ({"extra": {"encode.cnn0.weight": torch.zeros(32, 3, 3, 3)}}, "size mismatch"),
    ],
)
def test_other_layouts_are_refused(tmp_path, kwargs, match):
    folder, _ = _published_file(tmp_path / "rife", **kwargs)
    with pytest.raises(ValueError, match=match):
        load_rife(folder, device="cpu")


def test_four_block_releases_are_refused(tmp_path):
    folder, _ = _published_file(tmp_path / "rife", drop=tuple(published_shapes())[-30:])  # block4's keys
    with pytest.raises(ValueError, match="4 blocks"):
        load_rife(folder, device="cpu")


class _SpyNet(torch.nn.Module):
    """Records what RifeInterpolator feeds the network; returns img0."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, img0, img1, t, scale):
        self.calls.append((img0.clone(), img1.clone(), t.clone(), scale))
        return img0


@pytest.mark.parametrize(("scale", "multiple"), [(1.0, 64), (0.5, 128), (0.25, 256), (2.0, 64)])
def test_rife_input_is_zero_padded_right_and_bottom(scale, multiple):
    assert pad_multiple(scale) == multiple
    spy = _SpyNet()
    frames = _frames(2, 40, 72)
    out = RifeInterpolator(spy, torch.device("cpu"), scale=scale).interpolate(frames, 2)
    assert [float(c[2].flatten()[0]) for c in spy.calls] == pytest.approx([1 / 3, 2 / 3])
    img0, _, t, s = spy.calls[0]
    assert s == scale and t.shape == (1, 1, 1, 1)
    assert img0.shape == (1, 3, multiple, -(-72 // multiple) * multiple)
    assert torch.equal(img0[..., :40, :72], torch.from_numpy(frames[:1]).permute(0, 3, 1, 2).float() / 255)
    assert not img0[..., 40:, :].any() and not img0[..., :, 72:].any()  # zeros, as Practical-RIFE pads
    assert np.array_equal(out[1], frames[0])  # cropped back from the top left


def test_rife_scale_must_be_one_of_practical_rifes():
    with pytest.raises(ValueError, match="scale"):
        RifeInterpolator(_SpyNet(), torch.device("cpu"), scale=0.3)


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


def test_rife_download_extracts_train_log_flownet(tmp_path, monkeypatch):
    """`vace download --annotators` takes train_log/flownet.pkl out of the zip, not a __MACOSX shadow."""
    import zipfile

    import huggingface_hub

    from preprocessors.annotators import sources

    archive = tmp_path / sources.RIFE_ZIP
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("__MACOSX/train_log/._flownet.pkl", b"finder")
        zf.writestr("__MACOSX/train_log/flownet.pkl", b"finder")
        zf.writestr("train_log/IFNet_HDv3.py", b"")
        zf.writestr("train_log/flownet.pkl", b"weights")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename: str(archive))
    sources.rife(tmp_path / "rife")
    assert (tmp_path / "rife" / "flownet.pkl").read_bytes() == b"weights"
