"""`vace serve --attention` / VACE_ATTENTION reach the worker's Settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import build_parser
from server.settings import Settings
from tests.server.conftest import serve_settings


def test_flag_wins_over_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VACE_ATTENTION", "sage")
    code, settings = serve_settings(monkeypatch, tmp_path, ["--attention", "cudnn"])
    assert code == 0 and settings[0].attention == "cudnn"
    assert Settings.from_json(settings[0].to_json()).attention == "cudnn"  # what the worker sees


def test_environment_then_auto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VACE_ATTENTION", "native")
    assert serve_settings(monkeypatch, tmp_path, [])[1][0].attention == "native"
    monkeypatch.delenv("VACE_ATTENTION")
    assert serve_settings(monkeypatch, tmp_path, [])[1][0].attention == "auto"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--attention", "xformers"])
    monkeypatch.setenv("VACE_ATTENTION", "fast")
    code, settings = serve_settings(monkeypatch, tmp_path, [])
    assert code == 2 and settings == []
    err = capsys.readouterr().err
    assert "attention" in err
    assert all(f"'{name}'" in err for name in ("auto", "native", "cudnn", "flash3", "sage"))


def test_the_command_module_loads_no_pipeline_code() -> None:
    """`vace bench` is handed over before parsing: `vace serve`'s process never imports pipelines/."""
    import subprocess
    import sys

    code = ("import sys, server.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'pipelines', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
