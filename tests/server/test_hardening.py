"""Holes found by attacking a live server (issue 11): the ones closed so far, each on the real app."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.settings import Settings
from tests.server.conftest import ProtocolApp

APP = "fal-ai/wan-vace-14b"
REQUEST = {"prompt": "x", "video_url": "https://example.com/v.mp4"}


@pytest.mark.parametrize("header", ["nan", "inf", "-inf", "Infinity", "0", "-5", "soon"])
def test_a_request_timeout_that_is_no_deadline_is_a_400(protocol_app: ProtocolApp, header: str) -> None:
    response = protocol_app.client.post(f"/queue/{APP}/depth", json=REQUEST,
                                        headers={"x-fal-request-timeout": header})
    assert response.status_code == 400, response.text
    assert "Invalid request timeout header" in response.json()["detail"]
    assert protocol_app.store.count_queued() == 0  # nothing was queued


def test_a_finite_request_timeout_is_still_accepted(protocol_app: ProtocolApp) -> None:
    response = protocol_app.client.post(f"/queue/{APP}/depth", json=REQUEST,
                                        headers={"x-fal-request-timeout": "30.5"})
    assert response.status_code == 200, response.text


def test_files_answer_head_with_the_headers_and_no_body(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from server.api.app import create_app
    from server.files.factory import open_file_store
    from server.jobs.factory import MEMORY, open_job_store

    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0)
    with TestClient(create_app(settings, run_workers=False, store=open_job_store(MEMORY))) as client:
        files = open_file_store(settings.files_dir)
        name = files.reserve("clip.mp4")
        with files.writer(name) as out:
            out.write(b"0123456789")
        url = files.url(name)
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "10" and head.headers["content-type"] == "video/mp4"
        assert client.get(url).content == b"0123456789"
        assert client.head(url.rsplit("/", 1)[0] + "/missing.mp4").status_code == 404


def test_the_data_dir_this_server_creates_is_owner_only(protocol_app: ProtocolApp, tmp_path: Path) -> None:
    mode = stat.S_IMODE((tmp_path / "data").stat().st_mode)
    assert mode == 0o700, oct(mode)


@pytest.mark.parametrize("keys", [("",), (" ",), ("key ",), ("good", "")])
def test_empty_or_padded_api_keys_are_refused_at_start(tmp_path: Path, keys: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError, match="API key must be non-empty"):
        Settings(data_dir=tmp_path, model="tiny", api_keys=keys)


@pytest.mark.parametrize("variable", [" , ", ",", " "])
def test_an_api_key_list_that_names_no_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       variable: str) -> None:
    monkeypatch.setenv("VACE_API_KEYS", variable)
    with pytest.raises(ValidationError, match="API key must be non-empty"):
        Settings(data_dir=tmp_path, model="tiny")


def test_api_key_lists_keep_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VACE_API_KEYS", "first, second,")
    assert Settings(data_dir=tmp_path, model="tiny").api_keys == ("first", "second")
    monkeypatch.setenv("VACE_API_KEYS", "")  # an empty variable is an unset one: no keys
    assert Settings(data_dir=tmp_path, model="tiny").api_keys == ()


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False), ("::1", False),
                                              ("localhost", False), ("192.168.1.5", True)])
def test_serving_beyond_loopback_without_keys_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], host: str,
                                                    warned: bool) -> None:
    from server.cli import build_parser

    monkeypatch.delenv("VACE_API_KEYS", raising=False)
    monkeypatch.setattr("server.api.app.create_app", lambda settings: None)
    monkeypatch.setattr("server.api.server.run_server", lambda app, **kwargs: None)
    argv = ["serve", "--model", "tiny", "--data-dir", str(tmp_path), "--host", host]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    assert ("without API keys" in capsys.readouterr().err) is warned


@pytest.mark.parametrize("field", ["guidance_scale", "shift", "num_frames", "seed", "frames_per_second",
                                   "num_inference_steps"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_a_422_naming_the_field(protocol_app: ProtocolApp, field: str,
                                                       literal: str) -> None:
    """Python's JSON parser accepts NaN and Infinity; they are no value of any field (was a 500)."""
    body = f'{{"prompt": "x", "video_url": "https://example.com/v.mp4", "{field}": {literal}}}'
    response = protocol_app.client.post(f"/queue/{APP}/depth", content=body,
                                        headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert [item["loc"] for item in response.json()["detail"]] == [["body", field]]
    assert protocol_app.store.count_queued() == 0


def test_a_422_echoing_a_lone_surrogate_is_still_a_422(protocol_app: ProtocolApp) -> None:
    body = '{"prompt": "x", "video_url": "https://example.com/v.mp4", "num_frames": "\\ud800"}'
    response = protocol_app.client.post(f"/queue/{APP}/depth", content=body,
                                        headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "num_frames"]
