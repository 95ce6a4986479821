"""Ages and sizes of folders on local disk, for the sweeps of files/, uploads/ and work/."""

from __future__ import annotations

import math
from pathlib import Path


def newest_mtime(folder: Path) -> float:
    """A folder counts as old only when nothing in it was written recently."""
    try:
        newest = folder.stat().st_mtime
        paths = list(folder.rglob("*"))
    except FileNotFoundError:
        return math.inf  # removed meanwhile (an upload completed, a job ended): nothing to sweep
    for path in paths:
        try:
            newest = max(newest, path.lstat().st_mtime)
        except FileNotFoundError:
            continue
    return newest


def tree_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def child_folders(root: Path) -> list[Path]:
    """Real folders directly under root (symlinks are never followed into)."""
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
