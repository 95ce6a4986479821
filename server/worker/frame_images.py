"""Reading first_frame_url / last_frame_url into kept frames (preprocessors/keyframes.py does the pixels)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from preprocessors.keyframes import FrameImage, frame_image
from server.contract.inputs import WanVACEInput

if TYPE_CHECKING:
    from server.worker.inputs import InputReader


def read_frame_images(request: WanVACEInput, reader: InputReader, generated_frames: int, width: int,
                      height: int) -> list[FrameImage]:
    """The first and last frame images of a request at the generation size, on the generated timeline
    (the first at 0, the last at the last generated frame; with one frame, the last one wins)."""
    wanted = [(0, request.first_frame_url, "first_frame_url"),
              (generated_frames - 1, request.last_frame_url, "last_frame_url")]
    images = []
    for index, url, field in wanted:
        if url is None:
            continue
        on_black = reader.image(url, field, background=(0, 0, 0))
        on_white = reader.image(url, field, background=(255, 255, 255))
        images.append(frame_image(index, on_black, on_white, request.transparency_mode, width, height))
    return images
