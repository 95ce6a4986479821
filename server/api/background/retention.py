"""Retention: finished jobs, their output files and their logs are deleted `retention_s` after completion.

`sweep()` is one pass and a pure function of (store, disk, now), so tests drive it with a fake clock.
`RetentionSweeper` is the thread the API process runs it on every few minutes. What a pass removes:
- jobs COMPLETED before now - retention_s: their rows and logs, then their /files/{token}/{name} outputs
  unless a remaining job still names them (a file left behind by a crash in between is caught below);
- token folders under files/ older than retention_s that no remaining job mentions (uploads, and outputs
  of jobs deleted some other way);
- folders under work/ untouched for WORK_MAX_AGE_S whose job is not queued or running (a worker killed
  mid-job never removes its scratch folder);
- upload slots under uploads/ (server/api/routes/storage.py: an initiate call's upload URL, and multipart
  parts) with no write for `upload_max_age_s` (capped at retention_s: a finished upload lives no longer
  either): the slot folder goes, so its upload URL stops working; a never-completed upload's reserved, still
  empty files/{token}/ folder goes with it. A completed file is never touched here (it expires as above), and
  a slot written to within the age, in its own folder or in its file's folder, counts as in progress.
Queued and running jobs, and anything they reference, are never touched.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.api.routes.storage import UPLOAD_TEMP_PREFIX
from server.jobs.store import JobStore, RetentionQueries
from server.settings import DEFAULT_RETENTION_S
from server.settings import DEFAULT_UPLOAD_MAX_AGE_S as UPLOAD_MAX_AGE_S

log = logging.getLogger("vace.retention")

WORK_MAX_AGE_S = 24 * 3600.0
SWEEP_INTERVAL_S = 300.0
BATCH = 500  # jobs per transaction: a large backlog is cleared in slices, never one long write lock
_FILE_LINK = re.compile(r"/files/([A-Za-z0-9_-]+)/([A-Za-z0-9._-]+)$")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class SweepReport:
    jobs_deleted: int = 0
    files_deleted: int = 0
    work_dirs_deleted: int = 0
    upload_slots_deleted: int = 0
    bytes_freed: int = 0
    errors: list[str] = field(default_factory=list)


def sweep(store: JobStore, files_root: Path, now: float, *, retention_s: float = DEFAULT_RETENTION_S,
          work_root: Path | None = None, work_max_age_s: float = WORK_MAX_AGE_S,
          uploads_root: Path | None = None, upload_max_age_s: float = UPLOAD_MAX_AGE_S) -> SweepReport:
    report = SweepReport()
    retention = store.retention
    cutoff = now - retention_s
    while batch := retention.expired(cutoff, BATCH):
        deleted = retention.delete_completed([job.id for job in batch])
        report.jobs_deleted += deleted
        for token in set().union(*(output_tokens(job.output) for job in batch)):
            # A newer job may use this output as its input: then the file stays until that one expires.
            if not retention.references(f"/files/{token}/"):
                _remove(files_root, token, report)
        if deleted == 0:
            break  # nothing could be deleted (raced with another writer): try again next pass
    for folder in _children(files_root):
        if _TOKEN.fullmatch(folder.name) and _newest_mtime(folder) < cutoff and not retention.references(
                f"/files/{folder.name}/"):
            _remove(files_root, folder.name, report)
    if work_root is not None:
        for folder in _children(work_root):
            if _newest_mtime(folder) < now - work_max_age_s and not retention.is_active(folder.name):
                report.bytes_freed += _size(folder)
                shutil.rmtree(folder, ignore_errors=True)
                report.work_dirs_deleted += 1
    if uploads_root is not None:
        upload_cutoff = now - min(upload_max_age_s, retention_s)
        for slot in _children(uploads_root):
            if _TOKEN.fullmatch(slot.name):
                _sweep_upload_slot(slot, files_root, upload_cutoff, retention, report)
    return report


def _sweep_upload_slot(slot: Path, files_root: Path, cutoff: float, retention: RetentionQueries,
                       report: SweepReport) -> None:
    """Remove an upload slot idle since before `cutoff`, and its reserved file folder if nothing landed."""
    reserved = _reserved_folder(slot, files_root)
    last_write = _newest_mtime(slot)
    if reserved is not None and reserved.is_dir():
        last_write = max(last_write, _newest_mtime(reserved))  # a single PUT streams into this folder
    if last_write >= cutoff:
        return
    size = _size(slot)
    try:
        shutil.rmtree(slot)
    except OSError as exc:
        report.errors.append(f"{slot}: {exc.strerror}")
        return
    report.upload_slots_deleted += 1
    report.bytes_freed += size
    if reserved is None or not reserved.is_dir() or retention.references(f"/files/{reserved.name}/"):
        return
    entries = list(reserved.iterdir())
    if all(e.name.startswith(UPLOAD_TEMP_PREFIX) and e.is_file() for e in entries):  # no completed file
        report.bytes_freed += _size(reserved)
        shutil.rmtree(reserved, ignore_errors=True)


def _reserved_folder(slot: Path, files_root: Path) -> Path | None:
    """files/{token}/ named by the slot's meta.json, only if it really is a token folder of files_root."""
    try:
        dest = Path(json.loads((slot / "meta.json").read_text())["dest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no or broken metadata (a crash during initiate): the slot alone is removed
    folder = dest.parent
    if not _TOKEN.fullmatch(folder.name) or folder.parent.resolve() != files_root.resolve():
        return None
    return files_root / folder.name


def output_tokens(output: Any) -> set[str]:
    """The token folders of this server's files named anywhere in a job's output."""
    if isinstance(output, dict):
        return set().union(*(output_tokens(v) for v in output.values())) if output else set()
    if isinstance(output, list):
        return set().union(*(output_tokens(v) for v in output)) if output else set()
    if isinstance(output, str) and (match := _FILE_LINK.search(output.split("?", 1)[0])):
        return {match.group(1)}
    return set()


def _remove(files_root: Path, token: str, report: SweepReport) -> None:
    folder = files_root / token
    if not folder.is_dir():
        return
    size, count = _size(folder), sum(1 for p in folder.iterdir() if p.is_file())
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        report.errors.append(f"{folder}: {exc.strerror}")
        return
    report.files_deleted += count
    report.bytes_freed += size


def _children(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from (p for p in root.iterdir() if p.is_dir() and not p.is_symlink())


def _newest_mtime(folder: Path) -> float:
    """A folder counts as old only when nothing in it was written recently."""
    try:
        newest = folder.stat().st_mtime
        paths = list(folder.rglob("*"))
    except FileNotFoundError:
        return math.inf  # removed meanwhile (an upload completed, a job ended): nothing to sweep
    for path in paths:
        try:
            newest = max(newest, path.lstat().st_mtime)
        except FileNotFoundError:
            continue
    return newest


def _size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


class RetentionSweeper:
    """Runs sweep() every `interval_s` on a daemon thread in the API process."""

    def __init__(self, store: JobStore, files_root: Path, work_root: Path, retention_s: float,
                 interval_s: float = SWEEP_INTERVAL_S, *, uploads_root: Path | None = None,
                 upload_max_age_s: float = UPLOAD_MAX_AGE_S) -> None:
        self.store = store
        self.files_root = files_root
        self.work_root = work_root
        # Settings.uploads_dir sits next to Settings.files_dir in the data directory.
        self.uploads_root = uploads_root if uploads_root is not None else files_root.parent / "uploads"
        self.upload_max_age_s = upload_max_age_s
        self.retention_s = retention_s
        self.interval_s = interval_s
        self.last_report: SweepReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> SweepReport:
        report = sweep(self.store, self.files_root, time.time(), retention_s=self.retention_s,
                       work_root=self.work_root, uploads_root=self.uploads_root,
                       upload_max_age_s=self.upload_max_age_s)
        self.last_report = report
        if (report.jobs_deleted or report.files_deleted or report.work_dirs_deleted
                or report.upload_slots_deleted or report.errors):
            log.info("retention: %d jobs, %d files, %d work folders, %d unfinished upload slots deleted, "
                     "%d bytes freed, %d errors", report.jobs_deleted, report.files_deleted,
                     report.work_dirs_deleted, report.upload_slots_deleted, report.bytes_freed,
                     len(report.errors))
        return report

    def _run(self) -> None:
        # First pass right away, so a server that was down for a week catches up at start.
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bad pass must not kill the thread; the next one retries
                log.exception("retention sweep failed")
            self._stop.wait(self.interval_s)
