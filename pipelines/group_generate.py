"""generate() across a group of ranks: rank 0 leads, the others follow, in lockstep.

Rank 0 has done everything before generation alone (claiming the job, fetching and conditioning inputs); it
sends the finished GenerationRequest to the other ranks, and all of them run pipelines/generate.py's
generate() on it with context parallelism (pipelines/context_parallel.py). The messages travel on a
control group of their own (gloo, CPU tensors): it has a long timeout, because followers wait on it
between jobs for as long as the queue is empty, while the parallel group itself keeps torch's default
timeout, so a hang inside a step still ends in an error.

Cancel: generate() asks should_cancel() once before the run and once after every step. The leader's
answer (its job's cancel flag or its worker stopping) is broadcast at each of those points and is every
rank's answer, so all ranks raise GenerationCancelled after the same step and no collective is left
half-entered. A request that does not split over the group (context_parallel.request_refusal) runs on
rank 0 alone; the followers are not told about it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from diffusers import WanVACEPipeline

from pipelines.context_parallel import request_refusal, serial
from pipelines.generate import GenerationCancelled, GenerationRequest, generate

log = logging.getLogger(__name__)

# Followers wait on the control group through any idle time; a dead leader ends the wait at once anyway
# (its sockets close), so this only bounds a leader that is alive but silent.
CONTROL_TIMEOUT = timedelta(days=30)
_RUN, _STOP = "run", "stop"


class ControlLink:
    """Rank 0's messages to the other ranks of the default process group."""

    def __init__(self, group: Any | None = None) -> None:
        self.group = group if group is not None else dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def send(self, kind: str, payload: Any = None) -> None:
        self._broadcast([kind, payload])

    def receive(self) -> tuple[str, Any]:
        message: list[Any] = [None, None]
        self._broadcast(message)
        return message[0], message[1]

    def share_flag(self, value: bool) -> bool:
        """Rank 0's `value`, on every rank (the others' `value` is ignored)."""
        flag = torch.tensor([1 if value else 0], dtype=torch.uint8)
        dist.broadcast(flag, src=0, group=self.group)
        return bool(flag.item())

    def _broadcast(self, message: list[Any]) -> None:
        dist.broadcast_object_list(message, src=0, group=self.group, device=torch.device("cpu"))


class Leader:
    """Rank 0's generate(): the same signature as pipelines.generate.generate."""

    def __init__(self, link: ControlLink) -> None:
        self.link = link
        # Set when a parallel run failed other than by a cancel: the other ranks may be stuck in a
        # collective, so the group must be restarted rather than given another job.
        self.broken = False

    def generate(self, pipe: WanVACEPipeline, req: GenerationRequest, *,
                 on_step: Callable[[int, int], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None,
                 on_log: Callable[[str], None] | None = None,
                 **hooks: Any) -> np.ndarray:
        # The other keyword arguments (phases, previews, the VAE-encode hook, the forward count) go to
        # pipelines.generate.generate as they are, on rank 0 only: its pipeline holds the whole latents.
        req.validate()  # a bad request fails here, before any other rank is involved
        refusal = request_refusal(pipe, req.num_frames, req.height, req.width, len(req.reference_images))
        if refusal is not None:
            message = f"Generating on one GPU of the group: {refusal}"
            log.info(message)
            if on_log is not None:
                on_log(message)
            with serial(pipe.transformer):
                return generate(pipe, req, on_step=on_step, should_cancel=should_cancel, on_log=on_log,
                                **hooks)
        if on_log is not None:
            on_log(f"Generating across {self.link.world_size} GPUs (context parallel)")

        def shared_cancel() -> bool:
            return self.link.share_flag(should_cancel is not None and should_cancel())

        self.link.send(_RUN, req)
        try:
            return generate(pipe, req, on_step=on_step, should_cancel=shared_cancel, on_log=on_log, **hooks)
        except GenerationCancelled:
            raise
        except BaseException:
            self.broken = True
            raise

    def stop(self) -> None:
        """Tell the followers to exit (the leader's worker is stopping)."""
        self.link.send(_STOP)


def follow(pipe: WanVACEPipeline, link: ControlLink,
           on_run: Callable[[GenerationRequest, str], None] | None = None) -> int:
    """A follower's loop: run what the leader sends until it says stop; returns how many runs it joined.

    on_run(request, outcome) sees each run's outcome ("done" or "cancelled after step k"); any other failure
    propagates, ending the rank (and the group: its launcher tears the rest down).
    """
    runs = 0
    while True:
        kind, payload = link.receive()
        if kind == _STOP:
            return runs
        if kind != _RUN or not isinstance(payload, GenerationRequest):
            raise RuntimeError(f"unexpected message from rank 0: {kind!r}")
        runs += 1
        outcome = _run_following(pipe, link, payload)
        if on_run is not None:
            on_run(payload, outcome)


def _run_following(pipe: WanVACEPipeline, link: ControlLink, req: GenerationRequest) -> str:
    steps = 0

    def on_step(done: int, total: int) -> None:
        nonlocal steps
        steps = done

    try:
        generate(pipe, req, on_step=on_step, should_cancel=lambda: link.share_flag(False))
    except GenerationCancelled:
        return f"cancelled after step {steps}"
    return "done"
