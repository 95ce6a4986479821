"""Upload slots and multipart parts in the bucket (server/files/s3.py), so that the calls of one upload may
reach different API replicas: a load balancer sends the JS client's initiate, its parts and its complete
call wherever it likes. Same behaviour as server/files/uploads.py (whose slots are folders on one API
host's disk); here a slot is the objects `{prefix}.uploads/{upload id}/meta.json` and `.../part-NNNNN`
(".uploads" is no token, so the bucket's token folders never include it). A part's etag (the MD5 the client
is answered with) is kept in the part object's metadata.

Single use across replicas: the call that finishes an upload (its PUT, or its multipart complete) first
creates `.../finishing` with a conditional PUT (`If-None-Match: *`), which S3 (since 2024), MinIO and R2
answer 412 when the object exists, so of two replicas finishing the same upload exactly one gets the lock
(the other is answered UploadBusy, a 409). On success the slot's meta.json is deleted first (from then on
every replica answers 404) and the lock last, and a caller that got the lock re-reads meta.json, so a call
that arrives after the slot is gone cannot write the file again. The guarantee is the bucket's: a store
that ignores If-None-Match (some older S3-compatible servers) gives no mutual exclusion, only the 404
once meta.json is gone. A replica that dies holding the lock leaves the slot busy until the retention
sweeper removes it (Settings.upload_max_age_s), as a crash does with the local `finishing` file.
Parts count against max_bytes together: a part is refused when it and the parts already in the bucket
exceed it, and checked again once stored (parts in flight on other replicas are not visible before).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server.files.free_space import FreeSpace
from server.files.s3 import S3FileStore
from server.files.store import is_token
from server.files.uploads import (
    _FINISHING,
    _PART_TEMP_PREFIX,
    _UPLOAD_ID,
    PendingUpload,
    Slot,
    UploadBusy,
    Uploads,
    UploadTooLarge,
    _reserved_name,
    _strip_quotes,
    file_etag,
)

SLOTS = ".uploads/"
_PART = "part-"
_MISSING = ("404", "NoSuchKey", "NotFound")
# What a conditional PUT answers when the object exists (412), or when a concurrent conditional write to
# the same key is in progress (409, S3's ConditionalRequestConflict).
_TAKEN = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class S3Uploads(Uploads):
    def __init__(self, files: S3FileStore, scratch: Path, max_bytes: int,
                 space: FreeSpace | None = None) -> None:
        super().__init__(files, scratch, max_bytes, space)  # scratch: parts on their way to the bucket
        self.s3 = files
        self.client = files.client
        self.bucket = files.bucket

    def _key(self, upload_id: str, leaf: str = "") -> str:
        return f"{self.s3.location.prefix}{SLOTS}{upload_id}/{leaf}"

    def create(self, file_name: str, content_type: str) -> PendingUpload:
        self.space.check()
        upload_id = secrets.token_urlsafe(24)
        name = self.files.reserve(file_name)
        meta = {"name": name, "content_type": content_type, "created_at": time.time()}
        self.client.put_object(Bucket=self.bucket, Key=self._key(upload_id, "meta.json"),
                               Body=json.dumps(meta).encode())
        return PendingUpload(upload_id, name, content_type)

    def get(self, upload_id: str) -> PendingUpload | None:
        if not _UPLOAD_ID.fullmatch(upload_id):
            return None
        meta = self._meta(upload_id)
        if meta is None:
            return None
        return PendingUpload(upload_id, _reserved_name(meta), meta["content_type"])

    def discard(self, upload_id: str) -> None:
        # meta.json first: from then on every replica answers 404, and a late finisher that still gets the
        # lock sees the slot gone (_claim); the lock goes last, with the parts.
        self.client.delete_object(Bucket=self.bucket, Key=self._key(upload_id, "meta.json"))
        self.remove_slot(upload_id)

    def _claim(self, upload: PendingUpload) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(upload.upload_id, _FINISHING), Body=b"",
                                   IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _TAKEN:
                raise UploadBusy() from exc
            raise
        if self._meta(upload.upload_id) is None:  # finished by another call (on any replica) meanwhile
            self._unclaim(upload)
            raise FileNotFoundError(upload.upload_id)

    def _unclaim(self, upload: PendingUpload) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(upload.upload_id, _FINISHING))

    def _is_finishing(self, upload: PendingUpload) -> bool:
        return self._head(self._key(upload.upload_id, _FINISHING)) is not None

    def _stored_parts(self, upload: PendingUpload) -> dict[str, int]:
        """The slot's parts in the bucket: leaf name -> size."""
        return {obj["Key"].rsplit("/", 1)[1]: int(obj["Size"])
                for obj in self.s3.objects_under(self._key(upload.upload_id))
                if obj["Key"].rsplit("/", 1)[1].startswith(_PART)}

    async def write_part(self, chunks: AsyncIterator[bytes], declared: int, upload: PendingUpload,
                         part_number: int) -> str:
        """One part into the bucket, via a scratch file; the slot's parts together may hold max_bytes."""
        leaf = f"{_PART}{part_number:05d}"
        if await asyncio.to_thread(self._is_finishing, upload):
            raise UploadBusy()
        stored = await asyncio.to_thread(self._stored_parts, upload)
        held = sum(size for name, size in stored.items() if name != leaf)
        if declared + held > self.max_bytes:
            raise UploadTooLarge()
        self.space.check(declared)
        key = self._key(upload.upload_id, leaf)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=_PART_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                size = await self._copy(chunks, out, held)
            etag = file_etag(Path(tmp))
            await asyncio.to_thread(self.client.upload_file, tmp, self.bucket, key,
                                    ExtraArgs={"Metadata": {"etag": etag}})
        finally:
            Path(tmp).unlink(missing_ok=True)
        # Parts written concurrently (here or on another replica) each saw the others missing: once this one
        # is in the bucket, the total is checked again and the part withdrawn if it is over.
        stored = await asyncio.to_thread(self._stored_parts, upload)
        if size + sum(n for name, n in stored.items() if name != leaf) > self.max_bytes:
            await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)
            raise UploadTooLarge()
        return etag

    def assemble(self, upload: PendingUpload, parts: list[tuple[int, str]]) -> str | None:
        parts = sorted(parts)
        numbers = [number for number, _ in parts]
        if not numbers or numbers[0] < 1 or len(set(numbers)) != len(numbers):
            return "parts must list each partNumber (1, 2, ...) once"
        stored = self._stored_parts(upload)
        keys = [f"{_PART}{n:05d}" for n in numbers]
        total = sum(stored[k] for k in keys if k in stored)
        if total > self.max_bytes:
            return f"upload is larger than the {self.max_bytes} byte limit"
        for (number, etag), key in zip(parts, keys, strict=True):
            if key not in stored:
                return f"part {number} was never uploaded"
            head = self._head(self._key(upload.upload_id, key)) or {}
            if _strip_quotes(etag) != head.get("Metadata", {}).get("etag"):
                return f"part {number} etag does not match"
        self.space.check(total)  # the joined file passes through the store's local scratch space
        with self.finishing(upload), self.files.writer(upload.name) as out:
            for key in keys:
                # Streamed in order (download_fileobj would write each part at offset 0 of `out`).
                part = self.client.get_object(Bucket=self.bucket, Key=self._key(upload.upload_id, key))
                shutil.copyfileobj(part["Body"], out, 1 << 20)
        return None

    def slots(self) -> list[Slot]:
        found: dict[str, dict[str, Any]] = {}
        for obj in self.s3.objects_under(self.s3.location.prefix + SLOTS):
            upload_id = obj["Key"][len(self.s3.location.prefix + SLOTS):].partition("/")[0]
            entry = found.setdefault(upload_id, {"newest": 0.0, "size": 0})
            entry["newest"] = max(entry["newest"], obj["LastModified"].timestamp())
            entry["size"] += int(obj["Size"])
        slots = []
        for upload_id, entry in found.items():
            meta = self._meta(upload_id)
            token = _reserved_name(meta).partition("/")[0] if meta is not None else None
            slots.append(Slot(upload_id, token if token and is_token(token) else None, entry["newest"],
                              entry["size"]))
        return slots

    def remove_slot(self, upload_id: str) -> None:
        keys = [{"Key": obj["Key"]} for obj in self.s3.objects_under(self._key(upload_id))]
        for start in range(0, len(keys), 1000):
            result = self.client.delete_objects(Bucket=self.bucket,
                                                Delete={"Objects": keys[start:start + 1000], "Quiet": True})
            if result.get("Errors"):
                raise OSError(f"could not delete upload {upload_id}: {result['Errors'][0]}")

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
            return head
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise

    def _meta(self, upload_id: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(upload_id, "meta.json"))["Body"]
            meta: dict[str, Any] = json.loads(body.read())
            return meta
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        except (ValueError, KeyError):
            return None
