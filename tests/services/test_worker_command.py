"""`vace worker` and the settings that take the server past one machine (README "Running on several
machines")."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import main
from server.settings import Settings

URL = "postgresql://vace:s3cret@db.internal/vace"


def test_vace_worker_refuses_to_start_without_a_shared_database_and_bucket(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["--database-url", URL], ["--storage", "s3://b/p"]):
        assert main(["worker", "--model", "tiny", "--data-dir", str(tmp_path), *args]) == 2
        assert "--database-url" in capsys.readouterr().err


def test_the_database_url_reaches_workers_in_their_environment_not_their_argv(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, model="tiny", database_url=URL, storage="s3://b/p")
    assert "s3cret" not in settings.to_json() and "s3cret" not in repr(settings)
    assert settings.worker_env["VACE_DATABASE_URL"] == URL
    assert "VACE_DATABASE_URL" not in Settings(data_dir=tmp_path, model="tiny").worker_env


def test_a_worker_reads_the_url_back_from_its_environment(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, model="tiny", database_url=URL, storage="s3://b/p")
    for name, value in settings.worker_env.items():
        monkeypatch.setenv(name, value)
    again = Settings.from_json(settings.to_json())  # what server/worker/loop.py does
    assert again.database_url == URL and again.storage == "s3://b/p"
    assert again.node_name == settings.node_name, "a supervisor's workers are on its box"


def test_each_data_dir_is_its_own_box(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "a", model="tiny").node_name
    assert one != Settings(data_dir=tmp_path / "b", model="tiny").node_name


def test_presigned_links_last_at_most_seven_days(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="presigned_url_ttl_s"):
        Settings(data_dir=tmp_path, model="tiny", presigned_url_ttl_s=8 * 24 * 3600.0)
