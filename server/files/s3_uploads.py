"""Upload slots and multipart parts in the bucket (server/files/s3.py), so that the calls of one upload may
reach different API replicas: a load balancer sends the JS client's initiate, its parts and its complete
call wherever it likes. Same behaviour as server/files/uploads.py (whose slots are folders on one API
host's disk); here a slot is the objects `{prefix}.uploads/{upload id}/meta.json` and `.../part-NNNNN`
(".uploads" is no token, so the bucket's token folders never include it). A part's etag (the MD5 the client
is answered with) is kept in the part object's metadata.
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

from server.files.s3 import S3FileStore
from server.files.store import is_token
from server.files.uploads import (
    _PART_TEMP_PREFIX,
    _UPLOAD_ID,
    PendingUpload,
    Slot,
    Uploads,
    UploadTooLarge,
    _reserved_name,
    _strip_quotes,
    file_etag,
)

SLOTS = ".uploads/"


class S3Uploads(Uploads):
    def __init__(self, files: S3FileStore, scratch: Path, max_bytes: int) -> None:
        super().__init__(files, scratch, max_bytes)  # scratch: parts on their way to the bucket
        self.s3 = files
        self.client = files.client
        self.bucket = files.bucket

    def _key(self, upload_id: str, leaf: str = "") -> str:
        return f"{self.s3.location.prefix}{SLOTS}{upload_id}/{leaf}"

    def create(self, file_name: str, content_type: str) -> PendingUpload:
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
        self.remove_slot(upload_id)

    async def write_part(self, chunks: AsyncIterator[bytes], declared: int, upload: PendingUpload,
                         part_number: int) -> str:
        if declared > self.max_bytes:
            raise UploadTooLarge()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=_PART_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                await self._copy(chunks, out)
            etag = file_etag(Path(tmp))
            await asyncio.to_thread(self.client.upload_file, tmp, self.bucket,
                                    self._key(upload.upload_id, f"part-{part_number:05d}"),
                                    ExtraArgs={"Metadata": {"etag": etag}})
            return etag
        finally:
            Path(tmp).unlink(missing_ok=True)

    def assemble(self, upload: PendingUpload, parts: list[dict[str, Any]]) -> str | None:
        parts = sorted(parts, key=lambda p: int(p.get("partNumber", 0)))
        numbers = [int(p.get("partNumber", 0)) for p in parts]
        if not numbers or numbers[0] < 1 or len(set(numbers)) != len(numbers):
            return "parts must list each partNumber (1, 2, ...) once"
        listed = self.s3.objects_under(self._key(upload.upload_id))
        stored = {obj["Key"].rsplit("/", 1)[1]: obj for obj in listed}
        keys = [f"part-{n:05d}" for n in numbers]
        if sum(int(stored[k]["Size"]) for k in keys if k in stored) > self.max_bytes:
            return f"upload is larger than the {self.max_bytes} byte limit"
        for part, key in zip(parts, keys, strict=True):
            if key not in stored:
                return f"part {part['partNumber']} was never uploaded"
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(upload.upload_id, key))
            if _strip_quotes(str(part.get("etag", ""))) != head.get("Metadata", {}).get("etag"):
                return f"part {part['partNumber']} etag does not match"
        with self.files.writer(upload.name) as out:
            for key in keys:
                # Streamed in order (download_fileobj would write each part at offset 0 of `out`).
                part = self.client.get_object(Bucket=self.bucket, Key=self._key(upload.upload_id, key))
                shutil.copyfileobj(part["Body"], out, 1 << 20)
        self.discard(upload.upload_id)
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

    def _meta(self, upload_id: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(upload_id, "meta.json"))["Body"]
            meta: dict[str, Any] = json.loads(body.read())
            return meta
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        except (ValueError, KeyError):
            return None
