"""Settings and CLI: what the API process accepts is what the worker understands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.compile import COMPILE_CHOICES
from pipelines.memory import MEMORY_PLAN_CHOICES, VAE_TILING_CHOICES
from server.cli import build_parser
from server.settings import COMPILE_MODES, MEMORY_PLANS, VAE_TILING, Settings


def test_memory_choices_match_the_worker() -> None:
    assert MEMORY_PLANS == MEMORY_PLAN_CHOICES
    assert VAE_TILING == VAE_TILING_CHOICES


def test_compile_choices_match_the_worker_and_reach_it() -> None:
    assert COMPILE_MODES == COMPILE_CHOICES
    assert Settings().compile == "auto"
    assert Settings.from_json(Settings(compile="on").to_json()).compile == "on"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--compile", "max-autotune"])


def test_settings_round_trip_to_the_worker_without_keys(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, model="tiny", memory_plan="group_offload", vae_tiling="on",
                        api_keys=("secret",), fetch_allow_hosts=("10.0.0.0/8",), retention_s=60.0)
    text = settings.to_json()
    assert "secret" not in text, "worker argv is visible to every local user"
    again = Settings.from_json(text)
    assert again.memory_plan == "group_offload" and again.vae_tiling == "on"
    assert again.fetch_allow_hosts == ("10.0.0.0/8",) and again.retention_s == 60.0
    assert again.data_dir == tmp_path


def test_serve_flags_parse() -> None:
    args = build_parser().parse_args(["serve", "--model", "tiny", "--memory-plan", "model_offload",
                                      "--api-key", "a", "--api-key", "b", "--fetch-allow", "127.0.0.1",
                                      "--retention-hours", "48"])
    assert args.memory_plan == "model_offload" and args.api_key == ["a", "b"]
    assert args.fetch_allow == ["127.0.0.1"] and args.retention_hours == 48.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--memory-plan", "everything_on_cpu"])


def test_serve_without_model_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["serve"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "vace download" in err and "--model tiny" in err and len(err.strip().splitlines()) == 1


def test_worker_only_flags_travel_as_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vace serve` hands annotator options to workers through their environment."""
    import server.cli as cli

    captured: dict[str, Settings] = {}
    monkeypatch.setattr("server.api.app.create_app", lambda settings: captured.setdefault("s", settings))
    monkeypatch.setattr("server.api.server.run_server", lambda app, **kwargs: None)
    args = build_parser().parse_args([
        "serve", "--model", "tiny", "--data-dir", str(tmp_path), "--annotators-dir", "ann",
        "--depth-model", "depth-anything-v2", "--safety-missing", "refuse", "--safety-threshold", "0.25",
    ])
    assert cli._serve(args) == 0
    env = captured["s"].worker_env
    assert env["VACE_ANNOTATORS_DIR"] == str(Path("ann").resolve())
    assert env["VACE_DEPTH_MODEL"] == "depth-anything-v2" and env["VACE_SAFETY_MISSING"] == "refuse"
    assert env["VACE_SAFETY_THRESHOLD"] == "0.25" and "VACE_GPUS" not in env
    assert env["VACE_POSE_MODEL"] == "dwpose"  # not given: the default, stated so the worker's env can't win


def test_api_process_never_imports_torch(tmp_path: Path) -> None:
    """The API process must stay light and CUDA-free: only workers load torch, diffusers and PyAV."""
    code = ("import sys; from pathlib import Path; import server.api.app, server.cli, server.settings; "
            "server.api.app.create_app(server.settings.Settings(data_dir=Path(sys.argv[1]), model='tiny'), "
            "run_workers=False); "
            "print(','.join(sorted({'torch', 'diffusers', 'transformers', 'av', 'cv2'} & set(sys.modules))))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"the API process imported {out.stdout.strip()}"


def _served_settings(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Settings:
    """The Settings `vace serve ARGV` would hand to the app (uvicorn not started)."""
    import server.cli as cli

    captured: list[Settings] = []
    monkeypatch.setattr("server.api.app.create_app", lambda settings: captured.append(settings))
    monkeypatch.setattr("server.api.server.run_server", lambda app, **kwargs: None)
    assert cli._serve(build_parser().parse_args(["serve", "--model", "tiny", *argv])) == 0
    return captured[0]


def test_reliability_flags_reach_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VACE_CORS_ORIGINS", raising=False)
    defaults = _served_settings(monkeypatch, ["--data-dir", str(tmp_path)])
    assert defaults.cors_allow_origins == "*" and defaults.upload_max_age_s == 24 * 3600.0
    assert defaults.max_output_frames == 1441 and defaults.worker_env["VACE_POSE_MODEL"] == "dwpose"
    given = _served_settings(monkeypatch, [
        "--data-dir", str(tmp_path), "--cors-origin", "https://a.example", "--cors-origin",
        "http://localhost:3000", "--upload-max-age-hours", "2", "--max-output-frames", "241",
        "--pose-model", "openpose",
    ])
    assert (defaults.max_input_bytes, defaults.download_timeout_s, defaults.max_upload_bytes) == (
        2 * 1024**3, 60.0, 2 * 1024**3)
    sizes = _served_settings(monkeypatch, ["--data-dir", str(tmp_path), "--max-download-bytes", "1000",
                                           "--download-timeout", "5", "--max-upload-bytes", "2000"])
    assert (sizes.max_input_bytes, sizes.download_timeout_s, sizes.max_upload_bytes) == (1000, 5.0, 2000)
    assert given.cors_allow_origins == "https://a.example,http://localhost:3000"
    assert given.upload_max_age_s == 7200.0 and given.max_output_frames == 241
    assert given.worker_env == {**defaults.worker_env, "VACE_POSE_MODEL": "openpose"}
    again = Settings.from_json(given.to_json())  # what a worker sees
    assert again.max_output_frames == 241 and again.upload_max_age_s == 7200.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--pose-model", "mediapipe"])


def test_cors_origins_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VACE_CORS_ORIGINS", " https://a.example , https://b.example,")
    assert Settings(data_dir=tmp_path, model="tiny").cors_allow_origins == "https://a.example,https://b.example"
    flag = _served_settings(monkeypatch, ["--data-dir", str(tmp_path), "--cors-origin", "https://c.example"])
    assert flag.cors_allow_origins == "https://c.example"  # the flag wins over the environment


@pytest.mark.parametrize("flag", ["--max-output-frames", "--max-queue-length", "--max-request-bytes",
                                  "--max-input-seconds", "--retention-hours", "--max-attempts"])
def test_limits_must_be_positive(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-5"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", flag, bad])
        assert "must be greater than 0" in capsys.readouterr().err
    assert getattr(build_parser().parse_args(["serve", flag, "3"]), flag[2:].replace("-", "_")) == 3
