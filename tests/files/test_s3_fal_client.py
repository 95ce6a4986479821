"""The real `fal-client` uploading to API replicas whose files live in an S3 bucket (--storage) and whose
jobs live in PostgreSQL: the single-request, fallback and multipart (CDN) flows all land in the bucket, and
a file uploaded through one replica downloads from the other (no shared disk)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.server.conftest import LiveServer, start_server
from tests.services.postgres import PostgresServer
from tests.services.s3 import S3Server

pytest.importorskip("fal_client", reason="pip install -e '.[test]' installs fal-client")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,
             s3_server: S3Server) -> Iterator[tuple[LiveServer, LiveServer, S3Server, str]]:
    saved = dict(os.environ)
    os.environ.update(s3_server.environment())
    bucket = s3_server.new_bucket()
    # No weights on an API replica (`--workers 0`): the model folder need not exist.
    shared = ("--database-url", postgres_server.new_database(), "--storage", f"s3://{bucket}/up",
              "--model", str(tmp_path_factory.getbasetemp() / "no-weights-here"))
    root = tmp_path_factory.mktemp("s3-replicas")
    servers = [start_server(root / name, workers=0, extra_args=shared) for name in ("a", "b")]
    try:
        yield servers[0], servers[1], s3_server, bucket
    finally:
        for server in servers:
            server.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def fal(replicas: tuple[LiveServer, LiveServer, S3Server, str]) -> Iterator[ModuleType]:
    """docs/clients.md, "Python over plain HTTP", pointed at replica A."""
    import fal_client
    import fal_client.client as c

    os.environ.setdefault("FAL_KEY", "local-key-id:local-key-secret")
    base = replicas[0].base
    saved = (c.RUN_URL_FORMAT, c.QUEUE_URL_FORMAT, c.REST_URL, c.CDN_URL)
    c.RUN_URL_FORMAT, c.QUEUE_URL_FORMAT, c.REST_URL, c.CDN_URL = f"{base}/", f"{base}/queue/", base, base
    yield fal_client
    c.RUN_URL_FORMAT, c.QUEUE_URL_FORMAT, c.REST_URL, c.CDN_URL = saved


def test_fal_client_uploads_land_in_the_bucket_and_serve_from_every_replica(
        fal: ModuleType, replicas: tuple[LiveServer, LiveServer, S3Server, str], tmp_path: Path) -> None:
    replica_a, replica_b, s3, bucket = replicas
    from fal_client.client import MultipartUpload

    small = tmp_path / "clip.mp4"
    small.write_bytes(b"not really a video " * 500)
    urls = {"upload_file": (fal.upload_file(small), small.read_bytes()),
            "fallback": (fal.upload(b"fallback " * 1000, "application/octet-stream", "blob.bin",
                                    repository="fal"), b"fallback " * 1000)}
    big = os.urandom(300_000)  # the >100 MB path, with 64 KB parts
    # A client of its own: fal's module-level client caches its CDN token, whose upload URL names whichever
    # server an earlier test in the session asked.
    client = fal.SyncClient()
    urls["multipart"] = (MultipartUpload.save(
        client=client._get_cdn_client(), token_manager=client._token_manager,
        file_name="parts.bin", data=big, content_type="application/octet-stream", chunk_size=64 * 1024), big)

    keys = {o["Key"]: o["Size"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]}
    for flow, (url, data) in urls.items():
        assert url.startswith(f"{replica_a.base}/files/"), (flow, url)
        name = url.split("/files/")[1]
        assert keys[f"up/{name}"] == len(data), flow
        other = httpx.get(url.replace(replica_a.base, replica_b.base), timeout=30)
        assert other.status_code == 200, flow
        assert hashlib.sha256(other.content).digest() == hashlib.sha256(data).digest(), flow
