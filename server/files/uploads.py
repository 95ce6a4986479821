"""Upload slots and multipart parts: what an upload holds between its initiate call and its last byte.

A slot is a folder `{uploads root}/{upload id}/` on the API host's disk (so it survives an API restart)
with `meta.json` (the reserved file name in the FileStore, the content type) and the parts written so
far. The finished file goes through the FileStore (server/files/store.py), so the upload routes
(server/api/routes/storage.py) never touch a path. Slots never completed are swept by
server/api/background/retention.py after Settings.upload_max_age_s without a write.

An upload URL is single-use: the call that finishes it (the whole-file PUT, or the multipart complete) holds
the slot exclusively while it writes (a `finishing` file made with O_EXCL; a concurrent finisher or part is
answered UploadBusy), and removes the slot once the file is in the FileStore, so the URL answers 404 from
then on and a file a queued job reads cannot be swapped under it. A finish that fails (too large, a client
that went away, a full disk) frees the slot for a retry. Multipart parts count against `max_bytes`
together, as they are written, not only at completion.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.files.disk import child_folders, newest_mtime, tree_size
from server.files.free_space import FreeSpace
from server.files.store import FileStore, is_token

_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_CHUNK = 1 << 20
_PART_TEMP_PREFIX = ".upload-"  # a part being written; renamed into place only when complete
_FINISHING = "finishing"  # held (O_EXCL) by the call writing the final file
_META = "meta.json"
_SPACE_CHECK_BYTES = 8 * _CHUNK  # free space is checked again after this much of a stream without a length


class UploadTooLarge(Exception):
    pass


class UploadBusy(Exception):
    """Another call is finishing this upload right now."""


@dataclass(frozen=True)
class PendingUpload:
    """An upload slot handed out by an initiate call: where the bytes will end up."""

    upload_id: str
    name: str  # the FileStore name reserved at initiate, written atomically later
    content_type: str


@dataclass(frozen=True)
class Slot:
    """A slot as the retention sweeper sees it."""

    upload_id: str
    token: str | None  # the reserved file's token folder; None when the metadata is missing or broken
    newest_write: float
    size: int


class Uploads:
    """Upload slots and multipart parts on disk; finished files in the FileStore."""

    def __init__(self, files: FileStore, root: Path, max_bytes: int, space: FreeSpace | None = None) -> None:
        self.files = files
        self.root = root
        self.max_bytes = max_bytes
        self.space = space or FreeSpace(root, 0)
        root.mkdir(parents=True, exist_ok=True)

    def create(self, file_name: str, content_type: str) -> PendingUpload:
        """A new slot; OSError (ENOSPC included) leaves nothing behind."""
        self.space.check()
        upload_id = secrets.token_urlsafe(24)
        name = self.files.reserve(file_name)
        folder = self.root / upload_id
        try:
            folder.mkdir()
            meta = {"name": name, "content_type": content_type, "created_at": time.time()}
            (folder / _META).write_text(json.dumps(meta))
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            self.files.delete_folder(name.partition("/")[0])
            raise
        return PendingUpload(upload_id, name, content_type)

    def get(self, upload_id: str) -> PendingUpload | None:
        if not _UPLOAD_ID.fullmatch(upload_id):
            return None
        meta_path = self.root / upload_id / _META
        try:
            meta = json.loads(meta_path.read_text())
            return PendingUpload(upload_id, _reserved_name(meta), str(meta["content_type"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no slot, or one whose metadata a crash or full disk left broken

    def discard(self, upload_id: str) -> None:
        shutil.rmtree(self.root / upload_id, ignore_errors=True)

    @contextmanager
    def finishing(self, upload: PendingUpload) -> Iterator[None]:
        """Hold the slot while its final file is written; the slot is removed when the block succeeds.

        UploadBusy if another call holds it; a slot removed meanwhile (finished by another call) is
        FileNotFoundError, which the routes answer as 404 like any unknown upload."""
        self._claim(upload)
        try:
            yield
        except BaseException:
            self._unclaim(upload)
            raise
        self.discard(upload.upload_id)

    def _claim(self, upload: PendingUpload) -> None:
        """Take the slot's finishing lock: UploadBusy if it is held, FileNotFoundError if the slot is gone."""
        try:
            lock = self.root / upload.upload_id / _FINISHING
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError as exc:
            raise UploadBusy() from exc
        os.close(fd)

    def _unclaim(self, upload: PendingUpload) -> None:
        (self.root / upload.upload_id / _FINISHING).unlink(missing_ok=True)

    def _is_finishing(self, upload: PendingUpload) -> bool:
        return (self.root / upload.upload_id / _FINISHING).exists()

    async def write_file(self, chunks: AsyncIterator[bytes], declared: int, upload: PendingUpload) -> int:
        """Stream a whole file into the FileStore (atomically), refusing more than max_bytes; the upload's
        slot is gone afterwards (single use)."""
        if declared > self.max_bytes:
            raise UploadTooLarge()
        self.space.check(declared)
        # finishing()'s steps, each off the event loop: in the bucket they are requests (s3_uploads.py).
        await asyncio.to_thread(self._claim, upload)
        try:
            writer = self.files.writer(upload.name)
            out = writer.__enter__()
            try:
                size = await self._copy(chunks, out, 0)
            except BaseException as exc:
                writer.__exit__(type(exc), exc, exc.__traceback__)  # discards the partial file
                raise
            # Storing the file may be an upload to a bucket (server/files/s3.py): off the event loop.
            await asyncio.to_thread(writer.__exit__, None, None, None)
        except BaseException:
            self._unclaim(upload)
            raise
        await asyncio.to_thread(self.discard, upload.upload_id)
        return size

    async def write_part(self, chunks: AsyncIterator[bytes], declared: int, upload: PendingUpload,
                         part_number: int) -> str:
        """Stream one multipart part into the slot (temp file + rename); returns its etag. The slot's parts
        together may hold at most max_bytes."""
        path = self._part_path(upload, part_number)
        if self._is_finishing(upload):
            raise UploadBusy()
        if declared + self._held_by_other_parts(path) > self.max_bytes:
            raise UploadTooLarge()
        self.space.check(declared)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_PART_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                await self._copy(chunks, out, self._held_by_other_parts(path, tmp))
            # Parts written concurrently each saw the others small: the total is checked once more.
            if os.path.getsize(tmp) + self._held_by_other_parts(path, tmp) > self.max_bytes:
                raise UploadTooLarge()
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return file_etag(path)

    def _held_by_other_parts(self, part: Path, own_temp: str | None = None) -> int:
        """Bytes in the slot's other parts, finished or being written."""
        total = 0
        for entry in part.parent.iterdir():
            if entry == part or str(entry) == own_temp or entry.name in (_META, _FINISHING):
                continue
            try:
                total += entry.stat().st_size
            except FileNotFoundError:
                continue  # a concurrent part renamed into place or discarded meanwhile
        return total

    async def _copy(self, chunks: AsyncIterator[bytes], out: Any, held: int) -> int:
        """Copy a request body; UploadTooLarge past max_bytes (with `held` bytes already in the upload)."""
        size = 0
        unchecked = 0
        # Local-disk writes of 1 MB chunks are fast enough to do on the event loop.
        async for chunk in chunks:
            size += len(chunk)
            if held + size > self.max_bytes:
                raise UploadTooLarge()
            unchecked += len(chunk)
            if unchecked >= _SPACE_CHECK_BYTES:  # a body without a length was not checked up front
                self.space.check(unchecked)
                unchecked = 0
            out.write(chunk)
        return size

    def _part_path(self, upload: PendingUpload, part_number: int) -> Path:
        return self.root / upload.upload_id / f"part-{part_number:05d}"

    def assemble(self, upload: PendingUpload, parts: list[tuple[int, str]]) -> str | None:
        """Join the listed (partNumber, etag) parts into the final file; an error message if a part is
        wrong. The slot is gone afterwards (single use)."""
        # Python's client uploads parts concurrently and lists them in completion order.
        parts = sorted(parts)
        numbers = [number for number, _ in parts]
        if not numbers or numbers[0] < 1 or len(set(numbers)) != len(numbers):
            return "parts must list each partNumber (1, 2, ...) once"
        paths = [self._part_path(upload, n) for n in numbers]
        total = sum(p.stat().st_size for p in paths if p.is_file())
        if total > self.max_bytes:
            return f"upload is larger than the {self.max_bytes} byte limit"
        for (number, etag), path in zip(parts, paths, strict=True):
            if not path.is_file():
                return f"part {number} was never uploaded"
            if _strip_quotes(etag) != file_etag(path):
                return f"part {number} etag does not match"
        self.space.check(total)
        with self.finishing(upload), self.files.writer(upload.name) as out:
            for path in paths:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, out, _CHUNK)
        return None

    # -- retention ----------------------------------------------------------------------------------

    def slots(self) -> list[Slot]:
        found = []
        for folder in child_folders(self.root):
            if is_token(folder.name):
                found.append(Slot(folder.name, _slot_token(folder), newest_mtime(folder), tree_size(folder)))
        return found

    def remove_slot(self, upload_id: str) -> None:
        """OSError if the slot could not be removed."""
        shutil.rmtree(self.root / upload_id)


def _reserved_name(meta: dict[str, Any]) -> str:
    if "name" in meta:
        return str(meta["name"])
    # Slots made before names were stored hold the file's path: files/{token}/{file_name}.
    dest = Path(meta["dest"])
    return f"{dest.parent.name}/{dest.name}"


def _slot_token(slot: Path) -> str | None:
    try:
        token = _reserved_name(json.loads((slot / "meta.json").read_text())).partition("/")[0]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no or broken metadata (a crash during initiate): the slot alone is removed
    return token if is_token(token) else None


def file_etag(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _strip_quotes(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')
