"""RIFE v4.25 / v4.26 (hzwer/Practical-RIFE, `train_log/flownet.pkl`), with its IFNet written here.

Supported checkpoints: Practical-RIFE **v4.25** (2024-09-19) and **v4.26** (2024-09-21, what `vace download
--annotators` fetches as `RIFEv4.26_0921.zip`). Both use the same `IFNet_HDv3`: a `Head` feature extractor
(`encode.cnn0..cnn3`, 3 -> 16 -> 16 -> 16 -> **4** channels per frame) and five flow blocks `block0..block4`
of widths 192, 128, 96, 64, 32, run at 1/16, 1/8, 1/4, 1/2 and 1/1 of the image (`scale_list = [16, 8, 4, 2,
1] / scale`). The "heavy" variants load too, with the same forward: 4.25.heavy (widths doubled) and
4.26.heavy (16 feature channels). 4.25.lite is refused: its widths end in 24 and its scale list (32, 16, 8,
4, 1) differs, so running it here would compute something else. Releases before 4.25 (four blocks, another
Head) are refused by the loader with a clear message.

What was checked, and against what (see tests/annotators/test_interpolation.py, which pins the key set, the
shapes and the parameter count as data):

- The module tree and the forward follow Practical-RIFE's `train_log/IFNet_HDv3.py` as committed (version
  tag 4.25) in hzwer/Practical-RIFE's pull request #146 (commit f7edc9509e1a2d1e16a168a0e066f7494abecb87,
  2025-04-28), with its `RIFE_HDv3.py` (`inference`: `scale_list = [16/scale, 8/scale, 4/scale, 2/scale,
  1/scale]`, `load_model`: `torch.load` then `module.` stripped) and `model/warplayer.py`. That copy's Head
  ends in 16 channels, which is the 4.26.heavy layout; the channel counts of the published v4.25 and v4.26
  `flownet.pkl` (Head output 4: block0 takes 7 + 2*4 channels, the others 8 + 4 + 8 + 2*4) were taken from
  HolyWu/vs-rife (commit 2a7f2c8d1f614642a996a52d90d74aa25cf1ba22), which loads those files' `encode.*`
  with strict key and shape matching. The number of feature channels is therefore read from the file
  (`encode.cnn3.weight`), as are the block widths.
- The published files also hold training-only modules (`teacher.*`, `caltime.*`, absent from the inference
  network; Practical-RIFE loads with `strict=False` and ignores them). They are dropped by name; everything
  else must match exactly (`load_state_dict(strict=True)`), so any other layout fails loudly.
- Inputs are padded with zeros to a multiple of 64 (of 64 / scale below scale 1), as Practical-RIFE's
  `inference_img.py` does: block0's 1/16 input is halved twice more, so that is the least size that comes back
  whole. The time step is a constant (B, 1, H, W) channel, as `IFNet.forward` builds it from a float.

Not checked here: loading the real 24.6 MB v4.26 file itself (no model hub offline); that its 158 inference
tensors match the test's list is inferred from the sources above.

How IFNet works, in short: five blocks estimate bidirectional flow coarse to fine; each refines the previous
flow from both frames warped by it, their features (`encode`) warped likewise, the time step, the previous
mask logit and 8 feature channels of the previous block. The output blends the two warped frames with the
last block's mask (sigmoid).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from preprocessors.annotators._common import require_folder, resolve_device
from preprocessors.interpolation.base import PairInterpolator

RIFE_FILE = "flownet.pkl"
REAL_WIDTHS = (192, 128, 96, 64, 32)  # v4.25 / v4.26
REAL_FEATURES = 4  # channels of `encode`'s output per frame in v4.25 / v4.26 (16 in 4.26.heavy)
HEAD_WIDTH = 16  # `encode`'s hidden width, the same in every 4.25+ variant
SCALES = (16, 8, 4, 2, 1)  # each block's downscale at scale=1.0; one per block
BLOCK_OUT = 4 + 1 + 8  # flow (both directions), mask logit, features for the next block
# Keys of training-only modules in the published files; not part of the inference network.
TRAINING_ONLY = ("teacher.", "caltime.")
# Practical-RIFE's --scale choices (0.5 is its advice for 4K input).
SCALE_CHOICES = (0.25, 0.5, 1.0, 2.0, 4.0)
LITE_WIDTHS = (192, 128, 96, 64, 24)  # 4.25.lite: other scale list, refused


def pad_multiple(scale: float = 1.0) -> int:
    """Least multiple of the input size that every block's resolution divides: 64 at scale 1."""
    return max(64, int(64 / scale))


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True))


