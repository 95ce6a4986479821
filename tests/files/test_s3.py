"""The S3-compatible FileStore: the shared contract against a real S3 server (moto's server mode,
tests/services/s3.py, reached over HTTP by boto3 through the AWS_* variables), plus what only a bucket
shared by boxes shows."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from server.files.s3 import MARKER, S3FileStore, S3Location
from server.files.store import FileStore
from tests.files.contract import FileStoreContract, put
from tests.services.s3 import S3Server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return s3_server


class TestS3FileStore(FileStoreContract):
    @pytest.fixture
    def files(self, s3_env: S3Server, tmp_path: Path) -> FileStore:
        return S3FileStore(S3Location(s3_env.new_bucket(), "outputs/"), tmp_path / "cache")


def test_locations_parse() -> None:
    assert S3Location.parse("s3://b") == S3Location("b", "")
    assert S3Location.parse("s3://b/a/c/") == S3Location("b", "a/c/")
    for bad in ("b/prefix", "http://b/p", "s3:///p"):
        with pytest.raises(ValueError):
            S3Location.parse(bad)


def test_objects_live_under_the_prefix_and_a_reserved_token_has_a_marker(s3_env: S3Server,
                                                                          tmp_path: Path) -> None:
    bucket = s3_env.new_bucket()
    files = S3FileStore(S3Location(bucket, "p/"), tmp_path / "cache")
    name = put(files, "out.mp4", b"bytes")
    reserved = files.reserve("later.mp4")
    keys = {o["Key"] for o in s3_env.client().list_objects_v2(Bucket=bucket)["Contents"]}
    token, reserved_token = name.partition("/")[0], reserved.partition("/")[0]
    assert keys == {f"p/{token}/{MARKER}", f"p/{name}", f"p/{reserved_token}/{MARKER}"}
    body = s3_env.client().get_object(Bucket=bucket, Key=f"p/{name}")["Body"].read()
    assert body == b"bytes"


def test_a_box_sees_what_another_box_wrote_and_not_what_retention_deleted(s3_env: S3Server,
                                                                         tmp_path: Path) -> None:
    bucket = s3_env.new_bucket()
    worker = S3FileStore(S3Location(bucket, ""), tmp_path / "worker-cache")
    api = S3FileStore(S3Location(bucket, ""), tmp_path / "api-cache")
    name = put(worker, "out.mp4", b"from the worker box")
    assert api.local_copy(name).read_bytes() == b"from the worker box"  # cached on the API box now
    assert worker.delete_folder(name.partition("/")[0]) is not None
    with pytest.raises(FileNotFoundError):
        api.local_copy(name)  # the cached copy is not served once the object is gone


def test_presigned_urls_fetch_the_object(s3_env: S3Server, tmp_path: Path) -> None:
    files = S3FileStore(S3Location(s3_env.new_bucket(), "x/"), tmp_path / "cache")
    name = put(files, "out.mp4", b"signed bytes")
    url = files.presigned_url(name, 60)
    assert url.startswith(s3_env.endpoint) and "Signature" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"signed bytes"
    with pytest.raises(FileNotFoundError):
        files.presigned_url("../x", 60)
