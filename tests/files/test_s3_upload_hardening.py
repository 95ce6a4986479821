"""Issue 11 items 9, 10 and 14 over an S3 bucket (--storage, moto's server): upload URLs are single-use across
replicas (a conditional PUT of the slot's `finishing` object is the lock), multipart parts count against the
cap together, and large data: URIs are files in the bucket until their job is no longer queued."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.api.app import create_app
from server.files.factory import open_settings_file_store, open_settings_uploads
from server.files.s3_uploads import S3Uploads
from server.files.uploads import UploadBusy
from server.jobs.factory import MEMORY, open_job_store
from server.jobs.store import JobStore
from server.settings import Settings
from tests.services.s3 import S3Server

CAP = 1_500_000


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return s3_server.new_bucket()


def _settings(data_dir: Path, bucket: str) -> Settings:
    return Settings(data_dir=data_dir, model="tiny", num_workers=0, storage=f"s3://{bucket}/vace",
                    max_upload_bytes=CAP)


def api(data_dir: Path, bucket: str, store: JobStore | None = None) -> Iterator[TestClient]:
    app = create_app(_settings(data_dir, bucket), run_workers=False, store=store or open_job_store(MEMORY))
    with TestClient(app) as client:
        yield client


def keys(s3: S3Server, bucket: str, under: str = "") -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed if under in o["Key"])


def test_an_upload_url_is_single_use_across_replicas(tmp_path: Path, bucket: str,
                                                     s3_server: S3Server) -> None:
    for replica_a in api(tmp_path / "a", bucket):
        for replica_b in api(tmp_path / "b", bucket):
            whole = replica_a.post("/storage/upload/initiate", json={"file_name": "v.mp4"}).json()
            path = whole["upload_url"].split("testserver")[1]
            assert replica_b.put(path, content=b"original").status_code == 200
            assert replica_a.put(path, content=b"swapped!").status_code == 404
            assert replica_a.put(path + "/1", content=b"swapped!").status_code == 404

            multi = replica_a.post("/storage/upload/initiate-multipart", json={"file_name": "m.mp4"}).json()
            base = multi["upload_url"].split("testserver")[1]
            etag = replica_b.put(base + "/1", content=b"first").json()["etag"]
            parts = {"parts": [{"partNumber": 1, "etag": etag}]}
            assert replica_b.post(base + "/complete", json=parts).status_code == 200
            assert replica_a.post(base + "/complete", json=parts).status_code == 404
            assert replica_a.put(base + "/1", content=b"swapped!").status_code == 404

            assert replica_a.get(whole["file_url"]).content == b"original"
            assert replica_b.get(multi["file_url"]).content == b"first"
            assert keys(s3_server, bucket, "/.uploads/") == [], "slots and their locks are gone"


def test_the_finishing_lock_admits_one_caller(tmp_path: Path, bucket: str, s3_server: S3Server) -> None:
    """Eight threads, as eight replicas would, race for one slot's lock: the bucket's conditional PUT lets
    exactly one through; the others are busy until it lets go, and a finished slot admits nobody."""
    settings = _settings(tmp_path / "data", bucket)
    uploads = open_settings_uploads(settings, open_settings_file_store(settings))
    assert isinstance(uploads, S3Uploads)
    pending = uploads.create("v.mp4", "video/mp4")
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def race() -> None:
        start.wait()
        try:
            uploads._claim(pending)
            outcomes.append("claimed")
        except UploadBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["busy"] * 7 + ["claimed"]

    uploads._unclaim(pending)
    with pytest.raises(RuntimeError), uploads.finishing(pending):
        raise RuntimeError("a failed finish frees the slot for a retry")
    with uploads.finishing(pending), pytest.raises(UploadBusy):
        uploads._claim(pending)
    assert uploads.get(pending.upload_id) is None
    with pytest.raises(FileNotFoundError):
        uploads._claim(pending)  # a late finisher that still wins the lock sees the slot gone
    assert keys(s3_server, bucket, "/.uploads/") == []


def test_a_busy_upload_is_a_409(tmp_path: Path, bucket: str) -> None:
    for client in api(tmp_path / "a", bucket):
        settings = _settings(tmp_path / "b", bucket)
        other_replica = open_settings_uploads(settings, open_settings_file_store(settings))
        multi = client.post("/storage/upload/initiate-multipart", json={"file_name": "m.mp4"}).json()
        base = multi["upload_url"].split("testserver")[1]
        etag = client.put(base + "/1", content=b"first").json()["etag"]
        pending = other_replica.get(base.rsplit("/", 1)[1])
        assert pending is not None
        other_replica._claim(pending)
        assert client.put(base + "/2", content=b"late part").status_code == 409
        busy = client.post(base + "/complete", json={"parts": [{"partNumber": 1, "etag": etag}]})
        assert busy.status_code == 409 and busy.json()["error_type"] == "upload_busy"
        other_replica._unclaim(pending)
        assert client.post(base + "/complete", json={"parts": [{"partNumber": 1, "etag": etag}]}
                           ).status_code == 200


def test_multipart_parts_count_against_the_cap_together(tmp_path: Path, bucket: str,
                                                        s3_server: S3Server) -> None:
    for client in api(tmp_path / "a", bucket):
        multi = client.post("/storage/upload/initiate-multipart", json={"file_name": "m.mp4"}).json()
        base = multi["upload_url"].split("testserver")[1]
        assert client.put(base + "/1", content=b"a" * 1_000_000).status_code == 200
        assert client.put(base + "/2", content=b"b" * 1_000_000).status_code == 413
        assert [k.rsplit("/", 1)[1] for k in keys(s3_server, bucket, "/part-")] == ["part-00001"]
        assert client.put(base + "/1", content=b"c" * 1_400_000).status_code == 200, "a part may be replaced"


def test_a_large_data_uri_is_a_file_in_the_bucket_until_cancelled(tmp_path: Path, bucket: str,
                                                                 s3_server: S3Server) -> None:
    store = open_job_store(MEMORY)
    video = bytes(range(256)) * 100
    for client in api(tmp_path / "a", bucket, store):
        request = {"prompt": "p", "video_url": "data:video/mp4;base64," + base64.b64encode(video).decode()}
        submitted = client.post("/queue/fal-ai/wan-vace-14b/depth", json=request)
        assert submitted.status_code == 200, submitted.text
        job = store.get(submitted.json()["request_id"])
        assert job is not None
        url = job.input["video_url"]
        assert url.startswith("http://testserver/files/") and url.endswith("/video_url.mp4")
        key = "vace/" + url.split("/files/")[1]
        assert s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read() == video
        assert client.get(url).content == video
        assert client.put(submitted.json()["cancel_url"]).json() == {"status": "OK"}
        assert key not in keys(s3_server, bucket)
        assert client.get(url).status_code == 404
