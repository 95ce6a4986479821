"""A worker that is a group of N ranks (`--gpus-per-job N`): one job at a time across N GPUs.

The supervisor starts `python -m server.worker` as for any worker; with gpus_per_job > 1 that process
becomes torchrun's launcher (torch.distributed.run, in-process) for N ranks of `python -m
server.worker.group`, with RANK/LOCAL_RANK/WORLD_SIZE and a loopback rendezvous (`--standalone`). torchrun
ends the whole group when any rank fails, and the launcher then exits non-zero, so the supervisor sees one
dead worker and restarts it as usual.

Rank 0 is the worker the job store knows: it claims jobs, prepares their inputs and publishes the output,
like a one-GPU worker. Only generation runs on every rank (pipelines/group_generate.py): rank 0 broadcasts
the prepared request and, at every step, whether to stop, so a cancel or a shutdown stops all ranks after
the same step. Each rank holds the whole model on its own GPU (cuda:LOCAL_RANK, NCCL between them; gloo on
a CPU); the transformer's token sequence is split across them (pipelines/context_parallel.py).

Shutdown: SIGTERM reaches every rank (torchrun forwards it). The other ranks ignore it and leave when rank
0 tells them to; rank 0 requeues its job at the next step, exactly as a one-GPU worker does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from server.contract.capacity import CapacityTable
from server.jobs.model import Job
from server.settings import Settings
from server.worker.loop import Worker, _die_with_parent
from server.worker.runner import Executor

if TYPE_CHECKING:
    from diffusers import WanVACEPipeline

    from pipelines.group_generate import ControlLink, Leader

log = logging.getLogger("vace.worker.group")
GROUP_MODULE = "server.worker.group"
LOAD_FAILED_EXIT = 3  # as a one-GPU worker that cannot load its model (server/worker/loop.py)
BROKEN_GROUP_EXIT = 5  # a parallel run failed: the other ranks may be stuck, so the group restarts


def launch(worker_id: str, settings_json: str, ranks: int) -> int:
    """Run the group's ranks under torchrun until they exit; non-zero when any of them failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    from pipelines.loader import resolve_model

    # Built here, once: N ranks building the tiny model at once would race, and inside a process group
    # transformers' save_pretrained writes the text encoder from rank 0 only.
    settings = Settings.from_json(settings_json)
    try:
        resolve_model(settings.model, settings.data_dir)
    except Exception as exc:  # noqa: BLE001 - rank 0 meets it again and records it as the worker's failure
        log.error("%s: %s", worker_id, exc)
    # torchrun would set 1 thread per rank; rank 0 also decodes, conditions and encodes on the CPU.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // ranks)))
    args = ["--standalone", f"--nproc-per-node={ranks}", "--max-restarts=0", "-m", GROUP_MODULE,
            "--worker-id", worker_id, "--settings", settings_json]
    try:
        torchrun(args)
    except ChildFailedError as exc:
        log.error("%s: a rank of the group failed: %s", worker_id, exc)
        return 1
    except SignalException as exc:  # torchrun has passed the signal on to the ranks and waited for them
        log.info("%s: group stopped by %s", worker_id, exc.sigval.name)
    return 0


def rank_device(device: str | None, local_rank: int) -> str:
    """Each rank's own device: cuda:LOCAL_RANK among the GPUs the group sees, or the CPU."""
    import torch

    if device == "cpu" or (device is None and not torch.cuda.is_available()):
        return "cpu"
    return f"cuda:{local_rank}"


def rank_settings(settings: Settings, local_rank: int) -> Settings:
    """The worker's settings for one rank: its own device; `--compile auto` is off in a group (regional
    compile has not been measured with the context-parallel hooks, which a fallback run also removes)."""
    compile_mode = "off" if settings.compile == "auto" else settings.compile
    return settings.model_copy(update={"device": rank_device(settings.device, local_rank),
                                       "compile": compile_mode})


