"""Fast mode (pipelines/fast_mode.py): a distillation LoRA in the public Wan file format, loaded through
diffusers' own loader into the tiny model, used by eligible requests only."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanVACEPipeline
from safetensors.torch import save_file

import pipelines.step_policy as step_policy
from pipelines.compile import compile_blocks
from pipelines.fast_mode import ADAPTER_NAME, FastLoraError, eligible, installed
from pipelines.generate import GenerationRequest, generate
from pipelines.loader import load_pipeline
from pipelines.step_policy import CachePolicy
from tests.pipelines.test_generate import make_request as make_17_frames
from tests.pipelines.wan_lora_file import WAN_TO_DIFFUSERS, wan_lora_tensors, write_wan_lora

RANK, ALPHA = 4, 2.0
FAST = {"num_inference_steps": 4, "guidance_scale": 1.0}
FRAMES = 5


def make_request(**overrides: object) -> GenerationRequest:
    """test_generate's half-kept request, 5 frames long: the machine running CI is small."""
    request = make_17_frames(**overrides)
    request.video, request.mask = request.video[:FRAMES], request.mask[:FRAMES]
    return request


@pytest.fixture(scope="module")
def plain(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def lora_file(plain: WanVACEPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loras") / "wan14b_distill_rank4.safetensors"
    return write_wan_lora(path, plain.transformer, rank=RANK, alpha=ALPHA)


@pytest.fixture(scope="module")
def fast(tiny_model_dir: Path, lora_file: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu", fast_lora=lora_file)


@pytest.mark.parametrize(("steps", "guidance", "expected"), [
    (4, 1.0, True), (8, 1.0, True), (1, 0.5, True), (9, 1.0, False), (4, 1.01, False), (4, 5.0, False),
])  # fmt: skip
def test_the_rule(steps: int, guidance: float, expected: bool) -> None:
    assert eligible(steps, guidance) is expected


def test_the_public_format_loads_through_diffusers_into_every_main_block(
    fast: WanVACEPipeline, lora_file: Path, plain: WanVACEPipeline
) -> None:
    lora = installed(fast)
    assert lora is not None and lora.path == lora_file and lora.strength == 1.0
    blocks = len(plain.transformer.blocks)
    assert lora.layers == blocks * len(WAN_TO_DIFFUSERS) == 30
    tensors = wan_lora_tensors(plain.transformer, rank=RANK, alpha=ALPHA)
    for i in range(blocks):
        for wan_name, ours in WAN_TO_DIFFUSERS.items():
            layer = fast.transformer.get_submodule(f"blocks.{i}.{ours}")
            # The update the layer adds is the file's up @ down scaled by alpha / rank, whatever way diffusers
            # splits that scale between the two factors.
            delta = layer.lora_B[ADAPTER_NAME].weight @ layer.lora_A[ADAPTER_NAME].weight
            delta = delta * layer.scaling[ADAPTER_NAME]
            key = f"diffusion_model.blocks.{i}.{wan_name}"
            expected = tensors[f"{key}.lora_up.weight"] @ tensors[f"{key}.lora_down.weight"] * ALPHA / RANK
            torch.testing.assert_close(delta, expected)
    # The VACE blocks are not what the T2V-trained LoRAs adapt.
    assert not any(hasattr(m, "lora_A") for m in fast.transformer.vace_blocks.modules())


def test_the_extra_keys_some_public_files_carry_load_too(tiny_model_dir: Path, tmp_path: Path,
                                                         plain: WanVACEPipeline) -> None:
    path = write_wan_lora(tmp_path / "with_biases.safetensors", plain.transformer, extras=True)
    pipe = load_pipeline(tiny_model_dir, device="cpu", fast_lora=path)
    assert installed(pipe).layers == 30  # type: ignore[union-attr]
    bias = wan_lora_tensors(plain.transformer, extras=True)["diffusion_model.blocks.2.ffn.2.diff_b"]
    torch.testing.assert_close(pipe.transformer.blocks[2].ffn.net[2].lora_B[ADAPTER_NAME].bias, bias)


def test_eligible_requests_use_it_and_others_are_bit_identical_to_no_lora(
    fast: WanVACEPipeline, plain: WanVACEPipeline
) -> None:
    eligible_request, ordinary = make_request(**FAST), make_request(num_inference_steps=4, guidance_scale=5.0)
    long_no_cfg = make_request(num_inference_steps=9, guidance_scale=1.0)
    with_lora = generate(fast, eligible_request)
    assert installed(fast).enabled  # type: ignore[union-attr]
    # Off again after an eligible request: the base layers' own forward, so exactly the plain pipeline's.
    np.testing.assert_array_equal(generate(fast, ordinary), generate(plain, ordinary))
    assert not installed(fast).enabled  # type: ignore[union-attr]
    np.testing.assert_array_equal(generate(fast, long_no_cfg), generate(plain, long_no_cfg))
    without = generate(plain, eligible_request)
    assert (with_lora != without).mean() > 0.2  # a third of the pixels move, by up to 21 levels
    np.testing.assert_array_equal(generate(fast, eligible_request), with_lora)  # on again, same frames


def test_the_logs_say_which(fast: WanVACEPipeline, plain: WanVACEPipeline) -> None:
    logs: list[str] = []
    generate(fast, make_request(**FAST, acceleration="none"), on_log=logs.append)
    generate(fast, make_request(num_inference_steps=2, guidance_scale=5.0, acceleration="none"),
             on_log=logs.append)
    assert logs == [
        "fast mode: distillation LoRA wan14b_distill_rank4.safetensors at strength 1, 4 steps, no CFG, every "
        "step computed (step cache off)",
        "fast mode off: the distillation LoRA is used when num_inference_steps <= 8 and guidance_scale <= 1 "
        "(this request: 2 steps, guidance_scale 5)",
    ]
    plain_logs: list[str] = []
    generate(plain, make_request(**FAST, acceleration="none"), on_log=plain_logs.append)
    assert plain_logs == []  # no LoRA installed: nothing to say


class ForwardCounter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: object) -> None:
        self.calls += 1


@pytest.fixture
def forwards(fast: WanVACEPipeline) -> Iterator[ForwardCounter]:
    counter = ForwardCounter()
    handle = fast.transformer.blocks[0].register_forward_hook(counter)
    yield counter
    handle.remove()


def test_fast_mode_computes_every_step_whatever_the_acceleration(
    fast: WanVACEPipeline, forwards: ForwardCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A policy that would reuse every step it may: the first two and the last are always computed.
    monkeypatch.setitem(step_policy.POLICIES, "regular",
                        CachePolicy(threshold=1e9, warmup_fraction=0.0, max_consecutive_skips=100))
    logs: list[str] = []
    generate(fast, make_request(**FAST, acceleration="regular"), on_log=logs.append)
    assert forwards.calls == 4 and len(logs) == 1  # one forward per step (no CFG), no step-cache summary
    forwards.calls = 0
    generate(fast, make_request(num_inference_steps=4, guidance_scale=5.0, acceleration="regular"),
             on_log=logs.append)
    assert forwards.calls == 6  # cond + uncond at steps 1, 2 and 4: its cache reused step 3
    assert logs[-1].startswith("step cache: 3 of 4 steps computed")


def test_strength_scales_the_update(tiny_model_dir: Path, lora_file: Path, fast: WanVACEPipeline) -> None:
    half = load_pipeline(tiny_model_dir, device="cpu", fast_lora=lora_file, fast_lora_strength=0.5)
    layer, full = (p.transformer.blocks[1].attn2.to_v for p in (half, fast))
    assert layer.scaling[ADAPTER_NAME] == pytest.approx(full.scaling[ADAPTER_NAME] / 2)
    assert not np.array_equal(generate(half, make_request(**FAST)), generate(fast, make_request(**FAST)))


def test_toggling_under_regional_compile(tiny_model_dir: Path, lora_file: Path, fast: WanVACEPipeline,
                                         plain: WanVACEPipeline) -> None:
    """Compiled blocks (dynamo with the eager backend: the same arithmetic in seconds) must see the switch:
    a graph traced with the LoRA on and reused with it off would give the LoRA's frames to every request."""
    pipe = load_pipeline(tiny_model_dir, device="cpu", fast_lora=lora_file)
    compile_blocks(pipe.transformer, backend="eager")
    on, off = make_request(num_inference_steps=2, guidance_scale=1.0), make_request(num_inference_steps=2)
    expected = {id(on): generate(fast, on), id(off): generate(plain, off)}
    for request in (on, off, on):
        np.testing.assert_array_equal(generate(pipe, request), expected[id(request)])


# --- files that must stop the worker's start ---------------------------------------------------------------

def _refused(tiny_model_dir: Path, path: Path, match: str) -> None:
    with pytest.raises(FastLoraError, match=match):
        load_pipeline(tiny_model_dir, device="cpu", fast_lora=path)


def test_a_missing_file_fails_before_the_weights_load(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WanVACEPipeline, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    _refused(tiny_model_dir, tmp_path / "nope.safetensors", r"--fast-lora .*nope.safetensors: no such file")
    pickle = tmp_path / "lora.pt"
    pickle.write_bytes(b"\x80\x04")
    _refused(tiny_model_dir, pickle, "must be a .safetensors file")
    with pytest.raises(FastLoraError, match="--fast-lora-strength must be a positive number"):
        load_pipeline(tiny_model_dir, device="cpu", fast_lora=pickle, fast_lora_strength=0.0)


def test_without_peft_the_message_says_what_to_install(
    tiny_model_dir: Path, lora_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "peft" else find_spec(name, *args))
    _refused(tiny_model_dir, lora_file, "--fast-lora needs the peft package: pip install 'peft>=0.17,<0.22'")


def test_an_unreadable_file_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    _refused(tiny_model_dir, broken, "broken.safetensors: not a LoRA diffusers can read for Wan")


def test_a_file_without_lora_weights_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                                plain: WanVACEPipeline) -> None:
    weights = tmp_path / "transformer.safetensors"  # a model's weights, not a LoRA
    save_file({k: v.contiguous() for k, v in list(plain.transformer.state_dict().items())[:4]}, str(weights))
    _refused(tiny_model_dir, weights, "transformer.safetensors: holds no LoRA weights for the Wan")


def test_a_lora_for_a_bigger_model_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                              plain: WanVACEPipeline) -> None:
    # 40 blocks like the 14B model's, with this model's widths: blocks 3..39 have nowhere to go.
    deeper = write_wan_lora(tmp_path / "deeper.safetensors", plain.transformer, num_blocks=40)
    _refused(tiny_model_dir, deeper, r"does not fit this model: it adapts blocks\.3\.attn1\.to_k, "
                                     r"blocks\.3\.attn1\.to_out\.0, blocks\.3\.attn1\.to_q and 367 more")


def test_a_lora_of_other_widths_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The 1.3B model's LoRAs on the 14B model fail the same way: every shape differs.
    other = tmp_path / "wider.safetensors"
    model = load_pipeline(tiny_model_dir, device="cpu").transformer
    tensors = {key: (value.repeat(1, 2) if key.endswith("lora_down.weight") else value)
               for key, value in wan_lora_tensors(model).items()}
    save_file(tensors, str(other))
    _refused(tiny_model_dir, other, r"wider.safetensors: does not fit this model \(.*size mismatch")


def test_the_files_parameters_are_what_the_loaded_layers_add(
    fast: WanVACEPipeline, lora_file: Path, plain: WanVACEPipeline
) -> None:
    """The memory plan is chosen before the weights on a GPU, from the configs, which have no LoRA: it adds
    the file's parameters, read from its header, which are those peft's layers add (alphas aside)."""
    from pipelines.fast_mode import lora_file_params

    added = sum(p.numel() for p in fast.transformer.parameters()) - sum(
        p.numel() for p in plain.transformer.parameters())
    lora = installed(fast)
    assert lora is not None and added > 0
    assert lora_file_params(lora_file) == added + lora.layers  # and one scalar alpha per adapted layer
