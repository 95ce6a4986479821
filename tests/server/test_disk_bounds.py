"""Issue 11 items 9 and 15: large data: URIs are files while their job needs them, and a disk without room is
a 507 in fal's form (before writing when the free-space minimum is reached, and when a write runs out of
space anyway), never a plain-text 500 or a half-written file."""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.api.app import create_app
from server.files.data_uris import INLINE_DATA_URI_MAX, PENDING_MAX_AGE_S, DataUriFiles
from server.files.local import LocalFileStore
from server.jobs.factory import MEMORY, open_job_store
from server.jobs.store import JobStore
from server.settings import Settings
from tests.server.conftest import ProtocolApp

APP = "fal-ai/wan-vace-14b"
DEPTH = f"/queue/{APP}/depth"
INPAINTING = f"/queue/{APP}/inpainting"  # has every kind of URL field: one, and a list
MASK = "https://example.com/mask.mp4"
VIDEO = bytes(range(256)) * 1200  # 300 KiB that are not a video: nothing decodes it at submit


def data_uri(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def stored_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "files").rglob("*") if p.is_file())


def markers(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "inputs").iterdir())


def test_a_large_data_uri_is_stored_as_a_file_until_its_job_is_cancelled(protocol_app: ProtocolApp,
                                                                          tmp_path: Path) -> None:
    """Submit-and-cancel of 60 MiB data: URIs grew the database by 43 MiB/s."""
    data_dir = tmp_path / "data"
    small_image = data_uri(b"\x89PNG" + b"i" * 100, "image/png")
    assert len(small_image) < INLINE_DATA_URI_MAX
    request = {"prompt": "p", "video_url": data_uri(VIDEO), "mask_video_url": MASK,
               "ref_image_urls": [small_image, data_uri(b"r" * 10_000, "image/png")]}
    submitted = protocol_app.client.post(INPAINTING, json=request)
    assert submitted.status_code == 200, submitted.text
    job = protocol_app.store.get(submitted.json()["request_id"])
    video_url = job.input["video_url"]
    assert video_url.startswith("http://testserver/files/") and video_url.endswith("/video_url.mp4")
    refs = job.input["ref_image_urls"]
    assert refs[0] == small_image, "a small data: URI stays in the row"
    assert refs[1].startswith("http://testserver/files/") and refs[1].endswith("/ref_image_urls-1.png")
    assert len(str(job.input)) < 2000
    files = LocalFileStore(data_dir / "files")
    assert files.resolve_url_path(video_url.removeprefix("http://testserver")).read_bytes() == VIDEO
    assert files.resolve_url_path(refs[1].removeprefix("http://testserver")).read_bytes() == b"r" * 10_000
    assert len(stored_files(data_dir)) == 2 and len(markers(data_dir)) == 1

    cancelled = protocol_app.client.put(submitted.json()["cancel_url"])
    assert cancelled.json() == {"status": "OK"}
    assert stored_files(data_dir) == [] and markers(data_dir) == []
    assert protocol_app.store.get(job.id).input == {}


