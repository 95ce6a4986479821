"""The last step: encode the frames to H.264, store the files, and build fal's output JSON.

Output options (README "Output options"): `video_quality` sets the H.264 CRF and `video_write_mode` the
x264 preset (ENCODINGS); `sync_mode` returns every file as a data: URI and stores none (fal: "the output
data won't be available in the request history"; the job's result still holds it until retention deletes
the job); `return_frames_zip` adds `frames_zip`, a ZIP of every output frame as PNG.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from preprocessors.video_io import write_mp4
from server.contract.inputs import WanVACEInput
from server.files.store import FileStore
from server.worker.types import Generated, JobHooks

# video_quality -> libx264 CRF (lower is better and bigger; 18 was this server's fixed setting before).
QUALITY_CRF = {"low": 28, "medium": 23, "high": 18, "maximum": 12}
# video_write_mode -> libx264 preset: encoding speed against file size at the same quality.
WRITE_MODE_PRESET = {"fast": "veryfast", "balanced": "medium", "small": "slower"}


def publish(files: FileStore, job_id: str, generated: Generated, request: WanVACEInput, scratch: Path,
            hooks: JobHooks) -> dict[str, Any]:
    """fal's output (server/contract/outputs.py): the video's file record, the prompt, the seed, and
    `frames_zip` when asked."""
    fps = generated.timing.fps
    frames = generated.frames
    crf, preset = QUALITY_CRF[request.video_quality], WRITE_MODE_PRESET[request.video_write_mode]
    hooks.log(f"Encoding {len(frames)} frames to H.264 at {fps:g} fps (crf {crf}, preset {preset})")
    base = f"{generated.task}-{job_id[:8]}"
    publisher = _Inline(scratch) if request.sync_mode else _Stored(files)
    video = publisher.write(f"{base}.mp4", "video/mp4",
                            lambda path: write_mp4(frames, fps, path, crf, preset))
    height, width = frames.shape[1:3]
    # The encoded size: write_mp4 pads an odd side by one pixel.
    video |= {"width": width + width % 2, "height": height + height % 2, "fps": fps,
              "duration": round(len(frames) / fps, 6), "num_frames": len(frames)}
    output: dict[str, Any] = {"video": video, "prompt": generated.prompt, "seed": generated.seed}
    if request.return_frames_zip:
        hooks.log(f"Writing {len(frames)} frames as PNG into frames_zip")
        output["frames_zip"] = publisher.write(f"{base}-frames.zip", "application/zip",
                                               lambda path: write_frames_zip(frames, path))
    return output


Writer = Callable[[Path], None]


def write_frames_zip(frames: np.ndarray, dest: Path) -> None:
    """Every frame as `frame_00000.png`, ... (PNG is compressed already: stored, not deflated)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, frame in enumerate(frames):
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
            archive.writestr(f"frame_{index:05d}.png", buffer.getvalue())


class _Stored:
    """Files kept in the file store, answered by URL."""

    def __init__(self, files: FileStore) -> None:
        self.files = files

    def write(self, file_name: str, content_type: str, write: Writer) -> dict[str, Any]:
        name = self.files.reserve(file_name)
        with self.files.path_writer(name) as dest:
            write(dest)
        return {"url": self.files.url(name),  # made absolute for each caller
                "content_type": content_type, "file_name": name.rpartition("/")[2],
                "file_size": self.files.size(name)}


class _Inline:
    """sync_mode: files written in the job's scratch folder (deleted after the job) and answered as data:
    URIs."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    def write(self, file_name: str, content_type: str, write: Writer) -> dict[str, Any]:
        self.scratch.mkdir(parents=True, exist_ok=True)
        path = self.scratch / file_name
        write(path)
        data = path.read_bytes()
        path.unlink()
        return {"url": f"data:{content_type};base64,{base64.b64encode(data).decode()}",
                "content_type": content_type, "file_name": file_name, "file_size": len(data)}
