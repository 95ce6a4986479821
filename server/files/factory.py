"""The one place a file store is constructed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from server.files.free_space import FreeSpace
from server.files.store import FileStore
from server.files.uploads import Uploads

if TYPE_CHECKING:
    from server.settings import Settings


def open_file_store(root: Path) -> FileStore:
    """Files under a local folder (server/files/local.py)."""
    from server.files.local import LocalFileStore

    return LocalFileStore(root)


def open_settings_uploads(settings: Settings, files: FileStore, space: FreeSpace | None = None) -> Uploads:
    """Upload slots: in the bucket with --storage (any replica may take any call of an upload), else
    under <data-dir>/uploads. `space` is checked before writes reach the local disk (the slots, or the
    scratch files parts pass through on their way to the bucket)."""
    from server.files.s3 import S3FileStore

    if isinstance(files, S3FileStore):
        from server.files.s3_uploads import S3Uploads

        return S3Uploads(files, settings.uploads_dir, settings.max_upload_bytes, space)
    return Uploads(files, settings.uploads_dir, settings.max_upload_bytes, space)


def open_settings_file_store(settings: Settings) -> FileStore:
    """--storage s3://bucket/prefix -> server/files/s3.py (files shared by boxes; downloads cached under
    <data-dir>/s3-cache), else <data-dir>/files on local disk."""
    if settings.storage:
        from server.files.s3 import S3FileStore, S3Location

        return S3FileStore(S3Location.parse(settings.storage), settings.data_dir / "s3-cache")
    return open_file_store(settings.files_dir)
