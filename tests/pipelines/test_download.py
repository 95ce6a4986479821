"""The download manifest and the completeness check, without the network."""

import json
import shutil
from pathlib import Path

import pytest

from pipelines import download
from pipelines.download import REQUIRED_FILES, allow_patterns, download_model, verify_model_dir


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_tiny_model_is_complete(tiny_model_dir: Path) -> None:
    assert verify_model_dir(tiny_model_dir) == []


@pytest.mark.parametrize(
    "removed",
    ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json",
     "text_encoder/model.safetensors", "transformer/config.json", "vae/diffusion_pytorch_model.safetensors"],
)
def test_missing_file_is_reported(model_copy: Path, removed: str) -> None:
    (model_copy / removed).unlink()
    assert verify_model_dir(model_copy) == [removed]


def _shard(model_copy: Path) -> Path:
    # Turn the transformer into the sharded layout the 14B repo uses.
    folder = model_copy / "transformer"
    first, second = (f"diffusion_pytorch_model-0000{i}-of-00002.safetensors" for i in (1, 2))
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / first)
    (folder / second).write_bytes(b"")
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": first, "b": second}}))
    return folder


def test_sharded_weights(model_copy: Path) -> None:
    folder = _shard(model_copy)
    assert verify_model_dir(model_copy) == []
    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()  # an interrupted download
    assert verify_model_dir(model_copy) == ["transformer/diffusion_pytorch_model-00002-of-00002.safetensors"]


def test_unreadable_index(model_copy: Path) -> None:
    folder = _shard(model_copy)
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text("{")
    expected = "transformer/diffusion_pytorch_model.safetensors.index.json (unreadable)"
    assert verify_model_dir(model_copy) == [expected]


def test_empty_folder_lists_everything(tmp_path: Path) -> None:
    assert len(verify_model_dir(tmp_path)) == sum(len(files) for files in REQUIRED_FILES.values())


def test_allow_patterns_cover_the_manifest_and_skip_duplicates() -> None:
    patterns = allow_patterns()
    assert "model_index.json" in patterns and "tokenizer/*" in patterns
    assert "transformer/*.safetensors" in patterns and "text_encoder/*.safetensors" in patterns
    assert not [p for p in patterns if p.endswith((".bin", ".pth", ".pt")) or p == "*"]


def test_download_model_calls_snapshot_download(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path,
                                                tmp_path: Path) -> None:
    import huggingface_hub

    calls = []

    def fake(**kwargs: object) -> str:
        calls.append(kwargs)
        shutil.copytree(tiny_model_dir, kwargs["local_dir"], dirs_exist_ok=True)
        return str(kwargs["local_dir"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    dest = tmp_path / "Wan2.1-VACE-14B-diffusers"
    assert download_model("Wan-AI/Wan2.1-VACE-14B-diffusers", dest) == dest
    assert calls == [{"repo_id": "Wan-AI/Wan2.1-VACE-14B-diffusers", "local_dir": dest,
                      "allow_patterns": allow_patterns()}]


def test_download_model_reports_an_incomplete_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: str(kwargs["local_dir"]))
    with pytest.raises(FileNotFoundError, match="lacks: model_index.json"):
        download_model("someone/empty", tmp_path / "x")
    assert download.WEIGHTS not in str(allow_patterns())
