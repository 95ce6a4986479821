"""Fetch a Wan VACE diffusers repo (only the files the server loads) and check a folder is complete.

One manifest serves both jobs, so what `vace download` fetches is exactly what the loader checks for.
"""

from __future__ import annotations

import json
from pathlib import Path

# Per component folder: files that must exist. "*weights*" stands for "<stem>.safetensors, or its
# .safetensors.index.json plus every shard the index names" (the 14B transformer and text encoder are
# sharded).
WEIGHTS = "*weights*"
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "": ("model_index.json",),
    "scheduler": ("scheduler_config.json",),
    "text_encoder": ("config.json", WEIGHTS),
    "tokenizer": ("tokenizer_config.json",),  # the vocabulary files differ by tokenizer class
    "transformer": ("config.json", WEIGHTS),
    "vae": ("config.json", WEIGHTS),
}
_WEIGHT_STEMS = {"text_encoder": "model"}  # transformers' name; diffusers models use the default below
_DIFFUSERS_STEM = "diffusion_pytorch_model"


def allow_patterns() -> list[str]:
    """Glob patterns for snapshot_download: configs, safetensors and the tokenizer; no .bin/.pth copies."""
    patterns = []
    for folder, files in REQUIRED_FILES.items():
        if not folder:
            patterns.extend(files)
        elif folder == "tokenizer":
            patterns.append("tokenizer/*")
        else:
            patterns.append(f"{folder}/*.json")
            if WEIGHTS in files:
                patterns.append(f"{folder}/*.safetensors")
    return patterns


def verify_model_dir(path: Path) -> list[str]:
    """Relative paths of required files missing under `path` (empty when complete)."""
    path = Path(path)
    missing = []
    for folder, files in REQUIRED_FILES.items():
        for name in files:
            if name == WEIGHTS:
                missing.extend(_missing_weights(path, folder))
            elif not (path / folder / name).is_file():
                missing.append(f"{folder}/{name}" if folder else name)
    return missing


def _missing_weights(root: Path, folder: str) -> list[str]:
    stem = _WEIGHT_STEMS.get(folder, _DIFFUSERS_STEM)
    single, index = f"{folder}/{stem}.safetensors", f"{folder}/{stem}.safetensors.index.json"
    if (root / single).is_file():
        return []
    if not (root / index).is_file():
        return [single]
    try:
        shards = sorted(set(json.loads((root / index).read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError):
        return [f"{index} (unreadable)"]
    # An interrupted download typically leaves the index and some of the shards.
    return [f"{folder}/{s}" for s in shards if not (root / folder / s).is_file()]


def download_model(repo: str, dest: Path) -> Path:
    """Download the files the server needs from `repo` into `dest` (resumes partial downloads); returns dest.

    Raises FileNotFoundError naming what is still missing if the repo lacks a required file.
    """
    from huggingface_hub import snapshot_download  # imported here: only this command touches the network

    dest = Path(dest)
    snapshot_download(repo_id=repo, local_dir=dest, allow_patterns=allow_patterns())
    missing = verify_model_dir(dest)
    if missing:
        raise FileNotFoundError(f"{repo} downloaded into {dest} but lacks: {', '.join(missing)}")
    return dest
