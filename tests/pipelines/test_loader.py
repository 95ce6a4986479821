import dataclasses
import json
from pathlib import Path

import pytest
import torch
from diffusers import WanVACEPipeline

from pipelines import loader
from pipelines.loader import (
    ModelNotFoundError,
    Placement,
    check_model_dir,
    choose_placement,
    load_pipeline,
    resolve_model,
)
from pipelines.memory import MemoryPlan, Offload


def _assert_actionable(err: ModelNotFoundError, path: Path) -> None:
    message = str(err)
    assert "\n" not in message
    assert str(path) in message
    assert "vace download" in message and "--model" in message


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelNotFoundError) as info:
        check_model_dir(missing)
    assert isinstance(info.value, FileNotFoundError)
    _assert_actionable(info.value, missing)


def test_folder_without_model_index(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model_index.json") as info:
        check_model_dir(tmp_path)
    _assert_actionable(info.value, tmp_path)


def test_other_pipeline_class(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ModelNotFoundError, match="'WanPipeline'.*not WanVACEPipeline") as info:
        check_model_dir(tmp_path)
    _assert_actionable(info.value, tmp_path)


def test_unreadable_model_index(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="Unreadable"):
        check_model_dir(tmp_path)


def test_resolve_tiny_builds_under_data_dir(tmp_path: Path) -> None:
    model_dir = resolve_model("tiny", tmp_path)
    assert model_dir == tmp_path / "models" / "tiny"
    assert (model_dir / "model_index.json").is_file()


def test_resolve_path(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert resolve_model(str(tiny_model_dir), tmp_path) == tiny_model_dir
    with pytest.raises(ModelNotFoundError):
        resolve_model(str(tmp_path / "Wan2.1-VACE-14B-diffusers"), tmp_path)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_placement_cuda(device: str) -> None:
    assert choose_placement(device) == Placement(device, torch.bfloat16, torch.float32)


def test_placement_cpu() -> None:
    assert choose_placement("cpu") == Placement("cpu", torch.float32, torch.float32)


@pytest.mark.parametrize(("available", "device"), [(True, "cuda"), (False, "cpu")])
def test_placement_default_follows_cuda_availability(
    monkeypatch: pytest.MonkeyPatch, available: bool, device: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert choose_placement().device == device


def test_placement_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        choose_placement("cpu").device = "cuda"  # type: ignore[misc]


def test_load_on_cpu(tiny_model_dir: Path) -> None:
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    assert isinstance(pipe, WanVACEPipeline)
    assert pipe.device.type == "cpu"
    assert pipe.transformer.dtype == pipe.text_encoder.dtype == pipe.vae.dtype == torch.float32


def test_load_for_cuda_uses_bf16_with_float32_vae(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No GPU here: skip the move, and check only the dtypes the loader chose for a CUDA placement.
    seen: list[str] = []

    def record(pipe: WanVACEPipeline, plan: MemoryPlan, device: str) -> WanVACEPipeline:
        seen.append(device)
        return pipe

    monkeypatch.setattr(loader, "apply_plan", record)
    # No GPU memory to measure: a plan whose weights load into RAM (tests/pipelines/test_weights_placement.py
    # covers all_on_gpu's direct load).
    monkeypatch.setattr(loader, "plan_for_device",
                        lambda *args, **kwargs: MemoryPlan(Offload.GROUP_OFFLOAD, False, "faked"))
    _no_attention_probe(monkeypatch)
    pipe = load_pipeline(tiny_model_dir, device="cuda:0")
    assert seen == ["cuda:0"]
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in pipe.vae.parameters())


def _no_attention_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU to time attention kernels on: the CUDA-placement tests get `native` without a probe."""
    from pipelines.attention import AttentionSelection

    monkeypatch.setattr(loader, "select_for_device",
                        lambda requested, device, dtype, heads, head_dim:
                        AttentionSelection("native", requested, "faked"))


def test_load_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        load_pipeline(tmp_path)


def test_incomplete_model_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    (model / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="missing vae/diffusion_pytorch_model.safetensors") as info:
        check_model_dir(model)
    _assert_actionable(info.value, model)


@pytest.mark.parametrize(("flag", "value"), [("memory_plan", "offload"), ("vae_tiling", "maybe")])
def test_bad_memory_flags_fail_before_loading(tmp_path: Path, flag: str, value: str) -> None:
    with pytest.raises(ValueError, match="must be one of auto"):
        load_pipeline(tmp_path / "not-even-there", device="cpu", **{flag: value})


def test_load_passes_memory_flags(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU: mem_get_info is faked and the placement calls recorded, so this checks the wiring only.
    from pipelines import memory

    applied = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (23 * 2**30, 24 * 2**30))
    record = lambda pipe, plan, device: applied.append((plan, device)) or pipe  # noqa: E731
    monkeypatch.setattr(loader, "apply_plan", record)
    _no_attention_probe(monkeypatch)
    load_pipeline(tiny_model_dir, device="cuda", memory_plan="group_offload", vae_tiling="on")
    plan, device = applied[0]
    assert (plan.offload, plan.vae_tiling, device) == (memory.Offload.GROUP_OFFLOAD, True, "cuda")


def test_load_on_cpu_with_tiling(tiny_model_dir: Path) -> None:
    pipe = load_pipeline(tiny_model_dir, device="cpu", vae_tiling="on")
    assert pipe.vae.use_tiling is True
