"""Files this server hands out: outputs now, uploads later. Paths are unguessable and writes atomic."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

FILES_ROUTE = "/files"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def new_path(self, file_name: str) -> Path:
        """A fresh path under a random token folder; the caller writes it atomically."""
        folder = self.root / secrets.token_urlsafe(18)
        folder.mkdir(parents=True)
        return folder / safe_name(file_name)

    def relative_url(self, path: Path) -> str:
        rel = path.resolve().relative_to(self.root.resolve())
        return f"{FILES_ROUTE}/{rel.as_posix()}"

    def resolve(self, token: str, name: str) -> Path | None:
        """The file behind /files/{token}/{name}, or None; never escapes the root."""
        if safe_name(name) != name or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
            return None
        path = self.root / token / name
        return path if path.is_file() else None

    def resolve_url_path(self, url_path: str) -> Path | None:
        """Accept our own file URLs as inputs without an HTTP round trip to ourselves."""
        prefix = FILES_ROUTE + "/"
        if not url_path.startswith(prefix):
            return None
        parts = url_path[len(prefix):].split("/")
        if len(parts) != 2:
            return None
        return self.resolve(parts[0], parts[1])


def safe_name(name: str) -> str:
    cleaned = _SAFE_NAME.sub("_", name).strip("._") or "file"
    return cleaned[:120]
