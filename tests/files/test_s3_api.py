"""The API over an S3 bucket (--storage): fal's upload flows land in the bucket, and /files/... serves the
bytes (default) or redirects to a fresh presigned link (--file-urls presigned)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.api.app import create_app
from server.jobs.factory import MEMORY, open_job_store
from server.settings import Settings
from tests.services.s3 import S3Server

PART = b"0123456789" * 100_000  # parts are joined on the API replica, then stored as one object


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return s3_server.new_bucket()


def api(tmp_path: Path, bucket: str, file_urls: str) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0,
                        storage=f"s3://{bucket}/vace", file_urls=file_urls)
    with TestClient(create_app(settings, run_workers=False, store=open_job_store(MEMORY))) as client:
        yield client


def objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_uploads_land_in_the_bucket_and_are_served_through_the_api(tmp_path: Path, bucket: str,
                                                                    s3_server: S3Server) -> None:
    for client in api(tmp_path, bucket, "api"):
        initiate = client.post("/storage/upload/initiate", json={"content_type": "video/mp4",
                                                                  "file_name": "in.mp4"}).json()
        assert client.put(initiate["upload_url"], content=b"whole file").status_code == 200
        # The JS client's multipart flow (over 90 MB there; any size here).
        multi = client.post("/storage/upload/initiate-multipart", json={"content_type": "video/mp4",
                                                                         "file_name": "big.mp4"}).json()
        parts = []
        for number, data in ((1, PART), (2, b"tail")):
            answer = client.put(f"{multi['upload_url']}/{number}", content=data)
            assert answer.status_code == 200
            parts.append({"partNumber": number, "etag": answer.json()["etag"]})
        assert client.post(f"{multi['upload_url']}/complete", json={"parts": parts}).status_code == 200

        stored = objects(s3_server, bucket)
        whole_key = "vace/" + initiate["file_url"].split("/files/")[1]
        big_key = "vace/" + multi["file_url"].split("/files/")[1]
        assert stored[whole_key] == b"whole file" and stored[big_key] == PART + b"tail"

        served = client.get(initiate["file_url"])
        assert served.status_code == 200 and served.content == b"whole file"
        assert served.headers["content-type"] == "video/mp4"
        assert client.get(multi["file_url"]).content == PART + b"tail"
        assert client.get(initiate["file_url"].replace("in.mp4", "other.mp4")).status_code == 404


def test_presigned_mode_redirects_to_a_link_that_serves_the_bytes(tmp_path: Path, bucket: str) -> None:
    for client in api(tmp_path, bucket, "presigned"):
        initiate = client.post("/storage/upload/initiate", json={"content_type": "video/mp4",
                                                                  "file_name": "in.mp4"}).json()
        assert client.put(initiate["upload_url"], content=b"signed").status_code == 200
        redirect = client.get(initiate["file_url"], follow_redirects=False)
        assert redirect.status_code == 307
        direct = httpx.get(redirect.headers["location"], timeout=10)
        assert direct.status_code == 200 and direct.content == b"signed"
        missing = initiate["file_url"].replace("in.mp4", "other.mp4")
        assert client.get(missing, follow_redirects=False).status_code == 404


def test_a_multipart_upload_may_hop_between_replicas(tmp_path: Path, bucket: str,
                                                     s3_server: S3Server) -> None:
    """Behind a load balancer each call may reach another replica: the slot and its parts are in the
    bucket, not on one replica's disk."""
    for replica_a in api(tmp_path / "a", bucket, "api"):
        for replica_b in api(tmp_path / "b", bucket, "api"):
            multi = replica_a.post("/storage/upload/initiate-multipart", json={
                "content_type": "video/mp4", "file_name": "big.mp4"}).json()
            path = multi["upload_url"].split("testserver")[1]
            parts = []
            for number, data, replica in ((1, PART, replica_b), (2, b"tail", replica_a)):
                answer = replica.put(f"{path}/{number}", content=data)
                assert answer.status_code == 200, answer.text
                parts.append({"partNumber": number, "etag": answer.json()["etag"]})
            bad = [parts[0], {"partNumber": 2, "etag": "0" * 32}]
            assert replica_b.post(f"{path}/complete", json={"parts": bad}).status_code == 400
            missing = [*parts, {"partNumber": 3, "etag": parts[0]["etag"]}]
            assert "never uploaded" in replica_a.post(f"{path}/complete", json={"parts": missing}).text
            assert replica_b.post(f"{path}/complete", json={"parts": parts}).status_code == 200
            assert replica_a.get(multi["file_url"]).content == PART + b"tail"
            stored = objects(s3_server, bucket)
            assert not [key for key in stored if "/.uploads/" in key], "the slot is gone once complete"


def test_stale_slots_are_listed_with_their_token_and_removed(tmp_path: Path, bucket: str) -> None:
    from server.files.factory import open_settings_file_store, open_settings_uploads
    from server.files.s3_uploads import S3Uploads

    settings = Settings(data_dir=tmp_path / "data", model="tiny", storage=f"s3://{bucket}/vace")
    files = open_settings_file_store(settings)
    uploads = open_settings_uploads(settings, files)
    assert isinstance(uploads, S3Uploads)
    pending = uploads.create("clip.mp4", "video/mp4")
    [slot] = uploads.slots()
    assert slot.upload_id == pending.upload_id and slot.token == pending.name.partition("/")[0]
    assert slot.size > 0 and slot.newest_write > 0
    assert pending.upload_id not in {f.token for f in files.folders()}, "a slot is no file folder"
    uploads.remove_slot(pending.upload_id)
    assert uploads.slots() == [] and uploads.get(pending.upload_id) is None
