"""The file store's interface: the files this server hands out (outputs and finished uploads).

A file is addressed by its name, `{token}/{file_name}`: the token is an unguessable folder made by
`reserve`, so a URL cannot be guessed from another. Backends: server/files/local.py (a folder on disk);
an S3-compatible one would map a name to an object key and a token to a key prefix. Nothing here assumes
a local disk: a caller that needs a path (a decoder, a sendfile) asks `local_copy`, which a remote backend
implements by download.

Guarantees: a file appears under its name only once it is complete (`writer` and `path_writer` are atomic:
a reader sees the old state or the whole file, never part of it); names never escape the store (a name
that is not `{token}/{file_name}` with safe characters is simply not found).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

FILES_ROUTE = "/files"  # the URL path a name is served under (server/api/routes/service.py)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Folder:
    """One token's folder, as the retention sweeper (server/api/background/retention.py) sees it."""

    token: str
    newest_write: float  # time.time() of the most recent write to anything in it, unfinished ones too
    size: int  # bytes, unfinished writes included
    file_count: int  # files, unfinished writes included
    has_complete_file: bool  # False while nothing has landed (an upload reserved but never finished)


class StreamOverPath:
    """`writer` for stores whose native write is `path_writer` (a temp file moved or uploaded into place)."""

    def path_writer(self, name: str) -> AbstractContextManager[Path]:
        raise NotImplementedError

    @contextmanager
    def writer(self, name: str) -> Iterator[BinaryIO]:
        with self.path_writer(name) as tmp, open(tmp, "wb") as out:
            yield out


class FileStore(Protocol):
    def reserve(self, file_name: str) -> str:
        """A fresh name `{new token}/{safe file_name}` for a file written later (the token's folder exists
        from now on, so retention can tell a reserved-but-unfinished upload)."""
        ...

    def writer(self, name: str) -> AbstractContextManager[BinaryIO]:
        """Write the file through a binary stream; it is stored under `name` only when the block exits
        without an exception, and discarded otherwise."""
        ...

    def path_writer(self, name: str) -> AbstractContextManager[Path]:
        """A local path to create the file at (for encoders that want a path); stored under `name` when
        the block exits without an exception, discarded otherwise."""
        ...

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def open(self, name: str) -> BinaryIO:
        """The file for reading; FileNotFoundError if there is none."""
        ...

    def local_copy(self, name: str) -> Path:
        """A local path holding the file's bytes, to read (never to write); FileNotFoundError if none."""
        ...

    def url(self, name: str) -> str:
        """The URL path the file is served under (`/files/{token}/{file_name}`), relative to the server."""
        ...

    def name_from_url(self, url_path: str) -> str | None:
        """The name behind one of this store's URL paths, if that file exists; None for anything else."""
        ...

    def folder(self, token: str) -> Folder | None: ...

    def folders(self) -> list[Folder]: ...

    def delete_folder(self, token: str) -> Folder | None:
        """Delete a token's folder and every file in it; what it held, or None if there was none.
        OSError if it could not be deleted."""
        ...


def safe_name(name: str) -> str:
    """A file name with only [A-Za-z0-9._-], no leading dot, at most 120 characters."""
    # Cut before stripping, so a cut that ends in "." or "_" still gives a name split_name accepts.
    return _UNSAFE.sub("_", name)[:120].strip("._") or "file"


def split_name(name: str) -> tuple[str, str] | None:
    """(token, file_name) for a well-formed name, else None: what keeps every backend inside its root."""
    token, sep, file_name = name.partition("/")
    if not sep or not _TOKEN.fullmatch(token) or safe_name(file_name) != file_name:
        return None
    return token, file_name


def is_token(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


def name_from_url_path(url_path: str) -> str | None:
    """`/files/{token}/{file_name}` -> the name, if well formed (whether it exists is the backend's call)."""
    prefix = FILES_ROUTE + "/"
    if not url_path.startswith(prefix):
        return None
    name = url_path[len(prefix):]
    return name if split_name(name) is not None else None


def file_url(name: str) -> str:
    return f"{FILES_ROUTE}/{name}"

