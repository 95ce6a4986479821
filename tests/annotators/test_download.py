"""`download_annotators` without the network: every source's fetch is replaced by a stub writing files."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocessors.annotators import download, layout
from preprocessors.annotators.download import DEFAULT_MODELS, SOURCES, Source, download_annotators


def _stub(files: tuple[str, ...], calls: list[str]):
    def fetch(folder: Path) -> None:
        calls.append(folder.name)
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            (folder / name.split("|")[0]).write_bytes(b"x")

    return fetch


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    stubs = {name: Source(s.what, _stub(s.required, seen), s.required) for name, s in SOURCES.items()}
    monkeypatch.setattr(download, "SOURCES", stubs)
    return seen


def test_default_set_skips_the_non_commercial_depth_model_and_resumes(tmp_path: Path, calls: list[str]):
    assert set(SOURCES) == set(layout.ALL)
    assert layout.DEPTH_ANYTHING not in DEFAULT_MODELS and layout.MIDAS in DEFAULT_MODELS
    # DWPose is the default pose backend; OpenPose (non-commercial) only on request.
    assert layout.DWPOSE in DEFAULT_MODELS and layout.OPENPOSE not in DEFAULT_MODELS
    assert SOURCES[layout.DWPOSE].required == ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")
    lines: list[str] = []
    assert download_annotators(tmp_path, report=lines.append) == tmp_path
    assert sorted(calls) == sorted(DEFAULT_MODELS)
    calls.clear()
    download_annotators(tmp_path, report=lines.append)  # complete folders are skipped
    assert calls == [] and lines[-1].endswith("already complete")
    download_annotators(tmp_path, [layout.DEPTH_ANYTHING], report=lines.append)
    assert calls == [layout.DEPTH_ANYTHING]


def test_incomplete_source_and_unknown_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = Source("RIFE", lambda folder: None, ("flownet.pkl",))
    monkeypatch.setattr(download, "SOURCES", {layout.RIFE: empty})
    with pytest.raises(FileNotFoundError, match="rife/flownet.pkl"):
        download_annotators(tmp_path, [layout.RIFE], report=lambda _: None)
    with pytest.raises(ValueError, match="unknown annotator"):
        download_annotators(tmp_path, ["nope"], report=lambda _: None)


def test_either_weights_file_satisfies_midas(tmp_path: Path) -> None:
    folder = tmp_path / layout.MIDAS
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin"):
        (folder / name).write_text("{}")
    assert download.missing_files(tmp_path, layout.MIDAS) == []


def test_dwpose_comes_from_vace_pose_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    asked: list[tuple[str, str]] = []

    def fake_download(repo_id: str, filename: str, local_dir: Path) -> str:
        asked.append((repo_id, filename))
        path = Path(local_dir) / filename  # huggingface_hub keeps the repository's sub-folder
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(filename.encode())
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    lines: list[str] = []
    download_annotators(tmp_path, [layout.DWPOSE], report=lines.append)
    assert asked == [("ali-vilab/VACE-Annotators", "pose/yolox_l.onnx"),
                     ("ali-vilab/VACE-Annotators", "pose/dw-ll_ucoco_384.onnx")]
    folder = tmp_path / layout.DWPOSE
    assert (folder / "yolox_l.onnx").read_bytes() == b"pose/yolox_l.onnx"
    assert (folder / "dw-ll_ucoco_384.onnx").is_file() and not (folder / "pose").exists()
    assert download.missing_files(tmp_path, layout.DWPOSE) == []
