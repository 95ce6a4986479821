"""server/files/store.py's FileStore in a folder on local disk: `{root}/{token}/{file_name}`."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from server.files.disk import newest_mtime, tree_size
from server.files.store import (
    Folder,
    StreamOverPath,
    file_url,
    is_token,
    name_from_url_path,
    safe_name,
    split_name,
)

# Bytes stream into such a temp file next to their destination, renamed into place only when complete;
# server/api/background/retention.py tells an unfinished upload by it (through Folder.has_complete_file).
PARTIAL_PREFIX = ".upload-"


class LocalFileStore(StreamOverPath):
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def reserve(self, file_name: str) -> str:
        token = secrets.token_urlsafe(18)
        (self.root / token).mkdir(parents=True)
        return f"{token}/{safe_name(file_name)}"

    @contextmanager
    def path_writer(self, name: str) -> Iterator[Path]:
        dest = self._path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=PARTIAL_PREFIX)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return split_name(name) is not None and self._path(name).is_file()

    def size(self, name: str) -> int:
        return self._existing(name).stat().st_size

    def open(self, name: str) -> BinaryIO:
        return open(self._existing(name), "rb")

    def local_copy(self, name: str) -> Path:
        return self._existing(name)  # already local: the file itself

    def url(self, name: str) -> str:
        self._path(name)  # refuses a malformed name
        return file_url(name)

    def name_from_url(self, url_path: str) -> str | None:
        name = name_from_url_path(url_path)
        return name if name is not None and self.exists(name) else None

    def folder(self, token: str) -> Folder | None:
        folder = self.root / token
        if not is_token(token) or not folder.is_dir() or folder.is_symlink():
            return None
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            return None  # removed meanwhile
        return Folder(
            token=token, newest_write=newest_mtime(folder), size=tree_size(folder),
            file_count=sum(1 for e in entries if e.is_file()),
            has_complete_file=not all(e.name.startswith(PARTIAL_PREFIX) and e.is_file() for e in entries),
        )

    def folders(self) -> list[Folder]:
        if not self.root.is_dir():
            return []
        found = (self.folder(p.name) for p in self.root.iterdir())
        return [f for f in found if f is not None]

    def delete_folder(self, token: str) -> Folder | None:
        held = self.folder(token)
        if held is not None:
            shutil.rmtree(self.root / token)
        return held

    def resolve_url_path(self, url_path: str) -> Path | None:
        """Local backend only (tests, benchmarks): the file behind one of our URL paths."""
        name = self.name_from_url(url_path)
        return self._path(name) if name is not None else None

    def _path(self, name: str) -> Path:
        parts = split_name(name)
        if parts is None:
            raise FileNotFoundError(name)
        return self.root / parts[0] / parts[1]

    def _existing(self, name: str) -> Path:
        path = self._path(name)
        if not path.is_file():
            raise FileNotFoundError(name)
        return path

