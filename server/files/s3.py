"""server/files/store.py's FileStore in an S3-compatible bucket: the name `{token}/{file_name}` is the object
key `{prefix}{token}/{file_name}`, so API replicas and worker boxes that share no disk share the files.

boto3 takes its credentials, region and endpoint from the environment as everywhere else
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL for MinIO, Ceph, R2 or
moto), never from our settings or flags, so no secret sits in a config file or a process's arguments.

- Atomic writes: bytes go to a local temp file and are uploaded in one PUT (boto3 switches to a multipart
  upload for large files, which S3 makes visible only when complete), so a reader sees the whole file or
  none, and a failed write leaves nothing.
- A reserved token is a folder that exists before anything lands in it (retention tells an upload that
  never finished by it): `reserve` writes an empty marker object `{token}/.reserved`.
- `local_copy` downloads into a local cache (objects never change once written: each name is used once);
  a cached copy is used only while the object still exists with the same size, so a file deleted by
  retention on another replica is not served from here. Cached copies unused for CACHE_KEEP_S go.
- URLs keep the API's shape (`/files/{token}/{file_name}`); `presigned_url` gives a time-limited direct
  link, which the API redirects to when Settings.file_urls is "presigned".
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from server.files.store import (
    Folder,
    StreamOverPath,
    file_url,
    is_token,
    name_from_url_path,
    safe_name,
    split_name,
)

MARKER = ".reserved"
CACHE_KEEP_S = 3600.0
_PARTIAL_PREFIX = ".download-"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket` or `s3://bucket/some/prefix`."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"storage must look like s3://bucket/prefix, got {url!r}")
        prefix = parsed.path.strip("/")
        return cls(parsed.netloc, prefix + "/" if prefix else "")


class S3FileStore(StreamOverPath):
    def __init__(self, location: S3Location, cache_dir: Path, client: Any = None) -> None:
        import boto3  # optional dependency: pip install 'vace-server[s3]'

        self.location = location
        self.bucket = location.bucket
        self.client = client if client is not None else boto3.client("s3")
        self.cache_dir = cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)

    def reserve(self, file_name: str) -> str:
        token = secrets.token_urlsafe(18)
        self.client.put_object(Bucket=self.bucket, Key=self._key(f"{token}/{MARKER}"), Body=b"")
        return f"{token}/{safe_name(file_name)}"

    @contextmanager
    def path_writer(self, name: str) -> Iterator[Path]:
        key = self._checked_key(name)
        fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, prefix=_PARTIAL_PREFIX)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            self.client.upload_file(str(tmp), self.bucket, key)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return split_name(name) is not None and self._head(name) is not None

    def size(self, name: str) -> int:
        head = self._head(name)
        if head is None:
            raise FileNotFoundError(name)
        return int(head["ContentLength"])

    def open(self, name: str) -> BinaryIO:
        return open(self.local_copy(name), "rb")

    def local_copy(self, name: str) -> Path:
        size = self.size(name)  # FileNotFoundError for a malformed or missing name
        token, file_name = name.split("/")
        cached = self.cache_dir / token / file_name
        if cached.is_file() and cached.stat().st_size == size:
            os.utime(cached)
            return cached
        self._prune_cache()
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=cached.parent, prefix=_PARTIAL_PREFIX)
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self._key(name), tmp_name)
            os.replace(tmp_name, cached)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return cached

    def url(self, name: str) -> str:
        self._checked_key(name)
        return file_url(name)

    def presigned_url(self, name: str, expires_s: float) -> str:
        """A direct, time-limited GET link to the object (the bucket's endpoint must be reachable by the
        client)."""
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._checked_key(name)},
            ExpiresIn=int(expires_s)))

    def name_from_url(self, url_path: str) -> str | None:
        name = name_from_url_path(url_path)
        return name if name is not None and self.exists(name) else None

    def folder(self, token: str) -> Folder | None:
        if not is_token(token):
            return None
        return self._folders(self._key(f"{token}/")).get(token)

    def folders(self) -> list[Folder]:
        return list(self._folders(self.location.prefix).values())

    def delete_folder(self, token: str) -> Folder | None:
        held = self.folder(token)
        if held is None:
            return None
        keys = [obj["Key"] for obj in self.objects_under(self._key(f"{token}/"))]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": key} for key in keys[start:start + 1000]]
            result = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if result.get("Errors"):
                raise OSError(f"could not delete {token}: {result['Errors'][0]}")
        shutil.rmtree(self.cache_dir / token, ignore_errors=True)
        return held

    # -- helpers ---------------------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return self.location.prefix + name

    def _checked_key(self, name: str) -> str:
        if split_name(name) is None:
            raise FileNotFoundError(name)
        return self._key(name)

    def _head(self, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self._checked_key(name)))
        except FileNotFoundError:
            return None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def objects_under(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def _folders(self, prefix: str) -> dict[str, Folder]:
        """Token -> Folder for every `{token}/...` object under `prefix`, from one listing."""
        found: dict[str, dict[str, Any]] = {}
        for obj in self.objects_under(prefix):
            token, sep, file_name = obj["Key"][len(self.location.prefix):].partition("/")
            if not sep or not is_token(token) or "/" in file_name:
                continue
            entry = found.setdefault(token, {"newest": 0.0, "size": 0, "count": 0})
            entry["newest"] = max(entry["newest"], obj["LastModified"].timestamp())
            if file_name != MARKER:
                entry["size"] += int(obj["Size"])
                entry["count"] += 1
        return {token: Folder(token=token, newest_write=e["newest"], size=e["size"], file_count=e["count"],
                              has_complete_file=e["count"] > 0) for token, e in found.items()}

    def _prune_cache(self) -> None:
        cutoff = time.time() - CACHE_KEEP_S
        for path in self.cache_dir.glob("*/*"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                continue
