"""`vace download --annotators`: fetch each annotator model into its sub-folder of the annotators folder.

What to fetch, from where and which files make a complete folder are in catalog.py's records; the fetchers
are in sources.py. Sources and licences are listed in weights/README.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from preprocessors.annotators import catalog


def default_models() -> tuple[str, ...]:
    """The folders fetched when no models are named: all but the non-default, non-commercial backends."""
    return tuple(model.folder for model in catalog.ALL if model.in_default_download)


def missing_files(dest: Path, name: str) -> list[str]:
    folder = Path(dest) / name
    return [f"{name}/{entry}" for entry in catalog.by_folder(name).required_files
            if not any((folder / f).is_file() for f in entry.split("|"))]


def download_annotators(dest: Path, models: Iterable[str] | None = None,
                        report: Callable[[str], None] = print) -> Path:
    """Fetch `models` (default: all but Depth-Anything-V2 and OpenPose) into `dest/<sub-folder>`.

    Returns dest.

    Folders already complete are skipped, so a rerun resumes. Raises FileNotFoundError naming what is
    still missing when a source lacks a required file.
    """
    dest = Path(dest)
    names = tuple(models) if models is not None else default_models()
    known = {model.folder for model in catalog.ALL}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown annotator model(s) {unknown}; known: {sorted(known)}")
    for name in names:
        if not missing_files(dest, name):
            report(f"{name}: already complete")
            continue
        model = catalog.by_folder(name)
        report(f"{name}: downloading {model.description}")
        model.fetch(dest / name)
        missing = missing_files(dest, name)
        if missing:
            raise FileNotFoundError(f"{name} downloaded into {dest / name} but lacks: {', '.join(missing)}")
    return dest
