"""Issue 11 items 9 (multipart parts count together), 13 (malformed JSON is a 400/422 in fal's form, not a
500) and 14 (an upload URL is single-use), on the real app in-process."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.api.app import create_app
from server.jobs.factory import MEMORY, open_job_store
from server.settings import Settings
from tests.server.conftest import ProtocolApp

LIMIT = 1000


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0, max_upload_bytes=LIMIT)
    with TestClient(create_app(settings, run_workers=False, store=open_job_store(MEMORY))) as client:
        yield client


def _multipart(client: TestClient) -> dict[str, str]:
    response = client.post("/storage/upload/initiate-multipart",
                           json={"file_name": "v.mp4", "content_type": "video/mp4"})
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "files").rglob("*") if p.is_file())


# -- item 9: multipart parts are summed against the upload cap ------------------------------------------

def test_multipart_parts_count_against_the_cap_together(capped: TestClient, tmp_path: Path) -> None:
    """30 parts of 1 MB were accepted under a 1 MB cap (each part was checked alone)."""
    upload = _multipart(capped)
    first = capped.put(upload["upload_url"] + "/1", content=b"a" * 600)
    assert first.status_code == 200
    over = capped.put(upload["upload_url"] + "/2", content=b"b" * 600)
    assert over.status_code == 413, over.text
    assert over.json()["error_type"] == over.headers["x-fal-error-type"] == "file_too_large"
    # Replacing a part does not count it twice; what fits still fits.
    assert capped.put(upload["upload_url"] + "/1", content=b"c" * 600).status_code == 200
    second = capped.put(upload["upload_url"] + "/2", content=b"d" * 400)
    assert second.status_code == 200
    slot = tmp_path / "data" / "uploads" / upload["upload_url"].rsplit("/", 1)[1]
    assert sum(p.stat().st_size for p in slot.glob("part-*")) == 1000
    parts = [{"partNumber": 1, "etag": hashlib.md5(b"c" * 600).hexdigest()},
             {"partNumber": 2, "etag": second.json()["etag"]}]
    assert capped.post(upload["upload_url"] + "/complete", json={"parts": parts}).status_code == 200
    assert capped.get(upload["file_url"]).content == b"c" * 600 + b"d" * 400


# -- item 13: malformed JSON on the storage routes ----------------------------------------------------

@pytest.mark.parametrize(("body", "loc"), [
    ('{"parts": ["not a part"]}', ["body", "parts", 0]),
    ('{"parts": [{"partNumber": "1", "etag": "x"}]}', ["body", "parts", 0, "partNumber"]),
    ('{"parts": [{"partNumber": 0, "etag": "x"}]}', ["body", "parts", 0, "partNumber"]),
    ('{"parts": [{"partNumber": 1}]}', ["body", "parts", 0, "etag"]),
    ('{"parts": []}', ["body", "parts"]),
    ('{"parts": {"1": "x"}}', ["body", "parts"]),
    ('["parts"]', ["body"]),
])
def test_a_complete_body_of_the_wrong_shape_is_a_422_naming_the_field(protocol_app: ProtocolApp, body: str,
                                                                      loc: list[object]) -> None:
    upload = _multipart(protocol_app.client)
    assert protocol_app.client.put(upload["upload_url"] + "/1", content=b"x").status_code == 200
    response = protocol_app.client.post(upload["upload_url"] + "/complete", content=body,
                                        headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, "{not json", '{"parts": [1,]}'],
                         ids=["nested-100000-deep", "not-json", "trailing-comma"])
@pytest.mark.parametrize("route", ["complete", "initiate", "cdn-complete"])
def test_malformed_or_deeply_nested_json_is_a_400_in_fals_form(protocol_app: ProtocolApp, body: str,
                                                               route: str) -> None:
    client = protocol_app.client
    if route == "initiate":
        url = "/storage/upload/initiate"
    elif route == "complete":
        url = _multipart(client)["upload_url"] + "/complete"
    else:
        created = client.post("/files/upload/multipart", headers={"X-Fal-File-Name": "v.mp4"}).json()
        url = f"{created['access_url']}/multipart/{created['uploadId']}/complete"
    response = client.post(url, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "The request body is not valid JSON", "error_type": "invalid_json"}


def test_initiate_fields_of_the_wrong_type_are_a_422(protocol_app: ProtocolApp) -> None:
    response = protocol_app.client.post("/storage/upload/initiate", json={"file_name": {"a": 1}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file_name"]
    # The fields both clients send, and the ones neither needs, still work.
    assert protocol_app.client.post("/storage/upload/initiate", json={
        "file_name": "a.mp4", "content_type": "video/mp4", "storage_type": "fal-cdn-v3"}).status_code == 200
    assert protocol_app.client.post("/storage/upload/initiate").status_code == 200


# -- item 14: upload URLs are single-use --------------------------------------------------------------

def test_a_whole_file_upload_url_is_not_writable_once_complete(protocol_app: ProtocolApp,
                                                               tmp_path: Path) -> None:
    """A file could be swapped under a queued job by PUTting to its upload URL again."""
    client = protocol_app.client
    upload = client.post("/storage/upload/initiate", json={"file_name": "v.mp4",
                                                           "content_type": "video/mp4"}).json()
    assert client.put(upload["upload_url"], content=b"original").status_code == 200
    swap = client.put(upload["upload_url"], content=b"swapped!")
    assert swap.status_code == 404
    assert client.put(upload["upload_url"] + "/1", content=b"swapped!").status_code == 404
    assert client.get(upload["file_url"]).content == b"original"
    assert [p.read_bytes() for p in _files(tmp_path / "data")] == [b"original"]


@pytest.mark.parametrize("flavour", ["storage", "cdn"])
def test_a_multipart_upload_is_not_writable_once_complete(protocol_app: ProtocolApp, flavour: str) -> None:
    client = protocol_app.client
    if flavour == "storage":
        upload = _multipart(client)
        base, file_url = upload["upload_url"], upload["file_url"]
    else:
        created = client.post("/files/upload/multipart", headers={"X-Fal-File-Name": "v.mp4"}).json()
        base = f"{created['access_url']}/multipart/{created['uploadId']}"
        file_url = created["access_url"]
    etag = client.put(base + "/1", content=b"original").headers["etag"].strip('"')
    parts = {"parts": [{"partNumber": 1, "etag": etag}]}
    assert client.post(base + "/complete", json=parts).status_code == 200
    assert client.put(base + "/1", content=b"swapped!").status_code == 404
    assert client.post(base + "/complete", json=parts).status_code == 404
    if flavour == "storage":
        assert client.put(base, content=b"swapped!").status_code == 404
    assert client.get(file_url).content == b"original"


def test_a_failed_put_leaves_the_upload_url_usable(capped: TestClient) -> None:
    """Only a finished upload uses the URL up: one refused as too large can be retried."""
    upload = capped.post("/storage/upload/initiate", json={"file_name": "v.mp4"}).json()
    assert capped.put(upload["upload_url"], content=b"x" * (LIMIT + 1)).status_code == 413
    assert capped.put(upload["upload_url"], content=b"fits").status_code == 200
    assert capped.get(upload["file_url"]).content == b"fits"
