"""Large data: URIs in a job's input, kept as files in the FileStore instead of in the job store's row.

A data: URI longer than INLINE_DATA_URI_MAX characters in a `*_url` field (or an item of a `*_urls` list) is
decoded at submit and written to the FileStore, one token folder per job, and the field is given the
file's URL, as if the client had uploaded it first: the worker reads it from the FileStore
(server/worker/fetch.py), and the row holds a URL instead of up to Settings.max_request_bytes of base64.

The files are needed only while their job is queued or running. A marker `{root}/{token}` records which
job a folder belongs to (empty while the submit is under way); `reap` removes the folders of jobs that are
no longer active, which the API runs on every cancel and every few seconds
(server/api/background/input_reaper.py), so a client that submits and cancels large inputs holds no more
disk than its queued jobs need. A folder whose submit never finished (a crash in between) goes after
PENDING_MAX_AGE_S.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import mimetypes
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.files.free_space import FreeSpace
from server.files.store import FileStore, is_token

INLINE_DATA_URI_MAX = 4096  # characters; a small image or mask stays in the row
PENDING_MAX_AGE_S = 600.0  # a marker without a job after this long is a submit that never finished


class BadDataUri(ValueError):
    """A data: URI that cannot be decoded, or decodes to more than the input cap; `loc` is its place in the
    request body, `error_type` fal's (the worker's, server/worker/fetch.py, for the same input)."""

    def __init__(self, loc: tuple[str | int, ...], message: str, error_type: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.error_type = error_type


def _is_url_field(name: str) -> bool:
    return name.endswith(("_url", "_urls"))


def _is_large_data_uri(value: Any) -> bool:
    return isinstance(value, str) and len(value) > INLINE_DATA_URI_MAX and value[:5].lower() == "data:"


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """(media type, bytes) of a data: URI; ValueError if it is malformed."""
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ValueError("is not a valid data: URI (no comma)")
    media_type = header.split(";")[0].strip() or "application/octet-stream"
    if header.lower().endswith(";base64"):
        try:
            return media_type, base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("has invalid base64 data") from exc
    return media_type, urllib.parse.unquote_to_bytes(payload)


class DataUriFiles:
    def __init__(self, files: FileStore, root: Path, max_bytes: int, space: FreeSpace | None = None) -> None:
        self.files = files
        self.root = root
        self.max_bytes = max_bytes  # Settings.max_input_bytes: what a data: URI may deliver
        self.space = space or FreeSpace(root, 0)
        root.mkdir(parents=True, exist_ok=True)

    def spill(self, payload: dict[str, Any], public_base: str) -> tuple[dict[str, Any], str | None]:
        """The payload with each large data: URI replaced by a file's URL, and the token folder holding
        them (None when there were none). BadDataUri or OSError (a full disk) leave no file behind."""
        large = [(name, index) for name, value in payload.items() if _is_url_field(name)
                 for index, item in (enumerate(value) if isinstance(value, list) else [(None, value)])
                 if _is_large_data_uri(item)]
        if not large:
            return payload, None
        out = {name: list(value) if isinstance(value, list) else value for name, value in payload.items()}
        token: str | None = None
        try:
            for name, index in large:
                uri = payload[name] if index is None else payload[name][index]
                loc: tuple[str | int, ...] = ("body", name) if index is None else ("body", name, index)
                try:
                    media_type, data = decode_data_uri(uri)
                except ValueError as exc:
                    raise BadDataUri(loc, f"{name} {exc}", "file_download_error") from exc
                if len(data) > self.max_bytes:
                    raise BadDataUri(loc, f"{name} is larger than the {self.max_bytes} byte limit",
                                     "file_too_large")
                self.space.check(len(data))
                ext = mimetypes.guess_extension(media_type) or ".bin"
                file_name = f"{name}{ext}" if index is None else f"{name}-{index}{ext}"
                if token is None:
                    token = self._reserve(file_name)
                stored = f"{token}/{file_name}"
                with self.files.writer(stored) as writer:
                    writer.write(data)
                url = public_base + self.files.url(stored)
                if index is None:
                    out[name] = url
                else:
                    out[name][index] = url
        except BaseException:
            if token is not None:
                self.discard(token)
            raise
        return out, token

    def _reserve(self, file_name: str) -> str:
        token = self.files.reserve(file_name).partition("/")[0]
        try:
            (self.root / token).touch()  # pending: no job yet
        except OSError:
            self.files.delete_folder(token)
            raise
        return token

    def bind(self, token: str, job_id: str) -> None:
        """Record the job the folder belongs to, once it is in the job store."""
        (self.root / token).write_text(job_id)

    def discard(self, token: str) -> None:
        with contextlib.suppress(OSError):
            self.files.delete_folder(token)
        (self.root / token).unlink(missing_ok=True)

    def reap(self, is_active: Callable[[str], bool], now: float | None = None) -> int:
        """Remove the folders of jobs no longer queued or running; returns how many went."""
        now = time.time() if now is None else now
        removed = 0
        for marker in list(self.root.iterdir()):
            if not is_token(marker.name):
                continue
            try:
                job_id = marker.read_text().strip()
                pending_since = marker.stat().st_mtime
            except FileNotFoundError:
                continue  # removed meanwhile
            if job_id and is_active(job_id):
                continue
            if not job_id and now - pending_since < PENDING_MAX_AGE_S:
                continue
            self.discard(marker.name)
            removed += 1
        return removed
