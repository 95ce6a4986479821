"""The one place a file store is constructed."""

from __future__ import annotations

from pathlib import Path

from server.files.store import FileStore


def open_file_store(root: Path) -> FileStore:
    """Files under a local folder (server/files/local.py). An S3-compatible backend would be picked here
    (by a bucket URL in Settings), and nothing else would change."""
    from server.files.local import LocalFileStore

    return LocalFileStore(root)
