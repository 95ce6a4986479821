"""Memory plans: real 14B/1.3B configs on the meta device (no weights), plan choice, and the diffusers calls.

This machine has no GPU. What runs for real here: parameter counting, the plan arithmetic, VAE tiling, the
CPU placement, diffusers' group-offloading hooks with the CPU as "onload device" (no CUDA streams), and
prompt encoding. What cannot run here: any move to CUDA, enable_model_cpu_offload and group offloading with
CUDA streams, torch.cuda.mem_get_info. Those paths are checked with spies on the exact calls and arguments.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from diffusers import WanVACEPipeline
from PIL import Image

from pipelines import configs
from pipelines.memory import (
    DEFAULT_FRAME_AREA,
    WAN_VACE_1_3B,
    WAN_VACE_14B,
    GiB,
    MemoryPlan,
    ModelSize,
    Offload,
    apply_plan,
    choose_plan,
    encode_prompts,
    num_tokens,
    parse_memory_plan,
    parse_vae_tiling,
    plan_for_device,
    plan_of,
)
from pipelines.tiny import make_tiny_pipeline

CONTEXT_RESERVE = GiB // 2  # what the CUDA context and driver take before the worker loads anything


def _card(total_gib: float) -> tuple[int, int]:
    total = int(total_gib * GiB)
    return total - CONTEXT_RESERVE, total


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- parameter counts on the meta device


@pytest.fixture(scope="module")
def meta_models() -> dict[str, torch.nn.Module]:
    return {
        "transformer_14b": configs.build_on_meta("transformer", configs.TRANSFORMER_14B),
        "transformer_1_3b": configs.build_on_meta("transformer", configs.TRANSFORMER_1_3B),
        "text_encoder": configs.build_on_meta("text_encoder", configs.TEXT_ENCODER_UMT5_XXL),
        "vae": configs.build_on_meta("vae", configs.VAE_WAN21),
    }


@pytest.mark.parametrize(
    ("name", "exact", "published"),
    [
        ("transformer_14b", 17_337_592_896, 17.3e9),
        ("transformer_1_3b", 2_153_972_032, 2.15e9),
        ("text_encoder", 5_680_910_336, 5.68e9),  # unique parameters; see the state-dict test below
        ("vae", 126_892_531, 127e6),
    ],
)
def test_parameter_counts(meta_models: dict, name: str, exact: int, published: float) -> None:
    model = meta_models[name]
    assert all(p.device.type == "meta" for p in model.parameters())  # nothing was allocated
    assert _params(model) == exact
    assert _params(model) == pytest.approx(published, rel=0.01)


def test_text_encoder_6_7b_counts_the_tied_embedding_twice(meta_models: dict) -> None:
    # The "6.7 B" often quoted for umt5-xxl is the state-dict total: `shared` and `encoder.embed_tokens` are
    # one tensor (256,384 x 4,096 = 1.05 B) listed twice. GPU memory holds it once.
    te = meta_models["text_encoder"]
    assert te.encoder.embed_tokens.weight is te.shared.weight
    state_total = sum(t.numel() for t in te.state_dict().values())
    assert state_total == 6_731_059_200 == pytest.approx(6.73e9, rel=0.001)
    assert state_total - _params(te) == te.shared.weight.numel() == 1_050_148_864


def test_vace_branch_of_the_14b(meta_models: dict) -> None:
    vace = sum(_params(b) for b in meta_models["transformer_14b"].vace_blocks)
    assert vace == pytest.approx(3.05e9, rel=0.01)  # 8 blocks of ~381 M parameters each


@pytest.mark.parametrize(
    ("transformer", "expected"), [("transformer_14b", WAN_VACE_14B), ("transformer_1_3b", WAN_VACE_1_3B)]
)
def test_model_size_constants_match_the_configs(
    meta_models: dict, transformer: str, expected: ModelSize
) -> None:
    pipe = SimpleNamespace(
        transformer=meta_models[transformer], text_encoder=meta_models["text_encoder"], vae=meta_models["vae"]
    )
    assert ModelSize.from_pipeline(pipe) == expected


def test_weight_sizes_in_gib() -> None:
    assert WAN_VACE_14B.transformer_params * 2 / GiB == pytest.approx(32.3, abs=0.05)  # bf16
    assert WAN_VACE_14B.text_encoder_params * 2 / GiB == pytest.approx(10.58, abs=0.01)  # bf16
    assert WAN_VACE_14B.vae_params * 4 / GiB == pytest.approx(0.47, abs=0.01)  # fp32


# ---------------------------------------------------------------- choosing a plan (pure arithmetic)


def test_token_counts_match_the_notes() -> None:
    assert num_tokens(1280 * 720, 81) == 75_600
    assert num_tokens(832 * 480, 81) == 32_760
    assert num_tokens(1280 * 720, 241) == 219_600


# The table the README quotes: 14B, the default reference request (720p, 81 frames).
PLAN_TABLE_14B = [
    (24, Offload.GROUP_OFFLOAD, True),
    (48, Offload.GROUP_OFFLOAD, False),
    (80, Offload.ALL_ON_GPU, False),
    (141, Offload.ALL_ON_GPU, False),
]


@pytest.mark.parametrize(("card_gib", "offload", "tiling"), PLAN_TABLE_14B)
def test_plan_table_14b(card_gib: int, offload: Offload, tiling: bool) -> None:
    plan = choose_plan(*_card(card_gib), WAN_VACE_14B)
    assert (plan.offload, plan.vae_tiling) == (offload, tiling)
    assert "OOM" not in plan.reason


@pytest.mark.parametrize(("reported_gib", "offload"), [(23.99, Offload.GROUP_OFFLOAD),  # RTX 4090
                                                       (47.99, Offload.GROUP_OFFLOAD),  # RTX 6000 Ada
                                                       (79.19, Offload.ALL_ON_GPU),  # H100 / A100 80GB
                                                       (139.8, Offload.ALL_ON_GPU)])  # H200
def test_plan_with_the_totals_cards_really_report(reported_gib: float, offload: Offload) -> None:
    assert choose_plan(*_card(reported_gib), WAN_VACE_14B).offload is offload


def test_480p_on_48_gb_uses_model_offload() -> None:
    plan = choose_plan(*_card(48), WAN_VACE_14B, 832 * 480)
    assert (plan.offload, plan.vae_tiling) == (Offload.MODEL_OFFLOAD, False)
    assert choose_plan(*_card(24), WAN_VACE_14B, 832 * 480) == dataclasses.replace(
        choose_plan(*_card(24), WAN_VACE_14B, 832 * 480), offload=Offload.GROUP_OFFLOAD, vae_tiling=False
    )


def test_241_frames_at_720p_needs_the_h200_to_stay_on_gpu() -> None:
    assert choose_plan(*_card(80), WAN_VACE_14B, num_frames=241).offload is Offload.GROUP_OFFLOAD
    assert choose_plan(*_card(141), WAN_VACE_14B, num_frames=241).offload is Offload.ALL_ON_GPU


def test_1_3b_stays_on_a_24_gb_card_with_tiling_at_720p() -> None:
    plan = choose_plan(*_card(24), WAN_VACE_1_3B)
    assert (plan.offload, plan.vae_tiling) == (Offload.ALL_ON_GPU, True)
    assert choose_plan(*_card(24), WAN_VACE_1_3B, 832 * 480).vae_tiling is False


def test_nothing_fits_gives_the_smallest_plan_and_says_so() -> None:
    plan = choose_plan(*_card(8), WAN_VACE_14B)
    assert (plan.offload, plan.vae_tiling) == (Offload.SEQUENTIAL_OFFLOAD, True)
    assert "may run OOM" in plan.reason


def test_more_memory_never_picks_a_slower_plan() -> None:
    order = list(Offload)
    previous = len(order)
    for gib in range(8, 160, 2):
        rank = order.index(choose_plan(*_card(gib), WAN_VACE_14B).offload)
        assert rank <= previous
        previous = rank


def test_forced_offload_only_chooses_tiling() -> None:
    plan = choose_plan(*_card(24), WAN_VACE_14B, offload=Offload.MODEL_OFFLOAD)
    assert (plan.offload, plan.vae_tiling) == (Offload.MODEL_OFFLOAD, True)
    assert "may run OOM" in plan.reason
    plan = choose_plan(*_card(141), WAN_VACE_14B, offload=Offload.SEQUENTIAL_OFFLOAD)
    assert (plan.offload, plan.vae_tiling) == (Offload.SEQUENTIAL_OFFLOAD, False)


def test_reason_quotes_the_figures() -> None:
    reason = choose_plan(*_card(80), WAN_VACE_14B).reason
    assert reason.startswith("all_on_gpu, VAE tiling off: estimated peak ")
    assert f"{DEFAULT_FRAME_AREA} px x 81 frames" in reason


# ---------------------------------------------------------------- flags


@pytest.mark.parametrize("value", ["auto", *(o.value for o in Offload)])
def test_parse_memory_plan(value: str) -> None:
    parsed = parse_memory_plan(value)
    assert parsed is None if value == "auto" else parsed is Offload(value)


def test_parse_vae_tiling() -> None:
    assert (parse_vae_tiling("auto"), parse_vae_tiling("on"), parse_vae_tiling("off")) == (None, True, False)


@pytest.mark.parametrize(("parse", "bad"), [(parse_memory_plan, "cpu_offload"), (parse_vae_tiling, "yes")])
def test_parse_rejects_unknown_values(parse: Any, bad: str) -> None:
    with pytest.raises(ValueError, match="must be one of auto"):
        parse(bad)


def test_plan_for_cpu_is_everything_in_ram() -> None:
    assert plan_for_device("cpu", WAN_VACE_14B).offload is Offload.ALL_ON_GPU
    assert plan_for_device("cpu", WAN_VACE_14B, "group_offload").offload is Offload.ALL_ON_GPU
    assert plan_for_device("cpu", WAN_VACE_14B, vae_tiling="on").vae_tiling is True


def test_plan_for_cuda_reads_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[torch.device] = []

    def mem_get_info(device: torch.device) -> tuple[int, int]:
        asked.append(device)
        return _card(24)

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    plan = plan_for_device("cuda:1", WAN_VACE_14B)
    assert asked == [torch.device("cuda:1")]
    assert (plan.offload, plan.vae_tiling) == (Offload.GROUP_OFFLOAD, True)
    forced = plan_for_device("cuda:1", WAN_VACE_14B, "model_offload", "off")
    assert (forced.offload, forced.vae_tiling) == (Offload.MODEL_OFFLOAD, False)
    assert "VAE tiling forced off" in forced.reason


# ---------------------------------------------------------------- applying a plan to the tiny pipeline


@pytest.fixture()
def tiny() -> WanVACEPipeline:
    pipe = make_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("tiling", [True, False])
def test_vae_tiling_toggles_use_tiling(tiny: WanVACEPipeline, tiling: bool) -> None:
    tiny.vae.use_tiling = not tiling
    apply_plan(tiny, MemoryPlan(Offload.ALL_ON_GPU, tiling), "cpu")
    assert tiny.vae.use_tiling is tiling


def test_apply_on_cpu_only_moves_to_cpu(tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_offload_methods(tiny, monkeypatch)
    apply_plan(tiny, MemoryPlan(Offload.GROUP_OFFLOAD, False), "cpu")
    assert not [c for c in calls if c[0].startswith("enable_")]  # pipe.to("cpu") only
    assert {c[1][0] for c in calls} == {torch.device("cpu")}
    assert tiny.device.type == "cpu"
    assert plan_of(tiny).offload is Offload.GROUP_OFFLOAD


def _spy_offload_methods(pipe: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []
    for method in ("enable_model_cpu_offload", "enable_group_offload", "enable_sequential_cpu_offload"):
        monkeypatch.setattr(pipe, method, lambda *a, _m=method, **k: calls.append((_m, a, k)))
    for name in ("transformer", "vae", "text_encoder"):
        module = getattr(pipe, name)
        record = lambda *a, _n=name, _mod=module, **k: calls.append((_n, a, k)) or _mod  # noqa: E731
        monkeypatch.setattr(module, "to", record)
    return calls


# No GPU: these record the calls apply_plan makes for CUDA instead of letting them move anything.
def test_all_on_gpu_places_transformer_and_vae_and_parks_the_text_encoder(
    tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy_offload_methods(tiny, monkeypatch)
    apply_plan(tiny, MemoryPlan(Offload.ALL_ON_GPU, False), "cuda:1")
    assert calls == [
        ("transformer", (torch.device("cuda:1"),), {}),
        ("vae", (torch.device("cuda:1"),), {}),
        ("text_encoder", ("cpu",), {}),
    ]


def test_model_offload_calls_diffusers(tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_offload_methods(tiny, monkeypatch)
    apply_plan(tiny, MemoryPlan(Offload.MODEL_OFFLOAD, True), "cuda:1")
    assert calls == [("enable_model_cpu_offload", (), {"device": torch.device("cuda:1")})]
    assert tiny.vae.use_tiling is True


@pytest.mark.parametrize(
    ("offload", "level", "per_group"),
    [(Offload.GROUP_OFFLOAD, "block_level", 1), (Offload.SEQUENTIAL_OFFLOAD, "leaf_level", None)],
)
def test_group_offload_calls_diffusers(
    tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch, offload: Offload, level: str,
    per_group: int | None,
) -> None:
    calls = _spy_offload_methods(tiny, monkeypatch)
    apply_plan(tiny, MemoryPlan(offload, False), "cuda")
    assert calls == [("enable_group_offload", (), {
        "onload_device": torch.device("cuda"),
        "offload_device": torch.device("cpu"),
        "offload_type": level,
        "num_blocks_per_group": per_group,
        "use_stream": True,
        "non_blocking": True,
        "record_stream": True,
        "exclude_modules": ["vae"],
    })]
    # Every option is one the installed diffusers takes (a spy would accept any name).
    assert set(calls[0][2]) <= set(inspect.signature(WanVACEPipeline.enable_group_offload).parameters)


def _run(pipe: WanVACEPipeline, **prompts: Any) -> torch.Tensor:
    prompts = prompts or {"prompt": "dance monkey", "negative_prompt": "negative"}
    frames = 5
    return pipe(
        video=[Image.new("RGB", (16, 16), (90, 120, 200))] * frames,
        mask=[Image.new("L", (16, 16), 255)] * frames,
        height=16, width=16, num_frames=frames, num_inference_steps=2, guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0), output_type="pt", **prompts,
    ).frames


@pytest.mark.parametrize(("level", "per_group"), [("block_level", 1), ("leaf_level", None)])
def test_group_offload_hooks_run_the_vace_pipeline_on_cpu(level: str, per_group: int | None) -> None:
    # The real diffusers hooks with the CPU standing in for the GPU (no streams: they need CUDA). Guards
    # against WanVACE-specific breakage like huggingface/diffusers#12096; the frames must not change.
    reference = _run(make_tiny_pipeline())
    pipe = make_tiny_pipeline()
    pipe.enable_group_offload(
        onload_device=torch.device("cpu"), offload_type=level, num_blocks_per_group=per_group,
        exclude_modules=["vae"],
    )
    assert torch.equal(_run(pipe), reference)


# ---------------------------------------------------------------- encode_prompts


def test_encode_prompts_matches_the_pipeline(tiny: WanVACEPipeline) -> None:
    plan = MemoryPlan(Offload.ALL_ON_GPU, False)
    embeds, negative = encode_prompts(tiny, "dance monkey", "negative", plan)
    assert embeds.shape == negative.shape == (1, 512, 32)
    direct = _run(tiny)
    via_embeds = _run(tiny, prompt_embeds=embeds, negative_prompt_embeds=negative)
    assert torch.equal(direct, via_embeds)


def test_encode_prompts_without_cfg(tiny: WanVACEPipeline) -> None:
    _, negative = encode_prompts(tiny, "a", "b", None, do_classifier_free_guidance=False)
    assert negative is None


def _fake_cuda_encode(tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list:
    events: list = []
    monkeypatch.setattr(WanVACEPipeline, "_execution_device", property(lambda self: torch.device("cuda:0")))
    monkeypatch.setattr(tiny.text_encoder, "to", lambda device: events.append(("to", device)))

    def encode_prompt(**kwargs: Any) -> tuple[str, str]:
        events.append(("encode", kwargs["device"], kwargs["max_sequence_length"]))
        if fail:
            raise RuntimeError("CUDA out of memory")
        return "embeds", "negative"

    monkeypatch.setattr(tiny, "encode_prompt", encode_prompt)
    return events


# No GPU: the device moves are recorded, not performed.
def test_all_on_gpu_encode_brings_the_text_encoder_in_and_sends_it_back(
    tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _fake_cuda_encode(tiny, monkeypatch)
    result = encode_prompts(tiny, "a", "b", MemoryPlan(Offload.ALL_ON_GPU, False))
    assert result == ("embeds", "negative")
    assert events == [("to", torch.device("cuda:0")), ("encode", torch.device("cuda:0"), 512), ("to", "cpu")]


def test_text_encoder_goes_back_even_when_encoding_fails(
    tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _fake_cuda_encode(tiny, monkeypatch, fail=True)
    with pytest.raises(RuntimeError, match="out of memory"):
        encode_prompts(tiny, "a", "b", MemoryPlan(Offload.ALL_ON_GPU, False))
    assert events[-1] == ("to", "cpu")


@pytest.mark.parametrize("offload", [o for o in Offload if o is not Offload.ALL_ON_GPU])
def test_offload_plans_leave_the_moves_to_the_hooks(
    tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch, offload: Offload
) -> None:
    events = _fake_cuda_encode(tiny, monkeypatch)
    encode_prompts(tiny, "a", "b", MemoryPlan(offload, False))
    assert events == [("encode", torch.device("cuda:0"), 512)]


def test_encode_prompts_uses_the_applied_plan(tiny: WanVACEPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiny.transformer, "to", lambda *a, **k: tiny.transformer)
    monkeypatch.setattr(tiny.vae, "to", lambda *a, **k: tiny.vae)
    apply_plan(tiny, MemoryPlan(Offload.MODEL_OFFLOAD, False), "cpu")  # recorded, not applied, on CPU
    events = _fake_cuda_encode(tiny, monkeypatch)
    encode_prompts(tiny, "a", "b")
    assert [e[0] for e in events] == ["encode"]
