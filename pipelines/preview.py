"""Live previews: the current latents as a small RGB image, by a linear map of Wan's 16 latent channels.

The map (16 channels + bias -> RGB) is fitted by least squares on this worker's own VAE encodes: every
time the pipeline encodes a conditioning video or reference image, the pixels (average-pooled to the
latent grid: 8x8 in space, 4 frames in time) and their latents are added to running sums, and the map is
solved from them. So it fits whichever VAE is loaded (the real one or `--model tiny`'s) with no table of
constants, costs one small matrix product per encode, and improves as jobs run. A job whose inputs are
flat (an all-gray generation area) adds nothing; the map of earlier jobs is used then.

A preview is an animated image of the latent frames at the latent grid's size (`image`), so the cost per
preview is one (16 x N) product where the latents are and an image encode of a few kilobytes
(benchmarks/preview_cost.py measures it).
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, features

TEMPORAL = 4  # Wan's VAE: one latent frame per 4 video frames after the first
SPATIAL = 8  # and 8x8 pixels per latent
RIDGE = 1e-3
MIN_PIXEL_STD = 0.02  # an (almost) flat input says nothing about colours


class LatentPreview:
    """Per worker: fits the latent -> RGB map from encodes, renders latents as a small animation."""

    def __init__(self, latents_mean: list[float] | None = None, latents_std: list[float] | None = None,
                 channels: int = 16) -> None:
        self.channels = channels
        # The pipeline denoises normalised latents, (z - mean) / std; the map is fitted on raw z.
        self.mean = torch.tensor(latents_mean or [0.0] * channels, dtype=torch.float64)
        self.std = torch.tensor(latents_std or [1.0] * channels, dtype=torch.float64)
        self._ata = torch.zeros(channels + 1, channels + 1, dtype=torch.float64)
        self._aty = torch.zeros(channels + 1, 3, dtype=torch.float64)
        self.samples = 0
        self._map: torch.Tensor | None = None

    @property
    def ready(self) -> bool:
        return self.samples > 0

    def observe(self, video: torch.Tensor, latents: torch.Tensor) -> None:
        """One encode: `video` (B, 3, F, H, W) in [-1, 1], `latents` (B, C, F', H/8, W/8) raw."""
        if video.ndim != 5 or latents.ndim != 5 or latents.shape[1] != self.channels:
            return
        # Pooled where the video is (a 480p input is hundreds of MB as float), then brought over.
        pooled = _pool_to_latent_grid(video.detach(), latents.shape[2:])
        pixels = pooled.float().cpu() if pooled is not None else None
        if pixels is None or float(pixels.std()) < MIN_PIXEL_STD:
            return
        z = latents.detach().to("cpu", torch.float64).permute(0, 2, 3, 4, 1).reshape(-1, self.channels)
        rgb = ((pixels.to(torch.float64) + 1.0) / 2.0).permute(0, 2, 3, 4, 1).reshape(-1, 3)
        a = torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], dim=1)
        self._ata += a.T @ a
        self._aty += a.T @ rgb
        self.samples += len(z)
        self._map = None

    def projection(self) -> torch.Tensor:
        """(C + 1, 3): raw latents with a bias column -> RGB in [0, 1]."""
        if self._map is None:
            eye = torch.eye(self.channels + 1, dtype=torch.float64) * RIDGE * max(self.samples, 1)
            self._map = torch.linalg.solve(self._ata + eye, self._aty)
        return self._map

    def rgb(self, latents: torch.Tensor) -> np.ndarray:
        """Normalised latents (1, C, T, h, w) -> uint8 frames (T, h, w, 3).

        Computed where the latents are (a GPU's step is not held up by a copy of the latents), with the
        pipeline's normalisation folded into the map; only the small uint8 frames come to the host."""
        projection = self.projection()
        weights = projection[:-1] * self.std[:, None]  # raw = z * std + mean
        bias = projection[-1] + self.mean @ projection[:-1]
        z = latents[0].detach()
        weights = weights.to(z.device, torch.float32)
        bias = bias.to(z.device, torch.float32)
        rgb = torch.einsum("cthw,cd->thwd", z.float(), weights) + bias
        return rgb.clamp_(0, 1).mul_(255).round_().to(torch.uint8).cpu().numpy()

    def image(self, latents: torch.Tensor, fps: float = 8.0) -> tuple[bytes, str]:
        """An animated preview of the latent frames, and its file extension: WebP (a few kB, encoded in a
        fraction of GIF's time) where Pillow has it, else GIF. Shown at the latent grid's size; pages scale it
        up (pixelated)."""
        frames = [Image.fromarray(f) for f in self.rgb(latents)]
        buffer = io.BytesIO()
        if features.check("webp"):
            frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:],
                           duration=int(1000 / fps), loop=0, quality=60, method=0)
            return buffer.getvalue(), "webp"
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:],
                       duration=int(1000 / fps), loop=0)
        return buffer.getvalue(), "gif"


def _pool_to_latent_grid(video: torch.Tensor, grid: torch.Size | tuple[int, ...]) -> torch.Tensor | None:
    """(B, 3, F, H, W) -> (B, 3, F', h, w): frame 0 alone, then each group of 4, each 8x8 block averaged."""
    frames, height, width = grid
    if video.shape[2] != 1 + TEMPORAL * (frames - 1):
        return None
    if video.shape[3] != height * SPATIAL or video.shape[4] != width * SPATIAL:
        return None
    first = video[:, :, :1]
    rest = video[:, :, 1:]
    if frames > 1:
        b, c, _, h, w = rest.shape
        rest = rest.reshape(b, c, frames - 1, TEMPORAL, h, w).mean(3)
        video = torch.cat([first, rest], dim=2)
    else:
        video = first
    b, c, t, h, w = video.shape
    pooled = F.avg_pool2d(video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), SPATIAL)
    return pooled.reshape(b, t, c, height, width).permute(0, 2, 1, 3, 4)
