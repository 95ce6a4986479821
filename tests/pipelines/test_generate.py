from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanVACEPipeline

from pipelines.generate import GenerationCancelled, GenerationRequest, generate
from pipelines.loader import load_pipeline

FRAMES, WIDTH, HEIGHT = 17, 64, 48


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


def make_request(**overrides: object) -> GenerationRequest:
    rng = np.random.default_rng(0)
    video = np.full((FRAMES, HEIGHT, WIDTH, 3), 0.5, dtype=np.float32)  # mid-gray = "nothing known here"
    video[:, :, : WIDTH // 2] = rng.random((FRAMES, HEIGHT, WIDTH // 2, 3), dtype=np.float32)
    mask = np.zeros((FRAMES, HEIGHT, WIDTH), dtype=np.float32)
    mask[:, :, WIDTH // 2 :] = 1.0  # generate the right half, keep the left
    fields: dict[str, object] = dict(
        prompt="a cat dancing",
        negative_prompt="blurry",
        video=video,
        mask=mask,
        reference_images=[],
        width=WIDTH,
        height=HEIGHT,
        num_inference_steps=2,
        guidance_scale=5.0,
        seed=0,
    )
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> None:
        self.calls += 1


@pytest.fixture
def transformer_calls(pipe: WanVACEPipeline) -> Iterator[Counter]:
    counter = Counter()
    handle = pipe.transformer.register_forward_hook(counter)
    yield counter
    handle.remove()


@pytest.fixture
def decode_calls(pipe: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch) -> Counter:
    counter = Counter()
    real_decode = pipe.vae.decode

    def spy(*args: object, **kwargs: object) -> object:
        counter()
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(pipe.vae, "decode", spy)
    return counter


def test_output_shape_dtype_range(pipe: WanVACEPipeline) -> None:
    out = generate(pipe, make_request())
    assert out.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert out.dtype == np.uint8
    assert out.max() > out.min()  # not a constant image


def test_same_seed_same_frames_other_seed_other_frames(pipe: WanVACEPipeline) -> None:
    first = generate(pipe, make_request(seed=1))
    again = generate(pipe, make_request(seed=1))
    other = generate(pipe, make_request(seed=2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_on_step_reports_each_step(pipe: WanVACEPipeline) -> None:
    seen: list[tuple[int, int]] = []
    generate(
        pipe, make_request(num_inference_steps=3), on_step=lambda done, total: seen.append((done, total))
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_cancel_after_first_step_skips_rest_and_decode(
    pipe: WanVACEPipeline, transformer_calls: Counter, decode_calls: Counter
) -> None:
    steps: list[int] = []
    with pytest.raises(GenerationCancelled):
        generate(
            pipe,
            make_request(num_inference_steps=4),
            on_step=lambda done, total: steps.append(done),
            should_cancel=lambda: len(steps) >= 1,
        )
    assert steps == [1]
    assert transformer_calls.calls == 2  # one step = cond + uncond pass (guidance 5 > 1), not 4 steps' worth
    assert decode_calls.calls == 0


def test_cancel_before_start_runs_nothing(pipe: WanVACEPipeline, transformer_calls: Counter) -> None:
    with pytest.raises(GenerationCancelled):
        generate(pipe, make_request(), should_cancel=lambda: True)
    assert transformer_calls.calls == 0


def test_pipeline_is_reusable_after_cancel(pipe: WanVACEPipeline) -> None:
    expected = generate(pipe, make_request(seed=5))
    with pytest.raises(GenerationCancelled):
        generate(
            pipe, make_request(seed=5), on_step=lambda *_: None, should_cancel=iter([False, True]).__next__
        )
    np.testing.assert_array_equal(generate(pipe, make_request(seed=5)), expected)


def test_video_and_mask_reach_the_model_exactly(
    pipe: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = make_request(num_inference_steps=1)
    encoded: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    real_encode, real_prepare_masks = pipe.vae.encode, pipe.prepare_masks

    def spy_encode(x: torch.Tensor, *args: object, **kwargs: object) -> object:
        encoded.append(x.clone())
        return real_encode(x, *args, **kwargs)

    def spy_prepare_masks(mask: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        masks.append(mask.clone())
        return real_prepare_masks(mask, *args, **kwargs)

    monkeypatch.setattr(pipe.vae, "encode", spy_encode)
    monkeypatch.setattr(pipe, "prepare_masks", spy_prepare_masks)
    generate(pipe, req)

    # The VAE sees (B, C, F, H, W) in [-1, 1]: first the kept part ("inactive"), then the generated part.
    video = torch.from_numpy(req.video).permute(3, 0, 1, 2)[None] * 2 - 1
    mask = torch.from_numpy(req.mask)[None, None]
    inactive, reactive = encoded
    assert torch.equal(inactive, video * (1 - mask))
    assert torch.equal(reactive, video * mask)
    # Mid-gray 0.5 arrives as exactly 0.0 (a PIL frame of 128 would give 128/255*2-1 = 0.0039).
    assert torch.count_nonzero(reactive[..., WIDTH // 2 :]) == 0
    assert torch.equal(masks[0], mask)


def test_reference_image(pipe: WanVACEPipeline) -> None:
    ref = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)  # other size and aspect
    without = generate(pipe, make_request())
    with_ref = generate(pipe, make_request(reference_images=[ref]))
    assert with_ref.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert not np.array_equal(with_ref, without)


def reference_latents(pipe: WanVACEPipeline, references: list[np.ndarray]) -> torch.Tensor:
    """The leading latent frames of the control input the transformer gets: one per reference image."""
    seen: list[torch.Tensor] = []

    def spy(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append(kwargs["control_hidden_states"].clone())

    handle = pipe.transformer.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        generate(pipe, make_request(reference_images=references, num_inference_steps=1, guidance_scale=1.0))
    finally:
        handle.remove()
    # (1, 96 + 64 mask channels, latent frames, h, w): the first 16 channels are the VAE latent ("inactive").
    return seen[0][0, :16, : len(references)]


def test_reference_images_reach_the_model_in_the_users_order(pipe: WanVACEPipeline) -> None:
    red = np.zeros((30, 40, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((40, 30, 3), np.uint8)
    blue[..., 2] = 220
    alone_red = reference_latents(pipe, [red])[:, 0]
    alone_blue = reference_latents(pipe, [blue])[:, 0]
    assert not torch.allclose(alone_red, alone_blue)
    both = reference_latents(pipe, [red, blue])
    # Latent frame 0 is the first reference the user gave, frame 1 the second (diffusers alone reverses them).
    torch.testing.assert_close(both[:, 0], alone_red)
    torch.testing.assert_close(both[:, 1], alone_blue)
    swapped = reference_latents(pipe, [blue, red])
    torch.testing.assert_close(swapped[:, 0], alone_blue)
    torch.testing.assert_close(swapped[:, 1], alone_red)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(video=np.zeros((18, HEIGHT, WIDTH, 3), np.float32)), r"18 frames.*4k\+1.*17.*21"),
        (dict(width=50), r"width must be a positive multiple of 16, got 50; use e.g. 48 or 64"),
        (dict(width=80), r"frames are 64x48 but width x height is 80x48"),
        (dict(height=64), r"frames are 64x48 but width x height is 64x64"),
        (dict(mask=np.zeros((13, HEIGHT, WIDTH), np.float32)), r"mask must have shape \(F, H, W\)"),
        (dict(mask=np.full((FRAMES, HEIGHT, WIDTH), 0.7, np.float32)), r"exactly 0 \(keep\) or 1"),
        (dict(video=np.full((FRAMES, HEIGHT, WIDTH, 3), 255, np.float32)), r"\[0, 1\]"),
        (dict(video=np.zeros((FRAMES, HEIGHT, WIDTH, 3), np.uint8)), r"float32"),
        (dict(reference_images=[np.zeros((8, 8), np.uint8)]), r"reference_images\[0\]"),
        (dict(num_inference_steps=0), r"num_inference_steps"),
        (dict(seed=-1), r"seed"),
    ],
)
def test_validate_rejects(overrides: dict[str, object], message: str) -> None:
    req = make_request(**overrides)
    if "video" in overrides and "mask" not in overrides:
        req.mask = np.ones(req.video.shape[:3], np.float32)
    with pytest.raises(ValueError, match=message):
        req.validate()


def test_invalid_request_never_reaches_the_pipeline(
    pipe: WanVACEPipeline, transformer_calls: Counter
) -> None:
    with pytest.raises(ValueError):
        generate(pipe, make_request(width=50))
    assert transformer_calls.calls == 0
