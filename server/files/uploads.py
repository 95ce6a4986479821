"""Upload slots and multipart parts: what an upload holds between its initiate call and its last byte.

A slot is a folder `{uploads root}/{upload id}/` on the API host's disk (so it survives an API restart)
with `meta.json` (the reserved file name in the FileStore, the content type) and the parts written so
far. The finished file goes through the FileStore (server/files/store.py), so the upload routes
(server/api/routes/storage.py) never touch a path. Slots never completed are swept by
server/api/background/retention.py after Settings.upload_max_age_s without a write.
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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.files.disk import child_folders, newest_mtime, tree_size
from server.files.store import FileStore, is_token

_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_CHUNK = 1 << 20
_PART_TEMP_PREFIX = ".upload-"  # a part being written; renamed into place only when complete


class UploadTooLarge(Exception):
    pass


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

    def __init__(self, files: FileStore, root: Path, max_bytes: int) -> None:
        self.files = files
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)

    def create(self, file_name: str, content_type: str) -> PendingUpload:
        upload_id = secrets.token_urlsafe(24)
        name = self.files.reserve(file_name)
        folder = self.root / upload_id
        folder.mkdir()
        meta = {"name": name, "content_type": content_type, "created_at": time.time()}
        (folder / "meta.json").write_text(json.dumps(meta))
        return PendingUpload(upload_id, name, content_type)

    def get(self, upload_id: str) -> PendingUpload | None:
        if not _UPLOAD_ID.fullmatch(upload_id):
            return None
        meta_path = self.root / upload_id / "meta.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        return PendingUpload(upload_id, _reserved_name(meta), meta["content_type"])

    def discard(self, upload_id: str) -> None:
        shutil.rmtree(self.root / upload_id, ignore_errors=True)

    async def write_file(self, chunks: AsyncIterator[bytes], declared: int, upload: PendingUpload) -> int:
        """Stream a whole file into the FileStore (atomically), refusing more than max_bytes."""
        if declared > self.max_bytes:
            raise UploadTooLarge()
        writer = self.files.writer(upload.name)
        out = writer.__enter__()
        try:
            size = await self._copy(chunks, out)
        except BaseException as exc:
            writer.__exit__(type(exc), exc, exc.__traceback__)  # discards the partial file
            raise
        # Storing the file may be an upload to a bucket (server/files/s3.py): off the event loop.
        await asyncio.to_thread(writer.__exit__, None, None, None)
        return size

    async def write_part(self, chunks: AsyncIterator[bytes], declared: int, upload: PendingUpload,
                         part_number: int) -> str:
        """Stream one multipart part into the slot (temp file + rename); returns its etag."""
        if declared > self.max_bytes:
            raise UploadTooLarge()
        path = self._part_path(upload, part_number)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_PART_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                await self._copy(chunks, out)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return file_etag(path)

    async def _copy(self, chunks: AsyncIterator[bytes], out: Any) -> int:
        size = 0
        # Local-disk writes of 1 MB chunks are fast enough to do on the event loop.
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_bytes:
                raise UploadTooLarge()
            out.write(chunk)
        return size

    def _part_path(self, upload: PendingUpload, part_number: int) -> Path:
        return self.root / upload.upload_id / f"part-{part_number:05d}"

    def assemble(self, upload: PendingUpload, parts: list[dict[str, Any]]) -> str | None:
        """Join the listed parts by partNumber into the final file; an error message if a part is wrong."""
        # Python's client uploads parts concurrently and lists them in completion order.
        parts = sorted(parts, key=lambda p: int(p.get("partNumber", 0)))
        numbers = [int(p.get("partNumber", 0)) for p in parts]
        if not numbers or numbers[0] < 1 or len(set(numbers)) != len(numbers):
            return "parts must list each partNumber (1, 2, ...) once"
        paths = [self._part_path(upload, n) for n in numbers]
        if sum(p.stat().st_size for p in paths if p.is_file()) > self.max_bytes:
            return f"upload is larger than the {self.max_bytes} byte limit"
        for part, path in zip(parts, paths, strict=True):
            if not path.is_file():
                return f"part {part['partNumber']} was never uploaded"
            if _strip_quotes(str(part.get("etag", ""))) != file_etag(path):
                return f"part {part['partNumber']} etag does not match"
        with self.files.writer(upload.name) as out:
            for path in paths:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, out, _CHUNK)
        self.discard(upload.upload_id)
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