class ResConv(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """Predicts 4 flow channels (both directions), 1 mask logit and 8 feature channels at 1/scale."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(cin, c // 2), _conv(c // 2, c))
        self.convblock = nn.Sequential(*[ResConv(c) for _ in range(8)])
        # ConvTranspose (x2) then PixelShuffle (x2): 4 * 13 channels become 13 at 4x the size.
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * BLOCK_OUT, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float):
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, flow), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


class Head(nn.Module):
    def __init__(self, features: int = REAL_FEATURES) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, HEAD_WIDTH, 3, 2, 1)
        self.cnn1 = nn.Conv2d(HEAD_WIDTH, HEAD_WIDTH, 3, 1, 1)
        self.cnn2 = nn.Conv2d(HEAD_WIDTH, HEAD_WIDTH, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(HEAD_WIDTH, features, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: output(p) = image(p + flow(p)), flow in pixels, borders repeated."""
    _, _, h, w = flow.shape
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    gx = grid_x + flow[:, 0] / ((w - 1.0) / 2.0)
    gy = grid_y + flow[:, 1] / ((h - 1.0) / 2.0)
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = REAL_WIDTHS, features: int = REAL_FEATURES) -> None:
        super().__init__()
        if len(widths) != len(SCALES):
            raise ValueError(f"IFNet v4.25+ has {len(SCALES)} blocks, got widths {widths}")
        # img0, img1, their features, time step
        first_in = 3 + 3 + 2 * features + 1
        # warped img0/img1, warped features, time step, mask logit, previous block's features, flow
        later_in = 3 + 3 + 2 * features + 1 + 1 + (BLOCK_OUT - 5) + 4
        for i, c in enumerate(widths):
            setattr(self, f"block{i}", IFBlock(first_in if i == 0 else later_in, c))
        self.encode = Head(features)
        self.num_blocks = len(widths)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor, scale: float = 1.0):
        """img0, img1 (B, 3, H, W) in [0, 1], H and W multiples of `pad_multiple(scale)`; t (B, 1, 1, 1)."""
        timestep = t.expand(-1, 1, img0.shape[2], img0.shape[3])
        f0, f1 = self.encode(img0), self.encode(img1)
        flow = mask = feat = None
        warped0, warped1 = img0, img1
        for i, s in enumerate(SCALES):
            block = getattr(self, f"block{i}")
            if flow is None:
                flow, mask, feat = block(torch.cat((img0, img1, f0, f1, timestep), 1), None, s / scale)
            else:
                wf0, wf1 = warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])
                x = torch.cat((warped0, warped1, wf0, wf1, timestep, mask, feat), 1)
                delta, mask, feat = block(x, flow, s / scale)
                flow = flow + delta
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


def inference_state(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `flownet.pkl` dict as IFNet's state dict: `module.` stripped, training-only modules dropped."""
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    return {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}


def layout_from_state_dict(state: dict[str, torch.Tensor]) -> tuple[tuple[int, ...], int]:
    """(block widths, feature channels) of a checkpoint; ValueError if it is not a supported IFNet."""
    widths = []
    while f"block{len(widths)}.conv0.1.0.weight" in state:
        widths.append(int(state[f"block{len(widths)}.conv0.1.0.weight"].shape[0]))
    head = state.get("encode.cnn3.weight")
    if not widths or head is None or head.ndim != 4:
        raise ValueError("not a Practical-RIFE v4.25/v4.26 IFNet: no block0.conv0.1.0.weight or "
                         "encode.cnn3.weight")
    if len(widths) != len(SCALES):
        raise ValueError(f"a RIFE IFNet with {len(widths)} blocks (widths {tuple(widths)}); only the "
                         "five-block v4.25 / v4.26 layout is supported (earlier releases have four)")
    if tuple(widths) == LITE_WIDTHS:
        raise ValueError("this looks like RIFE 4.25.lite (block widths end in 24); its scale list "
                         "(32, 16, 8, 4, 1) differs from v4.25 / v4.26, so it is not supported")
    return tuple(widths), int(head.shape[1])  # ConvTranspose2d weight: (in, out, kh, kw)


class RifeInterpolator(PairInterpolator):
    def __init__(self, net: IFNet, device: torch.device, batch_size: int = 4, scale: float = 1.0) -> None:
        if scale not in SCALE_CHOICES:
            raise ValueError(f"RIFE scale must be one of {SCALE_CHOICES}, got {scale}")
        self.net = net
        self.device = device
        self.batch_size = batch_size
        self.scale = scale  # 0.5 for 4K input, as Practical-RIFE suggests
        self.dtype = next(net.parameters()).dtype

    def _between(self, img0, img1, ts):
        h, w = img0.shape[-2:]
        multiple = pad_multiple(self.scale)
        pad = (0, -w % multiple, 0, -h % multiple)  # right and bottom, zeros (Practical-RIFE's F.pad)
        a = F.pad(img0, pad).to(self.dtype)
        b = F.pad(img1, pad).to(self.dtype)
        out = []
        for t in ts:
            step = torch.full((len(a), 1, 1, 1), t, device=self.device, dtype=self.dtype)
            out.append(self.net(a, b, step, self.scale)[..., :h, :w].float())
        return out


def load_rife(folder: Path, device=None, batch_size: int = 4, scale: float = 1.0) -> RifeInterpolator:
    """Load Practical-RIFE v4.25's or v4.26's `flownet.pkl` (from its `train_log` folder) from `folder`."""
    folder = require_folder(folder, "RIFE", (RIFE_FILE,))
    dev = resolve_device(device)
    raw = torch.load(folder / RIFE_FILE, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise ValueError(f"{folder / RIFE_FILE} is not a state dict ({type(raw).__name__})")
    state = inference_state(raw)
    try:
        widths, features = layout_from_state_dict(state)
        net = IFNet(widths, features)
        net.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{folder / RIFE_FILE} is not a RIFE v4.25 / v4.26 IFNet: {exc}") from exc
    if dev.type == "cuda":
        net = net.half()
    return RifeInterpolator(net.to(dev).eval(), dev, batch_size, scale)
