"""CORS origins from `vace serve --cors-origin` (repeatable) and VACE_CORS_ORIGINS, through a live server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.server.conftest import LiveServer, start_server

APP = "fal-ai/wan-vace-14b"


def preflight(server: LiveServer, origin: str, path: str = f"/queue/{APP}/depth") -> httpx.Response:
    """What a browser sends before a cross-origin POST with fal-js's headers."""
    return httpx.options(server.base + path, timeout=10.0, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    })


def test_allowed_origins_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VACE_CORS_ORIGINS", "https://from-env.example")  # the flags take precedence
    server = start_server(tmp_path / "data", workers=0, extra_args=(
        "--cors-origin", "https://studio.example", "--cors-origin", "http://localhost:5173"))
    try:
        for origin in ("https://studio.example", "http://localhost:5173"):
            response = preflight(server, origin)
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == origin
            assert "POST" in response.headers["access-control-allow-methods"]
        for origin in ("https://evil.example", "https://from-env.example", "https://studio.example.evil"):
            response = preflight(server, origin)
            assert response.status_code == 400
            assert "access-control-allow-origin" not in response.headers
        # A simple (non-preflighted) request: the header only for an allowed origin.
        allowed = httpx.get(server.base + "/", headers={"Origin": "https://studio.example"})
        refused = httpx.get(server.base + "/", headers={"Origin": "https://evil.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://studio.example"
        assert "access-control-allow-origin" not in refused.headers
    finally:
        server.stop()


def test_environment_variable_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VACE_CORS_ORIGINS", "https://a.example,https://b.example")
    from_env = start_server(tmp_path / "env", workers=0)
    try:
        assert preflight(from_env, "https://b.example").headers["access-control-allow-origin"] == \
            "https://b.example"
        assert "access-control-allow-origin" not in preflight(from_env, "https://c.example").headers
    finally:
        from_env.stop()
    monkeypatch.delenv("VACE_CORS_ORIGINS")
    default = start_server(tmp_path / "default", workers=0)
    try:
        response = preflight(default, "https://anyone.example")
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*"
    finally:
        default.stop()
