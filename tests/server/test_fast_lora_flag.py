"""`vace serve --fast-lora` / VACE_FAST_LORA reach the worker's Settings, as absolute paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from server.cli import build_parser
from server.settings import Settings
from tests.server.conftest import serve_settings


def test_off_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, settings = serve_settings(monkeypatch, tmp_path, [])
    assert code == 0 and settings[0].fast_lora is None and settings[0].fast_lora_strength == 1.0


def test_a_relative_path_is_taken_from_where_serve_starts(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["--fast-lora", "weights/loras/distill.safetensors", "--fast-lora-strength", "0.8"]
    code, settings = serve_settings(monkeypatch, tmp_path, argv)
    assert code == 0
    expected = tmp_path / "weights" / "loras" / "distill.safetensors"
    worker = Settings.from_json(settings[0].to_json())  # what the worker, started elsewhere, sees
    assert (worker.fast_lora, worker.fast_lora_strength) == (expected, 0.8)


def test_environment_and_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VACE_FAST_LORA", "/models/a.safetensors")
    assert serve_settings(monkeypatch, tmp_path, [])[1][0].fast_lora == Path("/models/a.safetensors")
    flagged = serve_settings(monkeypatch, tmp_path, ["--fast-lora", "/models/b.safetensors"])[1][0]
    assert flagged.fast_lora == Path("/models/b.safetensors")


@pytest.mark.parametrize("strength", ["0", "-1", "nan"])
def test_a_strength_that_is_not_positive_is_refused(strength: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--fast-lora-strength", strength])
    assert "--fast-lora-strength" in capsys.readouterr().err
    with pytest.raises(ValidationError, match="fast_lora_strength"):
        Settings(fast_lora_strength=float(strength))
