"""RIFE v4.25 (hzwer/Practical-RIFE, `flownet.pkl`), with its IFNet written here.

The module tree mirrors Practical-RIFE's `IFNet_HDv3` so the published checkpoint loads by name
(`block0.conv0.0.0.weight`, `block3.convblock.7.beta`, `encode.cnn3.weight`, ...; the file stores them with a
`module.` prefix, which is stripped). Block widths are read from the checkpoint, so the same loader takes the
real file (192, 128, 96, 64, 32) and the tiny test one. RIFE v4 takes the time step as an input, so every
in-between is computed directly from the two originals.

How IFNet works, in short: five blocks estimate bidirectional flow coarse to fine (at 1/16 .. 1/1 of the
image); each refines the previous flow from both frames warped by it, their 16-channel features (`encode`)
and the time step. The output blends the two warped frames with a learnt soft mask.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from preprocessors.annotators._common import require_folder, resolve_device
from preprocessors.interpolation.base import PairInterpolator

RIFE_FILE = "flownet.pkl"
REAL_WIDTHS = (192, 128, 96, 64, 32)
FEATURES = 16  # channels of `encode`'s output, per frame
# Block 0 works at 1/16 scale and halves twice more; a multiple of 64 keeps every level's size whole.
PAD_MULTIPLE = 64


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
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * 13, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float):
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, flow), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, FEATURES, 3, 2, 1)
        self.cnn1 = nn.Conv2d(FEATURES, FEATURES, 3, 1, 1)
        self.cnn2 = nn.Conv2d(FEATURES, FEATURES, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(FEATURES, FEATURES, 4, 2, 1)
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
    def __init__(self, widths: tuple[int, ...] = REAL_WIDTHS) -> None:
        super().__init__()
        first_in = 3 + 3 + 2 * FEATURES + 1  # both frames, their features, time
        # warped frames and features, time, mask, block features, flow
        later_in = 3 + 3 + 2 * FEATURES + 1 + 1 + 8 + 4
        for i, c in enumerate(widths):
            setattr(self, f"block{i}", IFBlock(first_in if i == 0 else later_in, c))
        self.encode = Head()
        self.num_blocks = len(widths)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor, scale: float = 1.0):
        """img0, img1 (B, 3, H, W) in [0, 1], H and W multiples of 64 / scale; t (B, 1, 1, 1) in (0, 1)."""
        timestep = t.expand(-1, 1, img0.shape[2], img0.shape[3])
        f0, f1 = self.encode(img0), self.encode(img1)
        scales = [2 ** (self.num_blocks - 1 - i) / scale for i in range(self.num_blocks)]  # 16 .. 1
        flow = mask = feat = None
        warped0, warped1 = img0, img1
        for i, s in enumerate(scales):
            block = getattr(self, f"block{i}")
            if flow is None:
                flow, mask, feat = block(torch.cat((img0, img1, f0, f1, timestep), 1), None, s)
            else:
                wf0, wf1 = warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])
                x = torch.cat((warped0, warped1, wf0, wf1, timestep, mask, feat), 1)
                delta, mask, feat = block(x, flow, s)
                flow = flow + delta
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


def widths_from_state_dict(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    widths = []
    while f"block{len(widths)}.conv0.1.0.weight" in state:
        widths.append(int(state[f"block{len(widths)}.conv0.1.0.weight"].shape[0]))
    if not widths:
        raise ValueError("not a RIFE IFNet checkpoint: no block0.conv0.1.0.weight")
    return tuple(widths)


class RifeInterpolator(PairInterpolator):
    def __init__(self, net: IFNet, device: torch.device, batch_size: int = 4, scale: float = 1.0) -> None:
        self.net = net
        self.device = device
        self.batch_size = batch_size
        self.scale = scale  # 0.5 for 4K input, as Practical-RIFE suggests
        self.dtype = next(net.parameters()).dtype

    def _between(self, img0, img1, ts):
        h, w = img0.shape[-2:]
        multiple = int(PAD_MULTIPLE / self.scale)
        pad = (0, -w % multiple, 0, -h % multiple)
        a = F.pad(img0, pad, mode="replicate").to(self.dtype)
        b = F.pad(img1, pad, mode="replicate").to(self.dtype)
        out = []
        for t in ts:
            step = torch.full((len(a), 1, 1, 1), t, device=self.device, dtype=self.dtype)
            out.append(self.net(a, b, step, self.scale)[..., :h, :w].float())
        return out


def load_rife(folder: Path, device=None, batch_size: int = 4, scale: float = 1.0) -> RifeInterpolator:
    """Load Practical-RIFE v4.25's `flownet.pkl` (the `train_log` folder) from `folder`."""
    folder = require_folder(folder, "RIFE", (RIFE_FILE,))
    dev = resolve_device(device)
    raw = torch.load(folder / RIFE_FILE, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    net = IFNet(widths_from_state_dict(state))
    expected = set(net.state_dict())
    missing = expected - set(state)
    if missing:
        raise ValueError(f"{folder / RIFE_FILE} is not a RIFE v4.25 IFNet; missing {sorted(missing)[:5]}")
    # Extra keys (e.g. training-only heads of other 4.x releases) are ignored; shapes must match.
    net.load_state_dict({k: state[k] for k in expected})
    if dev.type == "cuda":
        net = net.half()
    return RifeInterpolator(net.to(dev).eval(), dev, batch_size, scale)
