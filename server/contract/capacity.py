"""What the workers' published capacity lets the API refuse at submit: a video longer than any live worker
can hold at the request's size.

A worker with a GPU publishes, with its "ready" registration, a table of the largest pipeline frame count that
fits its memory plan for each resolution preset and aspect ratio (server/worker/capacity.py builds it). The
API refuses only when it is certain: the request fixes its resolution (not auto) and its length (not
match_input_num_frames), every live worker published a table, and the fewest frames the request can generate
exceed every table's entry for its size (aspect ratio auto: the table's most permissive size). Everything
else is left to the worker's own per-request memory check, which refuses before any work.

Plain ints and dicts only: the API process imports this.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from pydantic import BaseModel

from server.contract.endpoints import Refusal
from server.contract.inputs import WanVACEInput, known_fields
from server.contract.timing import MAX_FACTOR, downsample_factor

# resolution -> aspect ratio (16:9, 9:16, 1:1, auto) -> largest pipeline frame count that fits, 0 for none.
CapacityTable = dict[str, dict[str, int]]

MIN_FRAMES, MAX_FRAMES = 17, 241  # the schema's num_frames range (server/contract/request_fields.py)
# The pipeline generates 4k+1 frames (preprocessors/sizing.py's pipeline_num_frames).
FRAME_GRID: tuple[int, ...] = tuple(range(MIN_FRAMES, MAX_FRAMES + 1, 4))
AUTO = "auto"
# Worker states whose process is up (server/worker/loop.py), or about to be: a loading worker has published
# nothing yet, and the supervisor keeps a "starting" row (server/api/background/supervisor.py) for a worker
# it is starting or restarting, so while one of those is on its way nothing is certain.
STARTING = "starting"
LIVE_STATES = frozenset({STARTING, "loading", "ready"})


def pipeline_frames(count: int) -> int:
    """The smallest 4k+1 >= count: what the pipeline generates for `count` frames."""
    return (count + 2) // 4 * 4 + 1


def live_capacities(workers: Iterable[Mapping[str, Any]], now: float,
                    stale_s: float) -> list[CapacityTable | None]:
    """The tables of the live workers (a fresh heartbeat, loading or ready); None where one published none."""
    return [w.get("capacity") for w in workers
            if w["state"] in LIVE_STATES and now - float(w["heartbeat"]) < stale_s]


def merged_capacity(tables: Sequence[CapacityTable | None]) -> CapacityTable | None:
    """The most any of these workers can hold per size; None when one has no limit or there are none."""
    if not tables or any(t is None for t in tables):
        return None
    merged: CapacityTable = {}
    for table in tables:
        assert table is not None
        for resolution, row in table.items():
            into = merged.setdefault(resolution, {})
            for aspect, frames in row.items():
                into[aspect] = max(frames, into.get(aspect, 0))
    return merged


def fewest_frames_at_submit(request: WanVACEInput) -> tuple[int, int] | None:
    """(num_frames, downsample factor) of the shortest generation the request can get, or None when its length
    follows the input video. Temporal downsampling generates every (d+1)-th frame; when auto downsampling
    follows the input's fps, the largest factor is assumed (the most permissive case)."""
    if request.video_url is not None and request.match_input_num_frames:
        return None
    follows_input_fps = request.video_url is not None and (
        request.match_input_frames_per_second or request.frames_per_second is None)
    auto = request.enable_auto_downsample and not request.temporal_downsample_factor
    down = MAX_FACTOR if follows_input_fps and auto else downsample_factor(
        request, float(request.frames_per_second or 16))
    return request.num_frames, down


def generated_frames(num_frames: int, down: int) -> int:
    """Pipeline frames for `num_frames` base frames keeping every (down+1)-th
    (preprocessors/interpolation/timeline.py's generated_frames, then the 4k+1 grid)."""
    return pipeline_frames(-(-(num_frames - 1) // (down + 1)) + 1)


def longest_num_frames(limit: int, down: int) -> int:
    """The largest num_frames (within the schema's range) whose generation at downsample factor `down`
    stays within `limit` pipeline frames (a 4k+1 count): generated_frames' inverse."""
    return min(MAX_FRAMES, (limit - 1) * (down + 1) + 1)


def capacity_refusal(task: str, payload: BaseModel,
                     capacities: Callable[[], Sequence[CapacityTable | None]]) -> Refusal | None:
    """A 422 when no live worker can hold the request, or None. `capacities` (the live workers' tables) is
    only called for a request whose size and length the request alone fixes."""
    request = WanVACEInput.model_construct(**(known_fields(payload) | {"task": task}))
    if request.resolution == AUTO:
        return None
    fixed = fewest_frames_at_submit(request)
    if fixed is None:
        return None
    num_frames, down = fixed
    frames = generated_frames(num_frames, down)
    if frames < MIN_FRAMES:
        return None  # below the tables' range: not known
    limits = []
    for table in capacities():
        limit = None if table is None else table.get(request.resolution, {}).get(request.aspect_ratio)
        if limit is None:
            return None  # a worker with no limit (CPU) or no entry for this size
        limits.append(limit)
    if not limits or frames <= max(limits):
        return None
    return _refusal(request, max(limits), down)


def _refusal(request: WanVACEInput, limit: int, down: int) -> Refusal:
    size = f"resolution {request.resolution} (aspect_ratio {request.aspect_ratio})"
    if limit == 0:
        return Refusal(f"no video fits this server's GPU memory at {size}: choose a lower resolution",
                       "value_error", ("body", "resolution"),
                       ctx={"resolution": request.resolution, "aspect_ratio": request.aspect_ratio})
    longest = longest_num_frames(limit, down)
    sampled = f" with temporal downsampling by {down + 1}" if down else ""
    return Refusal(f"num_frames {request.num_frames} at {size}{sampled} needs more GPU memory than any "
                   f"worker of this server has: the longest that fits is num_frames {longest}; lower "
                   "num_frames or resolution", "less_than_equal", ("body", "num_frames"),
                   ctx={"le": longest, "resolution": request.resolution,
                        "aspect_ratio": request.aspect_ratio})


def capacity_json(table: CapacityTable | None) -> str | None:
    """A table as the job stores keep it (a JSON text column), None for none."""
    return None if table is None else json.dumps(table, sort_keys=True)


def parse_capacity(text: str | None) -> CapacityTable | None:
    return None if text is None else cast(CapacityTable, json.loads(text))
