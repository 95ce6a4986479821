"""Retention: finished jobs, their output files and their logs are deleted `retention_s` after completion.

`sweep()` is one pass and a pure function of (store, disk, now), so tests drive it with a fake clock.
`RetentionSweeper` is the thread the API process runs it on every few minutes. What a pass removes:
- jobs COMPLETED before now - retention_s: their rows and logs, then their /files/{token}/{name} outputs
  unless a remaining job still names them (a file left behind by a crash in between is caught below);
- token folders under files/ older than retention_s that no remaining job mentions (uploads, and outputs
  of jobs deleted some other way);
- folders under work/ untouched for WORK_MAX_AGE_S whose job is not queued or running (a worker killed
  mid-job never removes its scratch folder);
- upload slots under uploads/ (server/files/uploads.py: an initiate call's upload URL, and multipart
  parts) with no write for `upload_max_age_s` (capped at retention_s: a finished upload lives no longer
  either): the slot folder goes, so its upload URL stops working; a never-completed upload's reserved, still
  empty files/{token}/ folder goes with it. A completed file is never touched here (it expires as above), and
  a slot written to within the age, in its own folder or in its file's folder, counts as in progress.
Queued and running jobs, and anything they reference, are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.api.background.periodic import PeriodicThread
from server.files.disk import child_folders, newest_mtime, tree_size
from server.files.store import FileStore
from server.files.uploads import Slot, Uploads
from server.jobs.store import JobStore, RetentionQueries
from server.settings import DEFAULT_RETENTION_S
from server.settings import DEFAULT_UPLOAD_MAX_AGE_S as UPLOAD_MAX_AGE_S

log = logging.getLogger("vace.retention")

WORK_MAX_AGE_S = 24 * 3600.0
SWEEP_INTERVAL_S = 300.0
BATCH = 500  # jobs per transaction: a large backlog is cleared in slices, never one long write lock
_FILE_LINK = re.compile(r"/files/([A-Za-z0-9_-]+)/([A-Za-z0-9._-]+)$")


@dataclass
class SweepReport:
    jobs_deleted: int = 0
    files_deleted: int = 0
    work_dirs_deleted: int = 0
    upload_slots_deleted: int = 0
    bytes_freed: int = 0
    errors: list[str] = field(default_factory=list)


def sweep(store: JobStore, files: FileStore, now: float, *, retention_s: float = DEFAULT_RETENTION_S,
          work_root: Path | None = None, work_max_age_s: float = WORK_MAX_AGE_S,
          uploads: Uploads | None = None, upload_max_age_s: float = UPLOAD_MAX_AGE_S) -> SweepReport:
    report = SweepReport()
    retention = store.retention
    cutoff = now - retention_s
    while batch := retention.expired(cutoff, BATCH):
        deleted = retention.delete_completed([job.id for job in batch])
        report.jobs_deleted += deleted
        for token in set().union(*(output_tokens(job.output) for job in batch)):
            # A newer job may use this output as its input: then the file stays until that one expires.
            if not retention.references(f"/files/{token}/"):
                _remove(files, token, report)
        if deleted == 0:
            break  # nothing could be deleted (raced with another writer): try again next pass
    for folder in files.folders():
        if folder.newest_write < cutoff and not retention.references(f"/files/{folder.token}/"):
            _remove(files, folder.token, report)
    if work_root is not None:
        for work in child_folders(work_root):
            if newest_mtime(work) < now - work_max_age_s and not retention.is_active(work.name):
                report.bytes_freed += tree_size(work)
                shutil.rmtree(work, ignore_errors=True)
                report.work_dirs_deleted += 1
    if uploads is not None:
        upload_cutoff = now - min(upload_max_age_s, retention_s)
        for slot in uploads.slots():
            _sweep_upload_slot(slot, uploads, files, upload_cutoff, retention, report)
    return report


def _sweep_upload_slot(slot: Slot, uploads: Uploads, files: FileStore, cutoff: float,
                       retention: RetentionQueries, report: SweepReport) -> None:
    """Remove an upload slot idle since before `cutoff`, and its reserved file folder if nothing landed."""
    reserved = files.folder(slot.token) if slot.token is not None else None
    last_write = slot.newest_write
    if reserved is not None:
        last_write = max(last_write, reserved.newest_write)  # a single PUT streams into this folder
    if last_write >= cutoff:
        return
    try:
        uploads.remove_slot(slot.upload_id)
    except OSError as exc:
        report.errors.append(f"uploads/{slot.upload_id}: {exc.strerror}")
        return
    report.upload_slots_deleted += 1
    report.bytes_freed += slot.size
    if reserved is None or reserved.has_complete_file or retention.references(f"/files/{reserved.token}/"):
        return
    report.bytes_freed += reserved.size
    with contextlib.suppress(OSError):
        files.delete_folder(reserved.token)


def output_tokens(output: Any) -> set[str]:
    """The token folders of this server's files named anywhere in a job's output."""
    if isinstance(output, dict):
        return set().union(*(output_tokens(v) for v in output.values())) if output else set()
    if isinstance(output, list):
        return set().union(*(output_tokens(v) for v in output)) if output else set()
    if isinstance(output, str) and (match := _FILE_LINK.search(output.split("?", 1)[0])):
        return {match.group(1)}
    return set()


def _remove(files: FileStore, token: str, report: SweepReport) -> None:
    try:
        removed = files.delete_folder(token)
    except OSError as exc:
        report.errors.append(f"files/{token}: {exc.strerror}")
        return
    if removed is not None:
        report.files_deleted += removed.file_count
        report.bytes_freed += removed.size


class RetentionSweeper:
    """Runs sweep() every `interval_s` on a daemon thread in the API process."""

    def __init__(self, store: JobStore, files: FileStore, work_root: Path, retention_s: float,
                 interval_s: float = SWEEP_INTERVAL_S, *, uploads: Uploads | None = None,
                 upload_max_age_s: float = UPLOAD_MAX_AGE_S) -> None:
        self.store = store
        self.files = files
        self.work_root = work_root
        self.uploads = uploads
        self.upload_max_age_s = upload_max_age_s
        self.retention_s = retention_s
        self.last_report: SweepReport | None = None
        # First pass right away, so a server that was down for a week catches up at start.
        self._thread = PeriodicThread("retention", interval_s, self.run_once, log, "retention sweep failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._thread.stop(timeout)

    def run_once(self) -> SweepReport:
        report = sweep(self.store, self.files, time.time(), retention_s=self.retention_s,
                       work_root=self.work_root, uploads=self.uploads,
                       upload_max_age_s=self.upload_max_age_s)
        self.last_report = report
        if (report.jobs_deleted or report.files_deleted or report.work_dirs_deleted
                or report.upload_slots_deleted or report.errors):
            log.info("retention: %d jobs, %d files, %d work folders, %d unfinished upload slots deleted, "
                     "%d bytes freed, %d errors", report.jobs_deleted, report.files_deleted,
                     report.work_dirs_deleted, report.upload_slots_deleted, report.bytes_freed,
                     len(report.errors))
        return report
