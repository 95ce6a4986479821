"""Bring a `*_url` input onto local disk: http(s) URLs, base64 data URIs, and this server's own files."""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import urllib.parse
from pathlib import Path

import httpx

from server.errors import InputError
from server.filestore import FileStore


class Fetcher:
    def __init__(self, files: FileStore, work_dir: Path, max_bytes: int, timeout_s: float) -> None:
        self.files = files
        self.work_dir = work_dir
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def fetch(self, url: str, field: str, dest_dir: Path) -> Path:
        """Return a local path holding the bytes behind `url`; InputError (422) when that is impossible."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        if url.startswith("data:"):
            return self._write(dest_dir, field, _decode_data_uri(url, field, self.max_bytes))
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InputError(field, f"{field} must be an http(s) URL or a data URI", "file_download_error")
        own = self.files.resolve_url_path(urllib.parse.unquote(parsed.path))
        if own is not None:
            return own
        return self._download(url, field, dest_dir)

    def _download(self, url: str, field: str, dest_dir: Path) -> Path:
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{field}-")
        try:
            with (
                os.fdopen(fd, "wb") as out,
                httpx.stream("GET", url, timeout=self.timeout_s, follow_redirects=True) as response,
            ):
                if response.status_code != 200:
                    raise InputError(field, f"could not download {field}: HTTP {response.status_code}",
                                     "file_download_error")
                declared = int(response.headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    raise _too_large(field, self.max_bytes)
                size = 0
                for chunk in response.iter_bytes(1 << 20):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _too_large(field, self.max_bytes)
                    out.write(chunk)
            final = dest_dir / field
            os.replace(tmp, final)
            return final
        except httpx.HTTPError as exc:
            raise InputError(field, f"could not download {field}: {exc}", "file_download_error") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _write(self, dest_dir: Path, field: str, data: bytes) -> Path:
        path = dest_dir / field
        path.write_bytes(data)
        return path


def _decode_data_uri(url: str, field: str, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise InputError(field, f"{field} is not a valid data URI (no comma)", "file_download_error")
    # base64 inflates by 4/3: reject before decoding anything huge.
    if len(payload) * 3 // 4 > max_bytes:
        raise _too_large(field, max_bytes)
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(field, f"{field} has invalid base64 data", "file_download_error") from exc
    return urllib.parse.unquote_to_bytes(payload)


def _too_large(field: str, max_bytes: int) -> InputError:
    return InputError(field, f"{field} is larger than the {max_bytes} byte limit", "file_too_large",
                      {"max_size": max_bytes})
