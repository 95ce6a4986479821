"""Retention (server/api/background/retention.py): what a sweep deletes and, above all, what it leaves
alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from server.api.background.retention import RetentionSweeper, output_tokens, sweep
from server.contract.errors import internal_error
from server.files.local import LocalFileStore
from server.files.uploads import Uploads
from server.jobs.factory import open_job_store
from server.jobs.model import Job, Status
from server.jobs.store import JobStore

DAY = 24 * 3600.0
TTL = 7 * DAY


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return open_job_store(tmp_path / "jobs.sqlite3")


@pytest.fixture
def files(tmp_path: Path) -> LocalFileStore:
    return LocalFileStore(tmp_path / "files")


def output_file(files: LocalFileStore, name: str = "out.mp4", data: bytes = b"x" * 100) -> str:
    stored = files.reserve(name)
    with files.writer(stored) as out:
        out.write(data)
    return files.url(stored)


def finished(store: JobStore, output: dict[str, Any] | None = None, payload: dict[str, Any] | None = None,
             error: bool = False) -> Job:
    job = store.submit("fal-ai/wan-vace-14b/depth", payload or {"prompt": "p"}, public_base="http://h")
    claimed = store.claim("w1")
    assert claimed is not None and claimed.id == job.id
    store.add_log(job.id, "step 1/2")
    if error:
        store.fail(job.id, "w1", internal_error("boom"))
    else:
        store.complete(job.id, "w1", output or {})
    done = store.get(job.id)
    assert done is not None and done.status is Status.COMPLETED and done.completed_at is not None
    return done


def age(path: Path, seconds: float) -> None:
    """Make a folder and everything in it look `seconds` old."""
    stamp = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (stamp, stamp))


def test_expired_jobs_lose_rows_logs_and_files(store: JobStore, files: LocalFileStore) -> None:
    url = output_file(files)
    job = finished(store, {"video": {"url": url, "file_size": 100}, "seed": 1})
    before = sweep(store, files, job.completed_at + TTL - 1, retention_s=TTL)
    assert before.jobs_deleted == 0 and store.get(job.id) is not None
    report = sweep(store, files, job.completed_at + TTL + 1, retention_s=TTL)
    assert (report.jobs_deleted, report.files_deleted, report.bytes_freed) == (1, 1, 100)
    assert store.get(job.id) is None
    assert store.logs(job.id) == []
    assert list(files.root.iterdir()) == []


def test_failed_and_cancelled_jobs_expire_too(store: JobStore, files: LocalFileStore) -> None:
    failed = finished(store, error=True)
    cancelled = store.submit("fal-ai/wan-vace-14b/depth", {"prompt": "p"}, public_base="http://h")
    store.request_cancel(cancelled.id)
    report = sweep(store, files, time.time() + TTL + 1, retention_s=TTL)
    assert report.jobs_deleted == 2
    assert store.get(failed.id) is None and store.get(cancelled.id) is None


def test_queued_and_running_jobs_are_never_touched(store: JobStore, files: LocalFileStore,
                                                   tmp_path: Path) -> None:
    running = store.submit("fal-ai/wan-vace-14b/depth", {"prompt": "p"}, public_base="http://h")
    assert store.claim("w1") is not None
    input_url = output_file(files, "input.mp4")  # an upload the queued job will read
    queued = store.submit("fal-ai/wan-vace-14b/depth", {"video_url": "http://h" + input_url},
                          public_base="http://h")
    age(files.root / input_url.split("/")[2], TTL * 2)
    work = tmp_path / "work"
    (work / running.id).mkdir(parents=True)
    (work / running.id / "video_url").write_bytes(b"v")
    age(work / running.id, DAY * 30)
    report = sweep(store, files, time.time() + TTL * 10, retention_s=TTL, work_root=work)
    assert report.jobs_deleted == 0 and report.files_deleted == 0 and report.work_dirs_deleted == 0
    assert store.get(running.id).status is Status.IN_PROGRESS  # type: ignore[union-attr]
    assert store.get(queued.id).status is Status.IN_QUEUE  # type: ignore[union-attr]
    assert (work / running.id / "video_url").exists()
    assert files.resolve_url_path(input_url) is not None


def test_an_output_reused_by_a_newer_job_stays(store: JobStore, files: LocalFileStore) -> None:
    url = output_file(files)
    old = finished(store, {"video": {"url": url}})
    newer = store.submit("fal-ai/wan-vace-14b/depth", {"video_url": "http://h" + url}, public_base="http://h")
    report = sweep(store, files, old.completed_at + TTL + 1, retention_s=TTL)
    assert report.jobs_deleted == 1 and store.get(newer.id) is not None
    assert files.resolve_url_path(url) is not None


def test_old_unreferenced_files_go_recent_ones_stay(store: JobStore, files: LocalFileStore) -> None:
    old_upload = output_file(files, "old.mp4")
    new_upload = output_file(files, "new.mp4")
    age(files.root / old_upload.split("/")[2], TTL + 60)
    report = sweep(store, files, time.time(), retention_s=TTL)
    assert report.files_deleted == 1
    assert files.resolve_url_path(old_upload) is None
    assert files.resolve_url_path(new_upload) is not None


def test_orphaned_work_folders_older_than_a_day_go(store: JobStore, files: LocalFileStore,
                                                   tmp_path: Path) -> None:
    work = tmp_path / "work"
    for name, seconds in (("dead-job", DAY + 60), ("fresh-job", 60)):
        (work / name).mkdir(parents=True)
        (work / name / "video_url").write_bytes(b"v" * 10)
        age(work / name, seconds)
    (work / "stray-file").write_bytes(b"")  # only folders are job scratch space
    report = sweep(store, files, time.time(), retention_s=TTL, work_root=work)
    assert report.work_dirs_deleted == 1
    assert sorted(p.name for p in work.iterdir()) == ["fresh-job", "stray-file"]


def test_webhook_delivery_rows_go_with_their_job(store: JobStore, files: LocalFileStore) -> None:
    webhooks = store.webhooks
    job = store.submit("fal-ai/wan-vace-14b/depth", {"prompt": "p"}, public_base="http://h",
                       webhook_url="http://hook.test/")
    store.claim("w1")
    store.complete(job.id, "w1", {})
    assert webhooks.enqueue_completed(3600) == 1
    sweep(store, files, time.time() + TTL + 1, retention_s=TTL)
    assert webhooks.get(job.id) is None


def test_large_backlogs_are_cleared_in_one_pass(store: JobStore, files: LocalFileStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("server.api.background.retention.BATCH", 3)
    for _ in range(7):
        finished(store)
    assert sweep(store, files, time.time() + TTL + 1, retention_s=TTL).jobs_deleted == 7


def test_output_tokens_finds_links_anywhere() -> None:
    output = {"video": {"url": "/files/abc_-1/out.mp4"}, "frames": [{"url": "http://h:1/files/t2/f.png?x=1"}],
              "prompt": "see /files/not/a link", "seed": 3}
    assert output_tokens(output) == {"abc_-1", "t2"}
    assert output_tokens(None) == set()


def test_files_outside_the_store_are_never_deleted(store: JobStore, files: LocalFileStore,
                                                   tmp_path: Path) -> None:
    outside = tmp_path / "precious.mp4"
    outside.write_bytes(b"keep")
    finished(store, {"video": {"url": "/files/../precious.mp4"}})
    finished(store, {"video": {"url": "/files/..%2F/precious.mp4"}})
    sweep(store, files, time.time() + TTL + 1, retention_s=TTL)
    assert outside.read_bytes() == b"keep"


def test_sweeper_thread_runs_and_stops(store: JobStore, files: LocalFileStore, tmp_path: Path) -> None:
    job = finished(store)
    sweeper = RetentionSweeper(store, files, tmp_path / "work", retention_s=0.0, interval_s=0.05)
    sweeper.start()
    deadline = time.monotonic() + 10
    while store.get(job.id) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    sweeper.stop()
    assert store.get(job.id) is None
    assert not sweeper._thread.running


# -- unfinished uploads -------------------------------------------------------------------------------------


def test_unfinished_upload_slots_are_swept_through_a_live_server(tmp_path: Path) -> None:
    """Slots made by the real upload routes, aged with os.utime, swept by the sweeper the app runs."""
    from tests.server.conftest import start_server

    data_dir = tmp_path / "data"
    server = start_server(data_dir, workers=0)
    uploads, files_root = data_dir / "uploads", data_dir / "files"

    def slot_of(upload_url: str) -> Path:
        return uploads / upload_url.rstrip("/").split("/")[-1]

    def token_folder(file_url: str) -> Path:
        return files_root / file_url.split("/files/")[1].split("/")[0]

    try:
        with server.client() as client:
            def initiate(kind: str) -> dict[str, str]:
                body = client.post(f"/storage/upload/{kind}", json={"file_name": f"{kind}.mp4",
                                                                    "content_type": "video/mp4"}).json()
                return {"upload_url": body["upload_url"], "file_url": body["file_url"]}

            abandoned = initiate("initiate-multipart")  # one part, never completed
            assert client.put(abandoned["upload_url"] + "/1", content=b"a" * 1000).status_code == 200
            never_put = initiate("initiate")  # an upload URL nobody used
            done = initiate("initiate")  # completed with a single PUT: its slot goes at once (single use)
            assert client.put(done["upload_url"], content=b"finished bytes").status_code == 200
            assert not slot_of(done["upload_url"]).exists()
            cdn = client.post("/files/upload/multipart", headers={"X-Fal-File-Name": "py.mp4"}).json()
            cdn_part = f"{cdn['access_url']}/multipart/{cdn['uploadId']}/1"
            assert client.put(cdn_part, content=b"c" * 10).status_code == 200
            fresh = initiate("initiate-multipart")  # in progress: a part was written just now
            fresh_put = client.put(fresh["upload_url"] + "/1", content=b"f" * 10)
            streaming = initiate("initiate")  # old slot, but a PUT is streaming into its file's folder now

            for upload in (abandoned, never_put, streaming):
                age(slot_of(upload["upload_url"]), DAY + 60)
                age(token_folder(upload["file_url"]), DAY + 60)
            age(token_folder(done["file_url"]), DAY + 60)
            age(uploads / cdn["uploadId"], DAY + 60)
            age(token_folder(cdn["access_url"]), DAY + 60)
            (token_folder(streaming["file_url"]) / ".upload-inflight").write_bytes(b"half")

            # As server/api/app.py builds it.
            files = LocalFileStore(files_root)
            sweeper = RetentionSweeper(open_job_store(data_dir / "jobs.sqlite3"), files, data_dir / "work",
                                       retention_s=TTL, uploads=Uploads(files, uploads, max_bytes=1))
            report = sweeper.run_once()

            assert report.upload_slots_deleted == 3 and report.files_deleted == 0 and not report.errors
            for gone in (abandoned, never_put, done):
                assert not slot_of(gone["upload_url"]).exists()
            assert not (uploads / cdn["uploadId"]).exists()
            # Unfinished: the upload URLs stop working, and their reserved file folders are gone.
            assert client.put(abandoned["upload_url"] + "/2", content=b"x").status_code == 404
            assert client.post(abandoned["upload_url"] + "/complete",
                               json={"parts": [{"partNumber": 1, "etag": "x"}]}).status_code == 404
            assert client.put(never_put["upload_url"], content=b"x").status_code == 404
            assert client.put(cdn_part, content=b"x").status_code == 404
            for gone_url in (abandoned["file_url"], never_put["file_url"], cdn["access_url"]):
                assert not token_folder(gone_url).exists()
            # Completed: the file itself is never touched by the upload sweep.
            downloaded = client.get(done["file_url"])
            assert downloaded.status_code == 200 and downloaded.content == b"finished bytes"
            # In progress: both stay usable.
            assert slot_of(streaming["upload_url"]).exists()
            assert (token_folder(streaming["file_url"]) / ".upload-inflight").exists()
            parts = [{"partNumber": 1, "etag": fresh_put.json()["etag"]}]
            assert client.post(fresh["upload_url"] + "/complete", json={"parts": parts}).status_code == 200
            assert client.get(fresh["file_url"]).content == b"f" * 10
    finally:
        server.stop()


def test_upload_max_age_is_configurable_and_capped_by_retention(store: JobStore, files: LocalFileStore,
                                                                tmp_path: Path) -> None:
    uploads = Uploads(files, tmp_path / "uploads", max_bytes=1000)
    slots = {name: uploads.create(f"{name}.mp4", "video/mp4") for name in ("two_hours", "half_hour")}
    age(tmp_path / "uploads" / slots["two_hours"].upload_id, 2 * 3600)
    age(files.root / slots["two_hours"].name.split("/")[0], 2 * 3600)
    age(tmp_path / "uploads" / slots["half_hour"].upload_id, 1800)
    age(files.root / slots["half_hour"].name.split("/")[0], 1800)

    def remaining() -> list[str]:
        return sorted(n for n, s in slots.items() if (tmp_path / "uploads" / s.upload_id).exists())

    now = time.time()
    default = sweep(store, files, now, retention_s=TTL, uploads=uploads)
    assert default.upload_slots_deleted == 0 and remaining() == ["half_hour", "two_hours"]  # default 24 h
    one_hour = sweep(store, files, now, retention_s=TTL, uploads=uploads,
                     upload_max_age_s=3600)
    assert one_hour.upload_slots_deleted == 1 and remaining() == ["half_hour"]
    assert not (files.root / slots["two_hours"].name.split("/")[0]).exists()
    short_retention = sweep(store, files, now, retention_s=600, uploads=uploads)
    assert short_retention.upload_slots_deleted == 1 and remaining() == []


def test_upload_sweep_never_leaves_the_files_root(store: JobStore, files: LocalFileStore,
                                                  tmp_path: Path) -> None:
    """A slot whose metadata names a folder outside files/ loses only its own folder."""
    outside = tmp_path / "precious"
    outside.mkdir()
    slot = tmp_path / "uploads" / ("s" * 32)
    slot.mkdir(parents=True)
    (slot / "meta.json").write_text(json.dumps({"dest": str(outside / "x.mp4"), "content_type": "video/mp4"}))
    broken = tmp_path / "uploads" / ("b" * 32)
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    for folder in (slot, broken, outside):
        age(folder, DAY * 2)
    uploads = Uploads(files, tmp_path / "uploads", max_bytes=1)
    report = sweep(store, files, time.time(), retention_s=TTL, uploads=uploads)
    assert report.upload_slots_deleted == 2
    assert outside.is_dir() and not slot.exists() and not broken.exists()