def test_input_files_of_jobs_that_end_in_a_worker_are_reaped(protocol_app: ProtocolApp,
                                                             tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ids = [protocol_app.client.post(DEPTH, json={"prompt": "p", "video_url": data_uri(VIDEO)}).json()
           ["request_id"] for _ in range(2)]
    store: JobStore = protocol_app.store
    running = store.claim("w1")
    assert running is not None and running.id == ids[0]
    inputs = DataUriFiles(LocalFileStore(data_dir / "files"), data_dir / "inputs", 2**31)  # as app.py does
    assert inputs.reap(store.retention.is_active) == 0, "queued and running jobs keep their files"
    assert len(stored_files(data_dir)) == 2
    assert store.complete(running.id, "w1", {"seed": 1})
    assert inputs.reap(store.retention.is_active) == 1
    assert len(stored_files(data_dir)) == 1 and len(markers(data_dir)) == 1
    # A submit that never reached the job store (a crash in between) leaves a marker without a job.
    (data_dir / "inputs" / "orphanToken").touch()
    (data_dir / "files" / "orphanToken").mkdir()
    (data_dir / "files" / "orphanToken" / "video_url.mp4").write_bytes(b"v")
    assert inputs.reap(store.retention.is_active) == 0, "a submit may still be under way"
    assert inputs.reap(store.retention.is_active, now=time.time() + PENDING_MAX_AGE_S + 1) == 1
    assert not (data_dir / "files" / "orphanToken").exists()


@pytest.mark.parametrize(("field", "value", "loc"), [
    ("video_url", "data:video/mp4;base64," + "!" * 5000, ["body", "video_url"]),
    ("ref_image_urls", ["https://example.com/a.png", "data:image/png;base64," + "A" * 4999],
     ["body", "ref_image_urls", 1]),
])
def test_an_undecodable_large_data_uri_is_a_422_naming_it(
        protocol_app: ProtocolApp, tmp_path: Path, field: str, value: object, loc: list[object]) -> None:
    request = {"prompt": "p", "video_url": "https://example.com/v.mp4", "mask_video_url": MASK, field: value}
    response = protocol_app.client.post(INPAINTING, json=request)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert response.json()["detail"][0]["type"] == "file_download_error"
    assert protocol_app.store.count_queued() == 0
    assert stored_files(tmp_path / "data") == [] and markers(tmp_path / "data") == []


def test_a_data_uri_over_the_input_cap_is_a_422_at_submit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0, max_input_bytes=100_000)
    store = open_job_store(MEMORY)
    with TestClient(create_app(settings, run_workers=False, store=store)) as client:
        response = client.post(DEPTH, json={"prompt": "p", "video_url": data_uri(VIDEO)})
    assert response.status_code == 422, response.text
    [item] = response.json()["detail"]
    assert item["loc"] == ["body", "video_url"] and item["type"] == "file_too_large"
    assert store.count_queued() == 0 and stored_files(tmp_path / "data") == []


# -- the free-space minimum -----------------------------------------------------------------------------

@pytest.fixture
def short_of_space(tmp_path: Path) -> Iterator[tuple[TestClient, JobStore]]:
    """An app whose minimum free space is more than the disk has: every write is refused up front."""
    minimum = shutil.disk_usage(tmp_path).free + 2**40
    store = open_job_store(MEMORY)
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0, min_free_disk_bytes=minimum)
    with TestClient(create_app(settings, run_workers=False, store=store)) as client:
        yield client, store


def _assert_507(response: object) -> None:
    status, body, headers = response.status_code, response.json(), response.headers  # type: ignore[attr-defined]
    assert status == 507, body
    assert body["error_type"] == "insufficient_storage" and "disk space" in body["detail"]
    assert headers["x-fal-error-type"] == "insufficient_storage" and int(headers["retry-after"]) > 0


def test_below_the_free_space_minimum_uploads_and_submits_are_a_507(
        short_of_space: tuple[TestClient, JobStore], tmp_path: Path) -> None:
    client, store = short_of_space
    _assert_507(client.post("/storage/upload/initiate", json={"file_name": "v.mp4"}))
    _assert_507(client.post("/storage/upload/initiate-multipart", json={"file_name": "v.mp4"}))
    _assert_507(client.post("/files/upload", content=b"v" * 1000, headers={"X-Fal-File-Name": "v.mp4"}))
    _assert_507(client.post("/files/upload/multipart", headers={"X-Fal-File-Name": "v.mp4"}))
    _assert_507(client.post(DEPTH, json={"prompt": "p", "video_url": "https://example.com/v.mp4"}))
    _assert_507(client.post(DEPTH, json={"prompt": "p", "video_url": data_uri(VIDEO)}))
    assert store.count_queued() == 0
    data_dir = tmp_path / "data"
    assert stored_files(data_dir) == [] and list((data_dir / "files").iterdir()) == []
    assert list((data_dir / "uploads").iterdir()) == [] and markers(data_dir) == []


