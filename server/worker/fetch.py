"""Bring a `*_url` input onto local disk: http(s) URLs, base64 data URIs, and this server's own files.

Every hop passes server/outbound.py's AddressPolicy (SSRF); redirects are followed by hand, at most
MAX_REDIRECTS, each hop checked again; proxy environment variables are ignored; the size cap is checked
against Content-Length and again while streaming into a temp file, which is renamed into place only when
complete. One wall-clock deadline covers the whole download (connect, TLS, headers, body, every redirect) and
the job's cancellation is consulted on every socket wait (server/worker/watched_http.py); `timeout_s` is the
idle timeout of each of those operations.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import httpx

from server.contract.errors import InputError
from server.files.store import FileStore
from server.outbound import NOT_ALLOWED, AddressNotAllowed, AddressPolicy, strip_credentials, tls_verify
from server.settings import DOWNLOAD_DEADLINE_S
from server.worker.watched_http import DeadlineExceeded, DownloadCancelled, Watch, watched_client

__all__ = ["MAX_REDIRECTS", "DownloadCancelled", "Fetcher"]

log = logging.getLogger("vace.fetch")

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class Fetcher:
    def __init__(self, files: FileStore, work_dir: Path, max_bytes: int, timeout_s: float,
                 allow_hosts: Sequence[str] | None = None,
                 total_timeout_s: float = DOWNLOAD_DEADLINE_S) -> None:
        self.files = files
        self.work_dir = work_dir
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.total_timeout_s = total_timeout_s
        self.policy = AddressPolicy.for_operator(allow_hosts)
        if any(os.environ.get(name) for name in _PROXY_VARS):
            log.warning("proxy environment variables are ignored for input downloads")

    def fetch(self, url: str, field: str, dest_dir: Path, *, should_cancel: Callable[[], bool] | None = None,
              deadline: float | None = None) -> Path:
        """Return a local path holding the bytes behind `url`; InputError (422) when that is impossible.

        `deadline` (time.monotonic) defaults to total_timeout_s from now; DownloadCancelled is raised as soon
        as `should_cancel` says so.
        """
        if deadline is None:
            deadline = time.monotonic() + self.total_timeout_s
        watch = Watch(deadline, should_cancel)
        dest_dir.mkdir(parents=True, exist_ok=True)
        if url.startswith("data:"):
            return self._write(dest_dir, field, _decode_data_uri(url, field, self.max_bytes))
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme.lower() not in ("http", "https") or not parsed.netloc:
            raise InputError(field, f"{field} must be an http(s) URL or a data URI", "file_download_error")
        own = self.files.name_from_url(urllib.parse.unquote(parsed.path))
        if own is not None:
            return self.files.local_copy(own)
        return self._download(url, field, dest_dir, watch=watch)

    def _download(self, url: str, field: str, dest_dir: Path, headers: dict[str, str] | None = None,
                  watch: Watch | None = None) -> Path:
        watch = watch or Watch(time.monotonic() + self.total_timeout_s)
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{field}-")
        try:
            client = watched_client(watch, self.timeout_s, tls_verify())
            with os.fdopen(fd, "wb") as out, client:
                self._stream_into(client, url, field, dict(headers or {}), out, watch)
            final = dest_dir / field
            os.replace(tmp, final)
            return final
        except DeadlineExceeded as exc:
            raise _download_error(field, "it took longer than this server allows for a request's downloads "
                                  f"({self.total_timeout_s:g} s)") from exc
        except AddressNotAllowed as exc:
            raise _download_error(field, NOT_ALLOWED) from exc
        except LookupError as exc:
            raise _download_error(field, "the host name could not be resolved") from exc
        except httpx.TimeoutException as exc:
            raise _download_error(field, "the download timed out") from exc
        except httpx.HTTPError as exc:
            raise _download_error(field, f"the download failed ({type(exc).__name__})") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _stream_into(self, client: httpx.Client, url: str, field: str, headers: dict[str, str],
                     out: BinaryIO, watch: Watch) -> None:
        watch.check()
        target = watch.call(functools.partial(self.policy.target, url))
        for _hop in range(MAX_REDIRECTS + 1):
            watch.check()
            response = client.send(target.build_request(client, "GET", headers), stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    location = urllib.parse.urljoin(target.url, response.headers["location"])
                    next_target = watch.call(functools.partial(self.policy.target, location))
                    if next_target.origin != target.origin:
                        headers = strip_credentials(headers)
                    target = next_target
                    continue
                if response.status_code != 200:
                    raise _download_error(field, f"could not download {field}: HTTP {response.status_code}")
                self._copy_capped(response, field, out)
                return
            finally:
                response.close()
        raise _download_error(field, f"could not download {field}: more than {MAX_REDIRECTS} redirects")

    def _copy_capped(self, response: httpx.Response, field: str, out: BinaryIO) -> None:
        try:
            declared = int(response.headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            raise _too_large(field, self.max_bytes)
        size = 0
        for chunk in response.iter_bytes():  # each read waits under the watch (deadline, cancellation)
            size += len(chunk)
            if size > self.max_bytes:
                raise _too_large(field, self.max_bytes)
            out.write(chunk)

    def _write(self, dest_dir: Path, field: str, data: bytes) -> Path:
        path = dest_dir / field
        path.write_bytes(data)
        return path


def _download_error(field: str, reason: str) -> InputError:
    message = reason if reason.startswith("could not") else f"could not download {field}: {reason}"
    return InputError(field, message, "file_download_error")


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
