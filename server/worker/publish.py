"""The last step: encode the frames to H.264, store the file, and build fal's output JSON."""

from __future__ import annotations

from typing import Any

from preprocessors.video_io import write_mp4
from server.files.store import FileStore
from server.worker.types import Generated, JobHooks


def publish(files: FileStore, job_id: str, generated: Generated, hooks: JobHooks) -> dict[str, Any]:
    """fal's output (server/contract/outputs.py): the video's file record, the prompt used and the seed."""
    fps = generated.timing.fps
    hooks.log(f"Encoding {len(generated.frames)} frames to H.264 at {fps:g} fps")
    name = files.reserve(f"{generated.task}-{job_id[:8]}.mp4")
    with files.path_writer(name) as dest:
        write_mp4(generated.frames, fps, dest)
    return {
        "video": {
            "url": files.url(name),  # made absolute for each caller
            "content_type": "video/mp4",
            "file_name": name.rpartition("/")[2],
            "file_size": files.size(name),
        },
        "prompt": generated.prompt,
        "seed": generated.seed,
    }
