"""A worker process: loads the model once, then claims and runs jobs until told to stop.

Started by the supervisor as `python -m server.worker ...`; never imported by the API process.
SIGTERM asks for a graceful stop: the running job is interrupted at its next denoising step and put back
in the queue without spending an attempt, so a restart loses nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from server.contract.capacity import CapacityTable
from server.contract.errors import cancelled_error
from server.contract.limits import InputLimits
from server.files.factory import open_settings_file_store
from server.files.store import FileStore
from server.jobs.factory import open_settings_job_store
from server.jobs.model import Job
from server.jobs.store import WakesWorkers
from server.local_beat import beat, beat_path
from server.logs import configure_logging, job_context
from server.settings import Settings
from server.worker.capacity import worker_capacity
from server.worker.failures import failure_of, log_line
from server.worker.fetch import DownloadCancelled, Fetcher
from server.worker.progress import Progress
from server.worker.runner import Executor, JobHooks

if TYPE_CHECKING:
    from diffusers import WanVACEPipeline

    from pipelines.compile_warmup import WarmupShape
    from preprocessors.annotators.registry import Annotators

log = logging.getLogger("vace.worker")

IDLE_POLL_S = 0.2
# Longest idle wait between claims where submits wake the worker (also how long a stop may wait for it).
IDLE_WAKE_S = 1.0
HEARTBEAT_S = 2.0


class Worker:
    def __init__(self, settings: Settings, worker_id: str) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.store = open_settings_job_store(settings)
        self.stopping = threading.Event()
        self.pid = os.getpid()
        # Several beats per stall timeout, so one late beat (a busy database) never reads as a stall.
        self.heartbeat_s = min(HEARTBEAT_S, settings.worker_stall_timeout_s / 4)
        self._heartbeat_thread: threading.Thread | None = None
        self.files: FileStore | None = None

    def load(self) -> Executor:
        # Imported here so that `--help` and failures to start stay cheap and torch-free.
        from pipelines.compile_warmup import parse_warmup
        from pipelines.loader import load_pipeline, resolve_model

        self.store.set_worker_state(self.worker_id, self.pid, "loading", self.settings.model)
        self.start_heartbeat()  # loading takes minutes: the supervisor must see this process is alive
        annotators = self._annotators()  # a bad VACE_* setting fails the start, before the model loads
        warmup = parse_warmup(self.settings.compile_warmup)  # likewise a bad --compile-warmup
        model_dir = resolve_model(self.settings.model, self.settings.data_dir)
        started = time.monotonic()
        pipe = load_pipeline(model_dir, self.settings.device, self.settings.memory_plan,
                             self.settings.vae_tiling, self.settings.attention, self.settings.compile,
                             self.settings.data_dir / "compile_cache", fp8=self.fp8_setting(),
                             fast_lora=self.settings.fast_lora,
                             fast_lora_strength=self.settings.fast_lora_strength)
        log.info("%s loaded %s in %.1fs", self.worker_id, model_dir, time.monotonic() - started)
        configure_model_run(pipe, self.settings, warmup)
        capacity = self.capacity(pipe)
        if capacity is not None:
            log.info("%s longest video per size (pipeline frames): %s", self.worker_id, capacity)
        self.store.set_worker_state(self.worker_id, self.pid, "ready", str(model_dir), capacity=capacity)
        files = open_settings_file_store(self.settings)
        self.files = files
        fetcher = Fetcher(files, self.settings.work_dir, self.settings.max_input_bytes,
                          self.settings.download_timeout_s, allow_hosts=self.settings.fetch_allow_hosts,
                          total_timeout_s=self.settings.download_deadline_s)
        return Executor(pipe, fetcher, files, self.settings.work_dir, annotators=annotators,
                        limits=InputLimits.from_settings(self.settings))

    def fp8_setting(self) -> str:
        """--fp8 as this worker loads with it (a group decides it the same way on every rank)."""
        return self.settings.fp8

    def capacity(self, pipe: WanVACEPipeline) -> CapacityTable | None:
        """The longest video per size this worker holds (server/worker/capacity.py), published with its
        "ready" state so the API can refuse at submit what fits no worker; None (CPU): no limit."""
        return worker_capacity(pipe)

    def _annotators(self) -> Annotators:
        """Annotator models are loaded on first use; the configuration (environment) is checked now."""
        from preprocessors.annotators.registry import AnnotatorConfig, Annotators

        config = AnnotatorConfig.for_worker(self.settings.model, self.settings.data_dir, self.settings.device)
        log.info("%s annotators: %s (depth %s, pose %s, safety checker missing: %s, threshold %g)",
                 self.worker_id, config.root, config.depth_backend, config.pose_backend,
                 config.safety_missing, config.safety_threshold)
        return Annotators(config)

    def start_heartbeat(self) -> None:
        if self._heartbeat_thread is None:
            self._heartbeat_thread = threading.Thread(target=self._heartbeat, daemon=True, name="heartbeat")
            self._heartbeat_thread.start()
            # Its own thread: a database write can block for its busy timeout (server/local_beat.py).
            threading.Thread(target=self._local_beat, daemon=True, name="local-beat").start()

    def _local_beat(self) -> None:
        path = beat_path(self.settings.data_dir, self.worker_id)
        beat(path)
        while not self.stopping.wait(self.heartbeat_s):
            beat(path)

    def serve(self, executor: Executor) -> None:
        self.start_heartbeat()
        while not self.stopping.is_set():
            job = self.store.claim(self.worker_id)
            if job is None:
                self._idle()
                continue
            self.run_job(executor, job)

    def run_job(self, executor: Executor, job: Job) -> None:
        with job_context(job.id, self.worker_id):
            self._run_job(executor, job)

    def _run_job(self, executor: Executor, job: Job) -> None:
        from pipelines.generate import GenerationCancelled

        def job_log(message: str, level: str = "INFO") -> None:
            self.store.add_log(job.id, message, level)

        def should_cancel() -> bool:
            return self.stopping.is_set() or self.store.is_cancel_requested(job.id)

        job_log(f"Started on {self.worker_id} (attempt {job.attempts})")
        try:
            progress = Progress(lambda body: self.store.telemetry.set_progress(job.id, body), job_log)
            hooks = JobHooks(log=job_log, should_cancel=should_cancel, warn=lambda m: job_log(m, "WARN"),
                             progress=progress, store_preview=self._preview_store(job),
                             preview_every=self.settings.preview_every)
            output = executor.run(job, hooks)
        except (GenerationCancelled, DownloadCancelled):
            if self.store.is_cancel_requested(job.id) or not self.stopping.is_set():
                self.store.fail(job.id, self.worker_id, cancelled_error())
            else:
                job_log("Worker shutting down; request returned to the queue", "WARN")
                self.store.requeue(job.id, self.worker_id, count_attempt=False)
            return
        except Exception as exc:  # noqa: BLE001 - any failure must end the job, not the worker
            job_log(log_line(exc), "ERROR")
            self.store.fail(job.id, self.worker_id, failure_of(exc, f"{self.worker_id}, job {job.id}"))
            return
        job_log("Completed")
        self.store.complete(job.id, self.worker_id, output)

    def _idle(self) -> None:
        """Wait for work: on a NOTIFY from a store that sends them (PostgreSQL), else a short poll."""
        if isinstance(self.store, WakesWorkers):
            self.store.wait_for_jobs(IDLE_WAKE_S)
        else:
            self.stopping.wait(IDLE_POLL_S)

    def _heartbeat(self) -> None:
        """Beats until the worker stops. A failed beat (a full disk, a locked database) is logged and the
        next one tried: a heartbeat thread that died would leave a working worker looking dead for good
        (and, on PostgreSQL, lose its lease)."""
        failing = False
        while not self.stopping.wait(self.heartbeat_s):
            try:
                self.store.heartbeat(self.worker_id)
                stats = gpu_memory_stats(self.settings.device)
                if stats:  # /metrics' GPU memory per worker (server/api/metrics.py)
                    self.store.telemetry.set_worker_stats(self.worker_id, stats)
            except Exception:
                if not failing:
                    log.exception("%s: heartbeat failed; retrying every %gs", self.worker_id,
                                  self.heartbeat_s)
                failing = True
                continue
            if failing:
                log.info("%s: heartbeat recovered", self.worker_id)
            failing = False

    def _preview_store(self, job: Job) -> Callable[[bytes, str], str] | None:
        """One file per job, rewritten by each preview (the URL's ?step= tells browsers it changed)."""
        files = self.files
        if files is None:
            return None
        names: dict[str, str] = {}

        def store(data: bytes, file_name: str) -> str:
            if file_name not in names:
                names[file_name] = files.reserve(file_name)
            with files.writer(names[file_name]) as out:
                out.write(data)
            return job.public_base.rstrip("/") + files.url(names[file_name])

        return store


def gpu_memory_stats(device: str | None) -> dict[str, int]:
    """Bytes allocated by this process on its CUDA device now and at peak; empty without CUDA."""
    import torch

    if not torch.cuda.is_available() or (device is not None and not device.startswith("cuda")):
        return {}
    index = torch.device(device or "cuda").index
    index = torch.cuda.current_device() if index is None else index
    return {"gpu_memory_bytes": int(torch.cuda.memory_allocated(index)),
            "gpu_memory_peak_bytes": int(torch.cuda.max_memory_allocated(index))}


def configure_model_run(pipe: object, settings: Settings, warmup: tuple[WarmupShape, ...]) -> None:
    """Before the worker reports ready: the operator's CFG truncation, and the compiled transformer run once
    per --compile-warmup shape (parsed before the model loads) so the first request of those shapes does not
    compile (pipelines/compile_warmup.py)."""
    from pipelines.cfg_truncation import configure_cfg_truncation
    from pipelines.compile_warmup import warm_up
    from pipelines.fast_mode import switched_on

    configure_cfg_truncation(pipe, settings.cfg_truncation)
    if settings.gpus_per_job > 1:
        # A group's ranks run the transformer together under context parallelism, enabled after this.
        log.info("No compile warm-up in a group of %d GPUs", settings.gpus_per_job)
        return
    warm_up(pipe, warmup)
    with switched_on(pipe) as fast_mode:  # a fast-mode LoRA's layers make other graphs: warm those too
        if fast_mode:
            warm_up(pipe, warmup)


def _die_with_parent() -> None:
    """If the server is SIGKILLed, its workers must not live on claiming jobs nobody supervises.

    The restarted server then finds their jobs orphaned and requeues them (at-least-once).
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.worker")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--settings", required=True, help="the server's Settings as JSON")
    args = parser.parse_args(argv)
    settings = Settings.from_json(args.settings)
    configure_logging(settings.log_format, args.worker_id)
    _die_with_parent()
    # Generation is batch work: the API process, which clients poll at 10 Hz, gets the CPU first.
    os.nice(10)
    if settings.gpus_per_job > 1:
        from server.worker.group import launch  # a group of ranks, each running server/worker/group.py

        return launch(args.worker_id, args.settings, settings.gpus_per_job)
    worker = Worker(settings, args.worker_id)
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stopping.set())
    try:
        executor = worker.load()
    except Exception as exc:  # noqa: BLE001 - report why the model did not load, then exit for a restart
        worker.store.set_worker_state(args.worker_id, worker.pid, "failed", settings.model, str(exc))
        log.error("could not load model: %s", exc)
        return 3
    worker.serve(executor)
    worker.store.set_worker_state(args.worker_id, worker.pid, "stopped", settings.model)
    return 0