def test_an_upload_larger_than_the_free_space_is_refused_before_writing(tmp_path: Path) -> None:
    """With a length declared, the check counts the bytes to come; the minimum is kept free."""
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0, max_upload_bytes=2**60)
    free = shutil.disk_usage(tmp_path).free
    with TestClient(create_app(settings, run_workers=False, store=open_job_store(MEMORY))) as client:
        upload = client.post("/storage/upload/initiate", json={"file_name": "v.mp4"}).json()
        # The declared length is what is checked: the body is never read.
        response = client.put(upload["upload_url"], content=b"x" * 10,
                              headers={"content-length": str(free - settings.min_free_disk_bytes + 1)})
        _assert_507(response)
        assert stored_files(tmp_path / "data") == []
        assert client.put(upload["upload_url"], content=b"fits").status_code == 200


def _can_mount_a_private_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = os.system("unshare -rm sh -c 'mount -t tmpfs -o size=1m tmpfs /mnt' >/dev/null 2>&1")
    return probe == 0


# -- a disk that really fills up ------------------------------------------------------------------------

TMPFS_SIZE = 16 * 2**20


def _chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    """A body without Content-Length (chunked): nothing can be checked up front."""
    while total > 0:
        yield b"z" * min(size, total)
        total -= size


@pytest.mark.skipif(not _can_mount_a_private_tmpfs(),
                    reason="needs `unshare -rm` (user and mount namespaces) to mount a private tmpfs")
def test_a_disk_that_fills_up_answers_507_and_keeps_no_partial_file(tmp_path: Path) -> None:
    """A real server on a 16 MiB tmpfs of its own, the free-space minimum off: the writes themselves run out
    of space (was a plain-text 500)."""
    from tests.server.conftest import start_server

    data_dir = tmp_path / "data"
    mount = f'mount -t tmpfs -o size={TMPFS_SIZE},mode=0700 tmpfs "$0" && exec "$@"'
    server = start_server(data_dir, workers=0, extra_args=("--min-free-disk-bytes", "0"),
                          wrap=("unshare", "-rm", "sh", "-c", mount, str(data_dir)))
    inside = Path(f"/proc/{server.proc.pid}/root") / data_dir.relative_to("/")  # the server's view

    def free() -> int:
        return shutil.disk_usage(inside).free

    def partial_files() -> list[Path]:
        return [p for p in inside.rglob("*") if p.is_file() and p.name.startswith(".upload-")]

    try:
        assert free() < TMPFS_SIZE, "the data dir is the server's own tmpfs"
        with server.client() as client:
            upload = client.post("/storage/upload/initiate", json={"file_name": "v.mp4"}).json()
            _assert_507(client.put(upload["upload_url"], content=_chunks(free() + 2**20)))
            assert partial_files() == [] and stored_files(inside) == []
            assert client.put(upload["upload_url"], content=b"after").status_code == 200, "usable again"

            _assert_507(client.post("/files/upload", content=_chunks(free() + 2**20),
                                    headers={"X-Fal-File-Name": "cdn.mp4"}))
            parts = client.post("/storage/upload/initiate-multipart", json={"file_name": "m.mp4"}).json()
            _assert_507(client.put(parts["upload_url"] + "/1", content=_chunks(free() + 2**20)))
            too_big = data_uri(b"v" * (free() + 2**20))
            _assert_507(client.post(DEPTH, json={"prompt": "p", "video_url": too_big}))
            assert partial_files() == [] and len(stored_files(inside)) == 1
            assert list((inside / "inputs").iterdir()) == []

            # Fill what is left: the job database itself cannot grow.
            with open(inside / "filler", "wb", buffering=0) as filler:
                try:
                    while True:
                        filler.write(b"f" * 65536)
                except OSError:
                    pass
            assert free() < 65536
            # 8 refs (the most a request may hold), each under the inline limit, and a long prompt: ~240 KB.
            refs = [data_uri(b"r" * 3000, "image/png")] * 8
            job = {"prompt": "a red ball " * 20_000, "video_url": "https://example.com/v.mp4",
                   "mask_video_url": MASK, "ref_image_urls": refs}
            _assert_507(client.post(INPAINTING, json=job))
            _assert_507(client.post("/storage/upload/initiate", json={"file_name": "v.mp4"}))
            (inside / "filler").unlink()
            accepted = client.post(INPAINTING, json=job)
            assert accepted.status_code == 200, accepted.text
            status = client.get(accepted.json()["status_url"]).json()
            assert status["status"] == "IN_QUEUE" and status["queue_position"] == 0
            assert partial_files() == []
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()
