"""API keys (server/api/middleware/auth.py): the middleware on a small app, in the real app's middleware
stack, and live."""

from __future__ import annotations

import inspect
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from server.api import app as app_module
from server.api.middleware.addressing import REQUEST_ID_HEADER, FalAddressingMiddleware
from server.api.middleware.auth import ApiKeyMiddleware
from server.api.middleware.body_limit import RequestSizeMiddleware
from server.api.middleware.status_fast_path import StatusFastPath
from server.settings import Settings
from tests.server.conftest import start_server

KEYS = ("key-one", "id:secret-two")
APP = "fal-ai/wan-vace-14b"


def small_app(keys: tuple[str, ...] = KEYS) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/files/{token}/{name}")
    def file(token: str, name: str) -> dict[str, str]:
        return {"file": name}

    @app.post("/queue/{app_path:path}")
    def submit(app_path: str) -> dict[str, str]:
        return {"status": "IN_QUEUE"}

    @app.get("/queue/{app_path:path}/requests/{request_id}/status")
    def status(app_path: str, request_id: str) -> dict[str, str]:
        return {"status": "IN_PROGRESS"}

    @app.post("/storage/upload/initiate")
    def initiate() -> dict[str, str]:
        return {"upload_url": "/storage/upload/abc"}

    @app.put("/storage/upload/{upload_id}")
    def put_upload(upload_id: str) -> dict[str, str]:
        return {"ok": upload_id}

    app.add_middleware(ApiKeyMiddleware, keys=keys)
    return app


@pytest.fixture
def client() -> TestClient:
    return TestClient(small_app())


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}
    assert response.headers[REQUEST_ID_HEADER]


@pytest.mark.parametrize("header", [None, "", "Key", "Key wrong", "Bearer key-on", "Basic a2V5LW9uZQ==",
                                    "Key key-one-and-more", "key-one"])
def test_missing_or_wrong_keys_are_refused(client: TestClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    assert_unauthorized(client.post(f"/queue/{APP}", json={}, headers=headers))
    assert_unauthorized(client.get(f"/queue/{APP}/requests/x/status", headers=headers))
    assert_unauthorized(client.post("/storage/upload/initiate", headers=headers))


@pytest.mark.parametrize("header", ["Key key-one", "Bearer key-one", "key id:secret-two",
                                    "BEARER id:secret-two", "Key  key-one "])
def test_each_key_works_in_both_schemes(client: TestClient, header: str) -> None:
    response = client.post(f"/queue/{APP}", json={}, headers={"Authorization": header})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/files/tok_en/out.mp4"),
    ("HEAD", "/files/tok_en/out.mp4"), ("PUT", "/storage/upload/abcdef"),
])
def test_open_routes_need_no_key(client: TestClient, method: str, path: str) -> None:
    assert client.request(method, path).status_code in (200, 405)  # HEAD may be 405 here; never 401


def test_not_every_files_path_is_open(client: TestClient) -> None:
    assert_unauthorized(client.post("/files/upload"))  # uploads need a key; only reading a file is open
    assert_unauthorized(client.put("/files/tok/name/multipart/id/1"))


def test_no_keys_means_no_authentication() -> None:
    assert TestClient(small_app(keys=())).post(f"/queue/{APP}", json={}).status_code == 200


def test_cors_preflight_passes_without_a_key() -> None:
    app = small_app()
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    response = TestClient(app).options(f"/queue/{APP}", headers=preflight)
    assert response.status_code == 200
    # Also when the preflight reaches the middleware itself (no CORS middleware in front of it).
    assert TestClient(small_app()).options(f"/queue/{APP}", headers=preflight).status_code != 401


def real_app(tmp_path: Path) -> FastAPI:
    """The real app, with the middleware where app.py should put it (unless app.py already does)."""
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0, api_keys=KEYS)
    app = app_module.create_app(settings, run_workers=False)
    if not any(m.cls is ApiKeyMiddleware for m in app.user_middleware):
        # add_middleware() prepends; the line goes just before FalAddressingMiddleware, i.e. innermost.
        app.user_middleware.append(Middleware(ApiKeyMiddleware, keys=settings.api_keys))
    assert [m.cls for m in app.user_middleware][-4:] == [FalAddressingMiddleware, ApiKeyMiddleware,
                                                         RequestSizeMiddleware, StatusFastPath]
    return app


def test_in_the_real_middleware_stack(tmp_path: Path) -> None:
    client = TestClient(real_app(tmp_path))
    origin = {"Origin": "https://app.example"}
    response = client.post(f"/{APP}/", json={}, headers={**origin, "Host": "queue.example.com"})
    assert_unauthorized(response)
    assert len(response.headers.get_list(REQUEST_ID_HEADER)) == 1
    assert response.headers["access-control-allow-origin"]  # the browser can read the 401
    # Through the JS proxy route the target URL picks the route, and the key is still required.
    proxied = {"x-fal-target-url": f"https://queue.fal.run/{APP}/requests/abc/status"}
    assert_unauthorized(client.get("/api/fal/proxy", headers=proxied))
    assert_unauthorized(client.get(f"/queue/{APP}/requests/abc/status"))  # the status fast path too
    key = {"Authorization": "Key key-one"}
    assert client.get("/api/fal/proxy", headers={**proxied, **key}).status_code == 404
    assert client.get(f"/queue/{APP}/requests/abc/status/", headers=key).status_code == 404
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/.well-known/jwks.json").json()["keys"]  # receivers fetch it without a key
    assert client.get("/files/abc/none.mp4").status_code == 404  # open, and simply not there
    preflight = {**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    assert client.options(f"/queue/{APP}", headers=preflight).status_code == 200


def test_python_client_cdn_uploads_work_with_keys_on(tmp_path: Path) -> None:
    """fal-client: POST /storage/auth/token, then /files/upload with `Authorization: Bearer <token>`."""
    client = TestClient(real_app(tmp_path))
    token = client.post("/storage/auth/token?storage_type=fal-cdn-v3", json={},
                        headers={"Authorization": "Key key-one"}).json()
    assert token["token"] == "key-one"
    upload = client.post("/files/upload", content=b"bytes", headers={
        "Authorization": f"{token['token_type']} {token['token']}", "Content-Type": "video/mp4",
        "X-Fal-File-Name": "clip.mp4"})
    assert upload.status_code == 200, upload.text
    assert upload.json()["access_url"].endswith("/clip.mp4")
    assert_unauthorized(client.post("/files/upload", content=b"x", headers={"Authorization": "Bearer nope"}))


def test_live_server_with_keys_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "ApiKeyMiddleware" not in inspect.getsource(app_module):
        pytest.skip("ApiKeyMiddleware is not wired into server/api/app.py yet")
    monkeypatch.setenv("VACE_API_KEYS", ",".join(KEYS))
    server = start_server(tmp_path / "data", workers=0)  # nothing runs: jobs just wait in the queue
    try:
        with server.client() as client:
            assert client.get("/health").status_code == 503  # open (and no worker: "starting")
            assert_unauthorized(client.post(f"/queue/{APP}/depth", json={}))
            response = client.post(f"/queue/{APP}/depth", headers={"Authorization": "Key id:secret-two"},
                                   json={"prompt": "p", "video_url": "https://example.com/v.mp4"})
            assert response.status_code == 200, response.text
            status = client.get(response.json()["status_url"], headers={"Authorization": "Bearer key-one"})
            assert status.status_code == 202
    finally:
        server.stop()