class GroupWorker(Worker):
    """Rank 0: a Worker whose generation runs across the group."""

    def __init__(self, settings: Settings, worker_id: str, leader: Leader) -> None:
        super().__init__(settings, worker_id)
        self.leader = leader

    def capacity(self, pipe: WanVACEPipeline) -> CapacityTable | None:
        """None: the single-GPU estimate would understate a group, whose ranks each hold a share of the
        sequence; the API refuses nothing at submit on its account (the per-request check still runs)."""
        return None

    def fp8_setting(self) -> str:
        return group_fp8(self.settings.fp8)

    def load(self) -> Executor:
        from pipelines.context_parallel import enable_context_parallel

        executor = super().load()
        enable_context_parallel(executor.pipe, self.leader.link.world_size)
        return lead_executor(executor, self.leader)

    def run_job(self, executor: Executor, job: Job) -> None:
        super().run_job(executor, job)
        if self.leader.broken:
            log.error("%s: a run across the group failed; restarting the group", self.worker_id)
            self.stopping.set()


def lead_executor(executor: Executor, leader: Leader) -> Executor:
    """Rank 0's executor: generation runs across the group. The per-request memory check is one GPU's
    arithmetic, and its fixes (VAE tiling, the text encoder sent to RAM) would change rank 0's pipeline only,
    while each rank holds a share of the sequence: a group runs none, as it publishes no capacity."""
    executor.generate = leader.generate
    executor.gpu_memory = lambda _pipe: None
    return executor


def group_fp8(setting: str) -> str:
    """--fp8 for every rank of a group: they must run the same weights, and `auto` decides from each GPU's own
    free memory, so in a group it is off (FP8 there only with an explicit `--fp8 on`)."""
    return "off" if setting == "auto" else setting


def _lead(settings: Settings, worker_id: str, link: ControlLink) -> int:
    from pipelines.group_generate import Leader

    leader = Leader(link)
    worker = GroupWorker(settings, worker_id, leader)
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stopping.set())
    try:
        executor = worker.load()
    except Exception as exc:  # noqa: BLE001 - report why the model did not load, then exit for a restart
        worker.store.set_worker_state(worker_id, worker.pid, "failed", settings.model, str(exc))
        log.error("could not load model: %s", exc)
        return LOAD_FAILED_EXIT
    worker.serve(executor)
    if leader.broken:
        return BROKEN_GROUP_EXIT
    leader.stop()
    worker.store.set_worker_state(worker_id, worker.pid, "stopped", settings.model)
    return 0


def _follow(settings: Settings, link: ControlLink) -> int:
    from pipelines.cfg_truncation import configure_cfg_truncation
    from pipelines.context_parallel import enable_context_parallel
    from pipelines.group_generate import follow
    from pipelines.loader import load_pipeline, resolve_model

    # Rank 0 decides when to stop (at a step boundary, after requeueing its job); leaving on the signal
    # itself would break the collective rank 0 is in and fail the job instead.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pipe = load_pipeline(resolve_model(settings.model, settings.data_dir), settings.device,
                         settings.memory_plan, settings.vae_tiling, settings.attention, settings.compile,
                         settings.data_dir / "compile_cache", fp8=group_fp8(settings.fp8),
                         fast_lora=settings.fast_lora, fast_lora_strength=settings.fast_lora_strength)
    configure_cfg_truncation(pipe, settings.cfg_truncation)  # the leader's, so the ranks call the same passes
    enable_context_parallel(pipe, link.world_size)
    runs = follow(pipe, link, on_run=lambda req, outcome: log.info("rank %d: %s", link.rank, outcome))
    log.info("rank %d: stopping after %d runs", link.rank, runs)
    return 0


def rank_main(argv: list[str] | None = None) -> int:
    """One rank, as torchrun starts it."""
    import torch
    import torch.distributed as dist

    from pipelines.group_generate import ControlLink

    parser = argparse.ArgumentParser(prog=f"python -m {GROUP_MODULE}")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--settings", required=True, help="the server's Settings as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _die_with_parent()  # the launcher's; it already runs at the worker's lowered priority
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    settings = rank_settings(Settings.from_json(args.settings), local_rank)
    if settings.device is not None and settings.device.startswith("cuda"):
        torch.cuda.set_device(settings.device)
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group(backend="gloo")
    # Every rank creates its groups in the same order: the control group here, the parallel mesh when the
    # model is loaded.
    link = ControlLink()
    code = _lead(settings, args.worker_id, link) if rank == 0 else _follow(settings, link)
    if code == 0:  # a failed group may have a collective in flight, which the teardown would wait on
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(rank_main())
