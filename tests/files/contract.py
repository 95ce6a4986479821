"""The FileStore contract (server/files/store.py), as tests every backend runs (see tests/jobs/contract.py
for the pattern): subclass `FileStoreContract` and implement `make_store`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.files.store import FILES_ROUTE, FileStore


def put(files: FileStore, file_name: str, data: bytes) -> str:
    name = files.reserve(file_name)
    with files.writer(name) as out:
        out.write(data)
    return name


class FileStoreContract:
    def make_store(self, tmp_path: Path) -> FileStore:
        raise NotImplementedError

    @pytest.fixture
    def files(self, tmp_path: Path) -> FileStore:
        return self.make_store(tmp_path)

    def test_reserved_names_are_unguessable_and_safe(self, files: FileStore) -> None:
        first, second = files.reserve("../my clip.mp4"), files.reserve("../my clip.mp4")
        assert first != second
        token, _, file_name = first.partition("/")
        assert len(token) >= 20 and file_name == "my_clip.mp4"
        assert not files.exists(first), "reserved is not written"

    def test_a_long_name_cut_at_a_separator_is_still_writable(self, files: FileStore) -> None:
        # 120 characters is the cap: the cut lands on "_" (from the space), which must not end the name.
        name = files.reserve("a" * 119 + " b.mp4")
        with files.writer(name) as out:
            out.write(b"x")
        assert files.exists(name) and files.size(name) == 1 and files.url(name).endswith(name)

    def test_written_file_reads_back_with_its_size_url_and_local_copy(self, files: FileStore) -> None:
        name = put(files, "out.mp4", b"video bytes")
        assert files.exists(name) and files.size(name) == len(b"video bytes")
        with files.open(name) as f:
            assert f.read() == b"video bytes"
        assert files.local_copy(name).read_bytes() == b"video bytes"
        assert files.url(name) == f"{FILES_ROUTE}/{name}"
        assert files.name_from_url(files.url(name)) == name

    def test_a_failed_write_leaves_nothing(self, files: FileStore) -> None:
        name = files.reserve("out.mp4")
        with pytest.raises(RuntimeError), files.writer(name) as out:
            out.write(b"half")
            raise RuntimeError("disk full")
        assert not files.exists(name)
        with pytest.raises(RuntimeError), files.path_writer(name) as path:
            path.write_bytes(b"half")
            raise RuntimeError("encoder failed")
        assert not files.exists(name)

    def test_path_writer_stores_what_was_written_at_the_path(self, files: FileStore) -> None:
        name = files.reserve("out.mp4")
        with files.path_writer(name) as path:
            path.write_bytes(b"encoded")
            assert not files.exists(name), "visible only once complete"
        assert files.local_copy(name).read_bytes() == b"encoded"

    @pytest.mark.parametrize("bad", ["../jobs.sqlite3", "a/../b", "a/b/c", "tok/.hidden", "tok/", "/abs",
                                     "tok en/x"])
    def test_malformed_names_are_never_found(self, files: FileStore, bad: str) -> None:
        assert not files.exists(bad)
        with pytest.raises(FileNotFoundError):
            files.open(bad)
        with pytest.raises(FileNotFoundError):
            files.local_copy(bad)

    def test_only_own_existing_urls_map_to_names(self, files: FileStore) -> None:
        name = put(files, "a.mp4", b"a")
        assert files.name_from_url(f"{FILES_ROUTE}/{name}") == name
        token = name.partition("/")[0]
        for url_path in (f"{FILES_ROUTE}/{token}/missing.mp4", f"/other/{name}", f"{FILES_ROUTE}/../x",
                         f"{FILES_ROUTE}/{token}"):
            assert files.name_from_url(url_path) is None, url_path

    def test_folders_list_ages_sizes_and_completeness(self, files: FileStore) -> None:
        before = time.time() - 1
        done = put(files, "a.mp4", b"12345")
        reserved = files.reserve("b.mp4")
        listed = {f.token: f for f in files.folders()}
        full, empty = listed[done.partition("/")[0]], listed[reserved.partition("/")[0]]
        assert full.size == 5 and full.file_count == 1 and full.has_complete_file
        assert full.newest_write >= before
        assert empty.size == 0 and empty.file_count == 0 and not empty.has_complete_file
        assert files.folder(full.token) == full and files.folder("missing") is None

    def test_deleting_a_folder_removes_its_files(self, files: FileStore) -> None:
        name = put(files, "a.mp4", b"12345")
        token = name.partition("/")[0]
        removed = files.delete_folder(token)
        assert removed is not None and removed.size == 5 and removed.file_count == 1
        assert not files.exists(name) and files.folder(token) is None
        assert files.delete_folder(token) is None
        assert files.delete_folder("..") is None
