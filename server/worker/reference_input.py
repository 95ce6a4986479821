"""The input of a request without video_url (reference-to-video): a blank gray video on the output timeline.

Its size only decides what `resolution: "auto"` and `aspect_ratio: "auto"` become: 832x480, so they mean
480p at 16:9 (this server's reading; set both to choose). match_input_* have no input to follow: num_frames
and frames_per_second (16 when null) apply.
"""

from __future__ import annotations

import numpy as np

from preprocessors.video_io import VideoInfo
from server.contract.inputs import WanVACEInput
from server.contract.limits import output_length_field
from server.contract.timing import interpolation_field
from server.worker.inputs import InputReader
from server.worker.tasks import TaskPlan
from server.worker.types import FittedInput, JobHooks, Timing

BLANK_SIZE = (832, 480)  # 480p 16:9 (preprocessors/sizing.py)
DEFAULT_FPS = 16.0
_GRAY = 128  # replaced by exact gray in the conditioning (server/worker/tasks.py's ReferencePlan)


def reference_input(reader: InputReader, request: WanVACEInput, plan: TaskPlan,
                    hooks: JobHooks) -> FittedInput:
    fps = float(request.frames_per_second or DEFAULT_FPS)
    timing = Timing(fps=fps, num_frames=request.num_frames)
    timeline = plan.timeline(request, timing)
    field = output_length_field(timeline.upsample, follows_input=False,
                                interpolation=interpolation_field(request))
    reader.limits.check_output(field, timeline.output_frames)
    width, height = BLANK_SIZE
    frames = np.full((timeline.generated_frames, height, width, 3), _GRAY, dtype=np.uint8)
    references = [reader.image(url, "ref_image_urls", index=i)
                  for i, url in enumerate(request.ref_image_urls or [])]
    hooks.log(f"No video_url: reference-to-video from {len(references)} reference image(s)")
    info = VideoInfo(width=width, height=height, fps=fps, num_frames=timing.num_frames,
                     duration=timing.num_frames / fps)
    return FittedInput(info=info, timing=timing, timeline=timeline, frames=frames, references=references)
