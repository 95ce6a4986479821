"""The local-disk FileStore: the shared contract, plus what only a folder on disk shows."""

from __future__ import annotations

from pathlib import Path

from server.files.factory import open_file_store
from server.files.local import PARTIAL_PREFIX, LocalFileStore
from server.files.store import FileStore
from tests.files.contract import FileStoreContract


class TestLocalFileStore(FileStoreContract):
    def make_store(self, tmp_path: Path) -> FileStore:
        return open_file_store(tmp_path / "files")


def test_files_live_under_their_token_folder(tmp_path: Path) -> None:
    files = LocalFileStore(tmp_path / "files")
    name = files.reserve("out.mp4")
    with files.writer(name) as out:
        out.write(b"x")
    assert (tmp_path / "files" / name).read_bytes() == b"x"
    assert files.local_copy(name) == tmp_path / "files" / name


def test_an_unfinished_write_is_not_a_complete_file(tmp_path: Path) -> None:
    files = LocalFileStore(tmp_path / "files")
    token = files.reserve("out.mp4").partition("/")[0]
    (tmp_path / "files" / token / f"{PARTIAL_PREFIX}inflight").write_bytes(b"half")
    folder = files.folder(token)
    assert folder is not None and not folder.has_complete_file and folder.size == 4


def test_symlinked_folders_are_not_listed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.mp4").write_bytes(b"keep")
    files = LocalFileStore(tmp_path / "files")
    (tmp_path / "files" / "link").symlink_to(outside)
    assert files.folders() == [] and files.delete_folder("link") is None
    assert (outside / "precious.mp4").exists()
