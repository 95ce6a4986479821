"""`vace serve --fp8` / VACE_FP8 / the config file's `fp8` reach the worker's Settings, in that precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import build_parser
from server.settings import Settings
from tests.server.conftest import serve_settings


def test_flag_beats_environment_beats_file_beats_default(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.delenv("VACE_FP8", raising=False)
    config = tmp_path / "vace.toml"
    config.write_text('fp8 = "on"\n')
    assert serve_settings(monkeypatch, tmp_path, [])[1][0].fp8 == "auto"  # the default
    assert serve_settings(monkeypatch, tmp_path, ["--config", str(config)])[1][0].fp8 == "on"
    monkeypatch.setenv("VACE_FP8", "off")
    assert serve_settings(monkeypatch, tmp_path, ["--config", str(config)])[1][0].fp8 == "off"
    code, settings = serve_settings(monkeypatch, tmp_path, ["--config", str(config), "--fp8", "auto"])
    assert code == 0 and settings[0].fp8 == "auto"
    assert Settings.from_json(Settings(fp8="on").to_json()).fp8 == "on"  # what the worker sees


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--fp8", "fp4"])
    assert "invalid choice: 'fp4'" in capsys.readouterr().err
    monkeypatch.setenv("VACE_FP8", "yes")
    code, settings = serve_settings(monkeypatch, tmp_path, [])
    assert code == 2 and settings == []
    err = capsys.readouterr().err
    assert "fp8" in err and all(f"'{name}'" in err for name in ("auto", "on", "off"))


def test_a_worker_asked_for_fp8_where_it_cannot_run_does_not_start(tmp_path: Path) -> None:
    """The real worker process, as the supervisor starts it: the reason is its recorded state, before any
    weight is read (as an unusable --attention)."""
    import subprocess
    import sys

    from server.jobs.factory import open_settings_job_store

    settings = Settings(data_dir=tmp_path, model="tiny", device="cpu", fp8="on")
    proc = subprocess.run([sys.executable, "-m", "server.worker", "--worker-id", "w-fp8",
                           "--settings", settings.to_json()], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    (worker,) = open_settings_job_store(settings).workers()
    assert worker["state"] == "failed"
    assert "--fp8 on cannot be used: FP8 needs a CUDA GPU" in worker["detail"]
