"""`download_annotators` without the network: every record's fetch is replaced by a stub writing files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from preprocessors.annotators import catalog, download
from preprocessors.annotators.catalog import DEPTH_ANYTHING, DWPOSE, MIDAS, OPENPOSE, RIFE
from preprocessors.annotators.download import default_models, download_annotators


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
    stubs = tuple(replace(m, fetch=_stub(m.required_files, seen)) for m in catalog.ALL)
    monkeypatch.setattr(catalog, "ALL", stubs)
    return seen


def test_default_set_skips_the_non_commercial_depth_model_and_resumes(tmp_path: Path, calls: list[str]):
    folders = [m.folder for m in catalog.ALL]
    assert len(set(folders)) == len(folders)  # one sub-folder per record
    assert DEPTH_ANYTHING.folder not in default_models() and MIDAS.folder in default_models()
    # DWPose is the default pose backend; OpenPose (non-commercial) only on request.
    assert DWPOSE.folder in default_models() and OPENPOSE.folder not in default_models()
    assert DWPOSE.required_files == ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")
    lines: list[str] = []
    assert download_annotators(tmp_path, report=lines.append) == tmp_path
    assert sorted(calls) == sorted(default_models())
    calls.clear()
    download_annotators(tmp_path, report=lines.append)  # complete folders are skipped
    assert calls == [] and lines[-1].endswith("already complete")
    download_annotators(tmp_path, [DEPTH_ANYTHING.folder], report=lines.append)
    assert calls == [DEPTH_ANYTHING.folder]


def test_incomplete_source_and_unknown_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "ALL", (replace(RIFE, fetch=lambda folder: None),))
    with pytest.raises(FileNotFoundError, match="rife/flownet.pkl"):
        download_annotators(tmp_path, [RIFE.folder], report=lambda _: None)
    with pytest.raises(ValueError, match="unknown annotator"):
        download_annotators(tmp_path, ["nope"], report=lambda _: None)


def test_either_weights_file_satisfies_midas(tmp_path: Path) -> None:
    folder = tmp_path / MIDAS.folder
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin"):
        (folder / name).write_text("{}")
    assert download.missing_files(tmp_path, MIDAS.folder) == []


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
    download_annotators(tmp_path, [DWPOSE.folder], report=lines.append)
    assert asked == [("ali-vilab/VACE-Annotators", "pose/yolox_l.onnx"),
                     ("ali-vilab/VACE-Annotators", "pose/dw-ll_ucoco_384.onnx")]
    folder = tmp_path / DWPOSE.folder
    assert (folder / "yolox_l.onnx").read_bytes() == b"pose/yolox_l.onnx"
    assert (folder / "dw-ll_ucoco_384.onnx").is_file() and not (folder / "pose").exists()
    assert download.missing_files(tmp_path, DWPOSE.folder) == []
