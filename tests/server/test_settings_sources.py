"""Settings sources: flag > environment > --config file > default, and every option documented once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from preprocessors.annotators import catalog
from preprocessors.annotators.registry import (
    DEFAULT_ANNOTATORS_DIR,
    MASK_TRACKING_CHOICES,
    SAFETY_MISSING_CHOICES,
    AnnotatorConfig,
)
from server import settings as settings_module
from server.cli import build_parser
from server.flags import flagged_fields
from server.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _served(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Settings:
    """The Settings `vace serve ARGV` would hand to the app (uvicorn not started)."""
    captured: list[Settings] = []
    monkeypatch.setattr("server.api.app.create_app", lambda settings: captured.append(settings))
    monkeypatch.setattr("server.api.server.run_server", lambda app, **kwargs: None)
    args = build_parser().parse_args(["serve", "--model", "tiny", *argv])
    assert args.func(args) == 0
    return captured[0]


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         suffix: str) -> None:
    table = {"port": 9001, "max-queue-length": 7, "retention-hours": 2, "api_key": ["from-file"],
             "cors-origin": ["https://file.example"], "pose-model": "openpose"}
    config = tmp_path / f"vace{suffix}"
    if suffix == ".json":
        config.write_text(json.dumps(table))
    else:
        config.write_text("\n".join(f"{key} = {json.dumps(value)}" for key, value in table.items()))
    monkeypatch.setenv("VACE_MAX_QUEUE_LENGTH", "8")
    monkeypatch.setenv("VACE_PORT", "9002")
    monkeypatch.delenv("VACE_API_KEYS", raising=False)
    monkeypatch.delenv("VACE_CORS_ORIGINS", raising=False)
    settings = _served(monkeypatch, ["--data-dir", str(tmp_path), "--config", str(config), "--port", "9003"])
    assert settings.port == 9003  # flag over environment and file
    assert settings.max_queue_length == 8  # environment over file
    assert settings.retention_s == 7200.0 and settings.api_keys == ("from-file",)  # file, in the flag's unit
    assert settings.cors_allow_origins == "https://file.example"
    assert settings.worker_env["VACE_POSE_MODEL"] == "openpose"  # reaches the workers
    assert settings.max_output_frames == 1441  # nobody set it: the default
    assert Settings.from_json(settings.to_json()).retention_s == 7200.0  # the worker needs no file


@pytest.mark.parametrize(("environment", "flags", "expected"), [
    ("https://env.example", [], "https://env.example"),  # the environment's alias over the file's key
    (None, ["--cors-origin", "https://flag.example"], "https://flag.example"),
    ("https://env.example", ["--cors-origin", "https://flag.example"], "https://flag.example"),
])
def test_an_aliased_setting_in_the_file_yields_to_environment_and_flag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: str | None, flags: list[str],
        expected: str) -> None:
    """VACE_CORS_ORIGINS is the one setting whose variable is not VACE_<FIELD>; the file sets it too."""
    config = tmp_path / "vace.toml"
    config.write_text('cors-origin = ["https://file.example"]')
    if environment is None:
        monkeypatch.delenv("VACE_CORS_ORIGINS", raising=False)
    else:
        monkeypatch.setenv("VACE_CORS_ORIGINS", environment)
    settings = _served(monkeypatch, ["--data-dir", str(tmp_path), "--config", str(config), *flags])
    assert settings.cors_allow_origins == expected


def test_config_file_from_the_environment_is_read_once(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "vace.toml"
    config.write_text("max-queue-length = 5")
    monkeypatch.setenv("VACE_CONFIG_FILE", str(config))
    settings = Settings(data_dir=tmp_path, model="tiny")
    assert settings.max_queue_length == 5
    config.unlink()  # a worker inherits VACE_CONFIG_FILE but takes every value from the API process
    assert Settings.from_json(settings.to_json()).max_queue_length == 5


def test_bad_config_file_is_refused_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("server.api.server.run_server", lambda app, **kwargs: None)
    for text, reason in (("max-queue-lenght = 3", "max-queue-lenght"), ("max-queue-length = 0", "greater"),
                         ("depth-model = 'zoe'", "depth-anything-v2"), ("port = ", "bad.toml")):
        config = tmp_path / "bad.toml"
        config.write_text(text)
        args = build_parser().parse_args(["serve", "--model", "tiny", "--config", str(config)])
        assert args.func(args) == 2
        assert reason in capsys.readouterr().err


def test_lists_are_comma_separated_in_the_environment(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VACE_API_KEYS", " a, b ,,")
    monkeypatch.setenv("VACE_FETCH_ALLOW_HOSTS", "10.0.0.0/8")
    monkeypatch.setenv("VACE_WEBHOOK_RETRY_BASE_S", "")  # empty: the default, as before
    settings = Settings(data_dir=tmp_path, model="tiny")
    assert settings.api_keys == ("a", "b") and settings.fetch_allow_hosts == ("10.0.0.0/8",)
    assert settings.webhook_retry_base_s == 15.0
    monkeypatch.setenv("VACE_RETENTION_S", "-1")
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, model="tiny")


def test_worker_choices_and_defaults_match_the_settings(tmp_path: Path) -> None:
    """preprocessors/annotators cannot import server/ (nor the API process numpy): tie their copies."""
    fields = Settings.model_fields
    assert set(get_args(settings_module.DepthModel)) == set(catalog.choices("depth"))
    assert set(get_args(settings_module.PoseModel)) == set(catalog.choices("pose"))
    assert get_args(settings_module.SafetyMissing) == SAFETY_MISSING_CHOICES
    assert get_args(settings_module.MaskTracking) == MASK_TRACKING_CHOICES
    worker_defaults = AnnotatorConfig(root=None)
    assert fields["mask_tracking"].default == worker_defaults.mask_tracking
    assert (fields["depth_model"].default, fields["pose_model"].default, fields["safety_missing"].default,
            fields["safety_threshold"].default) == (
        worker_defaults.depth_backend, worker_defaults.pose_backend, worker_defaults.safety_missing,
        worker_defaults.safety_threshold)
    assert settings_module.DEFAULT_ANNOTATORS_DIR == DEFAULT_ANNOTATORS_DIR
    # What the worker builds from the environment the supervisor gives it is what the settings say.
    settings = Settings(data_dir=tmp_path, model="/m", depth_model="depth-anything-v2", safety_threshold=0.3,
                        mask_tracking="static")
    config = AnnotatorConfig.for_worker(settings.model, settings.data_dir, None, settings.worker_env)
    assert (config.root, config.depth_backend, config.pose_backend, config.safety_threshold,
            config.mask_tracking) == (settings.annotators_dir, "depth-anything-v2", "dwpose", 0.3, "static")


def test_every_flag_is_in_help_and_in_the_readme_table(capsys: pytest.CaptureFixture[str]) -> None:
    readme = README.read_text()
    table = readme[readme.index("`vace serve` options"):]
    table = table[:table.index("\n\n", table.index("| option"))]
    documented = set(re.findall(r"--[a-z][a-z0-9-]*", table))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    serve_help = capsys.readouterr().out
    flags = {f"--{flag.name}" for _, flag in flagged_fields(Settings).values()}
    assert flags <= set(re.findall(r"--[a-z][a-z0-9-]*", serve_help))
    assert flags == documented, "README's options table and Settings disagree"
    # Fields that are not flags are internal tuning (environment or config file only).
    unflagged = set(Settings.model_fields) - set(flagged_fields(Settings))
    assert all(name.startswith("webhook_") for name in unflagged), unflagged


def test_gpus_give_one_worker_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.api.background.supervisor import _worker_envs

    settings = _served(monkeypatch, ["--data-dir", str(tmp_path), "--gpus", "0, 1"])
    assert _worker_envs(settings) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert _worker_envs(Settings(data_dir=tmp_path, model="tiny", num_workers=2)) == [{}, {}]
