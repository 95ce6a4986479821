"""Live previews and the pipeline's phase reports (pipelines/preview.py, generate's on_phase/on_latents)."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanVACEPipeline
from PIL import Image

from pipelines.generate import GenerationRequest, generate
from pipelines.loader import load_pipeline
from pipelines.preview import LatentPreview

FRAMES, WIDTH, HEIGHT = 9, 64, 48


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


def request(steps: int = 4) -> GenerationRequest:
    rng = np.random.default_rng(0)
    video = rng.random((FRAMES, HEIGHT, WIDTH, 3), dtype=np.float32)
    mask = np.zeros((FRAMES, HEIGHT, WIDTH), dtype=np.float32)
    mask[:, :, WIDTH // 2:] = 1.0
    return GenerationRequest(prompt="a cat", negative_prompt="", video=video, mask=mask, reference_images=[],
                             width=WIDTH, height=HEIGHT, num_inference_steps=steps, guidance_scale=5.0,
                             seed=0)


def test_generate_reports_phases_in_order_and_latents_every_n_steps(pipe: WanVACEPipeline) -> None:
    phases: list[str] = []
    latents_at: list[tuple[int, tuple[int, ...]]] = []
    preview = LatentPreview(pipe.vae.config.latents_mean, pipe.vae.config.latents_std, 16)
    frames = generate(pipe, request(steps=5), on_phase=phases.append, on_encode=preview.observe,
                      on_latents=lambda step, z: latents_at.append((step, tuple(z.shape))), latents_every=2)
    assert phases == ["text_encode", "vae_encode", "denoise", "vae_decode"]
    # Every 2 steps and after the last; the latents are Wan's 16 channels on the 8x-smaller grid.
    assert [s for s, _ in latents_at] == [2, 4, 5]
    assert latents_at[0][1] == (1, 16, (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    # The VAE's methods are its own again afterwards.
    assert "encode" not in vars(pipe.vae) and "decode" not in vars(pipe.vae)
    assert preview.ready


def test_projection_recovers_a_linear_colour_map() -> None:
    """Latents that are a known linear function of the pooled pixels: the fitted map inverts it."""
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(3, 16, generator=gen, dtype=torch.float64)
    video = torch.rand(1, 3, 9, 32, 32, generator=gen) * 2 - 1
    preview = LatentPreview()
    # Pool exactly as the fit does: frame 0, then groups of 4; 8x8 blocks.
    pooled = torch.cat([video[:, :, :1], video[:, :, 1:].reshape(1, 3, 2, 4, 32, 32).mean(3)], 2)
    pooled = torch.nn.functional.avg_pool3d(pooled, (1, 8, 8))
    rgb = (pooled.double() + 1) / 2
    latents = torch.einsum("bcthw,cd->bdthw", rgb, mixing)
    preview.observe(video, latents)
    recovered = preview.rgb(latents)  # mean 0, std 1: raw latents
    expected = (rgb[0].permute(1, 2, 3, 0).clamp(0, 1) * 255).round().numpy()
    assert np.abs(recovered.astype(float) - expected).max() <= 3


def test_preview_is_an_animation_with_one_frame_per_latent_frame() -> None:
    preview = LatentPreview()
    video = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    latents = torch.randn(1, 16, 2, 2, 3)
    preview.observe(video, latents)
    data, extension = preview.image(latents)
    image = Image.open(io.BytesIO(data))
    assert image.format == extension.upper() and image.size == (3, 2) and image.n_frames == 2


def test_flat_inputs_teach_nothing() -> None:
    preview = LatentPreview()
    preview.observe(torch.zeros(1, 3, 1, 16, 16), torch.randn(1, 16, 1, 2, 2))
    assert not preview.ready
