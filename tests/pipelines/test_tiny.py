import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from diffusers import WanVACEPipeline

from pipelines import tiny
from pipelines.tiny import build_tiny_pipeline, ensure_tiny_pipeline, make_tiny_pipeline

SUBFOLDERS = {"scheduler", "text_encoder", "tokenizer", "transformer", "vae"}


def _run(pipe: WanVACEPipeline) -> torch.Tensor:
    gray = torch.full((1, 5, 3, 32, 32), 0.5)
    return pipe(
        prompt="dance monkey",
        negative_prompt="negative",
        video=gray,
        mask=torch.ones(1, 5, 1, 32, 32),
        height=32,
        width=32,
        num_frames=5,
        num_inference_steps=2,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="pt",
    ).frames


def test_folder_has_diffusers_layout(tiny_model_dir: Path) -> None:
    assert tiny_model_dir.name == "tiny"
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "WanVACEPipeline"
    assert {p.name for p in tiny_model_dir.iterdir() if p.is_dir()} >= SUBFOLDERS
    transformer = json.loads((tiny_model_dir / "transformer" / "config.json").read_text())
    assert transformer["rope_max_seq_len"] == 1024  # 832-px-wide frames need it
    assert transformer["vace_layers"] == [0, 2] and transformer["vace_in_channels"] == 96
    scheduler = json.loads((tiny_model_dir / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "UniPCMultistepScheduler" and scheduler["flow_shift"] == 3.0


def test_build_is_deterministic() -> None:
    a, b = make_tiny_pipeline(), make_tiny_pipeline()
    for name in ("text_encoder", "vae", "transformer"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_saved_folder_reproduces_in_memory_pipeline_bit_for_bit(tiny_model_dir: Path) -> None:
    in_memory = make_tiny_pipeline()
    loaded = WanVACEPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    for pipe in (in_memory, loaded):
        pipe.set_progress_bar_config(disable=True)
    expected, actual = _run(in_memory), _run(loaded)
    assert expected.shape == (1, 5, 3, 32, 32)
    assert torch.equal(expected, actual)


def test_ensure_reuses_existing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ensure_tiny_pipeline(tmp_path)
    assert first == tmp_path / "tiny" and (first / "model_index.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no temp dirs left behind

    def must_not_build(dest: Path) -> Path:
        raise AssertionError("rebuilt an existing model")

    monkeypatch.setattr(tiny, "build_tiny_pipeline", must_not_build)
    assert ensure_tiny_pipeline(tmp_path) == first


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = WanVACEPipeline.save_pretrained

    def crash_midway(self: WanVACEPipeline, save_directory: str, **kwargs: object) -> None:
        real_save(self, save_directory, **kwargs)  # files are on disk...
        raise RuntimeError("disk full")  # ...but the build never finished

    monkeypatch.setattr(WanVACEPipeline, "save_pretrained", crash_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        build_tiny_pipeline(tmp_path / "tiny")
    assert list(tmp_path.iterdir()) == []


def test_ensure_accepts_model_built_concurrently(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_make = tiny.make_tiny_pipeline

    def slower_than_other_process() -> WanVACEPipeline:
        shutil.copytree(tiny_model_dir, tmp_path / "tiny")  # the other process renames its model in first
        return real_make()

    monkeypatch.setattr(tiny, "make_tiny_pipeline", slower_than_other_process)
    assert ensure_tiny_pipeline(tmp_path) == tmp_path / "tiny"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_build_refuses_to_overwrite(tiny_model_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    with pytest.raises(OSError):
        build_tiny_pipeline(tmp_path / "tiny")
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_concurrent_ensure_calls_agree(tmp_path: Path) -> None:
    start = threading.Barrier(2)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            results.append(ensure_tiny_pipeline(tmp_path))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [tmp_path / "tiny"] * 2
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]
    # Whichever won is complete, and has the deterministic weights even though both builds overlapped.
    loaded = WanVACEPipeline.from_pretrained(tmp_path / "tiny", local_files_only=True)
    expected = make_tiny_pipeline().transformer.state_dict()
    actual = loaded.transformer.state_dict()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_build_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_pipeline()
    assert torch.equal(torch.rand(3), expected)
