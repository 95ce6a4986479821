"""Runs the GPU worker processes for the API process: start, watch, respawn, recover their jobs.

The API process never imports torch; each worker is a separate Python process (`python -m server.worker`),
so a CUDA crash or an OOM kill takes down only that worker while the API keeps answering.

One thread starts, watches and finally stops every worker, and it outlives them: a worker's parent-death
signal (server/worker/loop.py) fires when the *thread* that started it ends, not the process, so a worker
started from a thread that exits first would be SIGKILLed mid-job instead of stopping gracefully.
Shutdown (SIGTERM to the server): each worker gets SIGTERM, puts its running job back in the queue at
its next checkpoint (every denoising step, and before interpolation) without spending an attempt, and exits
(a job already encoding its output finishes first);
one still running after STOP_GRACE_S is killed and its job requeued, again without spending an attempt
(our own shutdown is no evidence that the job kills workers).

A worker can also hang with its process alive (SIGSTOPped, or stuck in native code holding the GIL): its
heartbeat threads (server/worker/loop.py, which beat from before the model loads) go quiet. One whose
database beat and local beat file (server/local_beat.py) are both silent for `worker_stall_timeout_s` is
SIGKILLed and handled like a worker that died: its job is requeued with the attempt counted, and a new
worker started. A worker is judged only once it has beaten: before that it is
importing torch, which takes minutes on a loaded machine and must not read as a stall (its first beat
comes before the model loads).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from server.contract.capacity import STARTING
from server.jobs.store import JobStore
from server.local_beat import beat_path, last_beat, remove_beat
from server.settings import Settings

log = logging.getLogger("vace.supervisor")

WATCH_INTERVAL_S = 0.5
MAX_BACKOFF_S = 30.0
STOP_GRACE_S = 30.0


@dataclass
class WorkerSlot:
    name: str
    env: dict[str, str]
    worker_id: str = ""  # unique per spawn, so a stale process can never pass for its successor
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = field(default=0.0)
    started_at: float = 0.0  # wall clock, as the heartbeats in the store


class Supervisor:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.slots = [WorkerSlot(f"worker-{i}", env) for i, env in enumerate(_worker_envs(settings))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vace-supervisor", daemon=True)

    def start(self) -> None:
        # Whatever was running when the server last stopped has no worker now: requeue or fail it.
        recovered = self.store.recover_orphans(set(), self.settings.max_attempts)
        if recovered:
            log.warning("recovered %d interrupted job(s): %s", len(recovered), ", ".join(recovered))
        self.store.clear_workers()
        self._thread.start()  # starts the workers at once

    def begin_stop(self) -> None:
        """Start stopping the workers now, without waiting (the server calls it on SIGTERM)."""
        self._stop.set()

    def stop(self) -> None:
        """SIGTERM lets a worker requeue its running job at the next step; SIGKILL after a grace period."""
        self.begin_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_GRACE_S + 15)

    def _run(self) -> None:
        try:
            self._watch()
        finally:
            self._terminate()

    def _terminate(self) -> None:
        procs = {s.worker_id: s.process for s in self.slots if s.process and s.process.poll() is None}
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for worker_id, proc in procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", worker_id, STOP_GRACE_S)
                proc.kill()
                proc.wait()
            requeued = self.store.release(worker_id)  # empty when the worker requeued its job itself
            if requeued:
                log.warning("%s was stopped mid-job; requeued %s", worker_id, ", ".join(requeued))
        for slot in self.slots:
            self.store.remove_worker(slot.worker_id)
            remove_beat(beat_path(self.settings.data_dir, slot.worker_id))
        self.store.recover_orphans(set(), self.settings.max_attempts)

    def _spawn(self, slot: WorkerSlot) -> None:
        previous = slot.worker_id
        slot.worker_id = f"{slot.name}-{uuid.uuid4().hex[:8]}"
        cmd = [sys.executable, "-m", "server.worker", "--worker-id", slot.worker_id,
               "--settings", self.settings.to_json()]
        env = {**os.environ, **self.settings.worker_env, **slot.env}
        slot.process = subprocess.Popen(cmd, env=env)
        slot.started_at = time.time()
        log.info("started %s (pid %d)", slot.worker_id, slot.process.pid)
        if previous:
            self.store.remove_worker(previous)  # its "starting" row, kept through the restart's back-off
        self._hold_place(slot.worker_id, slot.process.pid)

    def _hold_place(self, worker_id: str, pid: int, detail: str | None = None) -> None:
        """A "starting" row, beaten by this thread until the worker writes its own state: the API must not
        take a worker that is on its way (importing torch takes minutes) for absent, or it would refuse at
        submit, on the other workers' capacity alone, a request this one could hold
        (server/contract/capacity.py)."""
        self.store.set_worker_state(worker_id, pid, STARTING, self.settings.model, detail)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self._check_workers()
            except Exception:  # a locked database or a failed spawn: retry, never stop watching
                log.exception("supervising the workers failed; retrying")
            self._stop.wait(WATCH_INTERVAL_S)

    def _check_workers(self) -> None:
        heartbeats: dict[str, float] | None = None
        starting: set[str] = set()
        try:
            rows = self.store.workers() if self.slots else []
            heartbeats = {w["id"]: float(w["heartbeat"]) for w in rows}
            starting = {w["id"] for w in rows if w["state"] == STARTING}
        except Exception as exc:  # unreadable beats are no evidence of a stall: judge none this time
            log.warning("could not read the workers' heartbeats: %s", exc)
        for slot in self.slots:
            if slot.worker_id in starting:  # on its way, or restarting: its place is held (_hold_place)
                self.store.heartbeat(slot.worker_id)
            proc = slot.process
            if proc is not None and proc.poll() is None:
                if slot.worker_id in starting:
                    continue  # no beat of its own yet: not judged (see the module's docstring)
                if heartbeats is None or not self._stalled(slot, self._last_beat(slot, heartbeats)):
                    continue
                proc.kill()  # SIGKILL: a stopped process never handles SIGTERM
                proc.wait()
            if proc is not None:
                self._on_exit(slot, proc.returncode)
            if time.monotonic() >= slot.next_start and not self._stop.is_set():
                self._spawn(slot)

    def _last_beat(self, slot: WorkerSlot, heartbeats: dict[str, float]) -> float | None:
        """The newer of the database's beat and the worker's local one (server/local_beat.py)."""
        beats = [b for b in (heartbeats.get(slot.worker_id),
                             last_beat(beat_path(self.settings.data_dir, slot.worker_id))) if b is not None]
        return max(beats, default=None)

    def _stalled(self, slot: WorkerSlot, heartbeat: float | None) -> bool:
        """True for a live worker process whose heartbeat has been silent for too long."""
        if heartbeat is None or heartbeat < slot.started_at:
            return False  # no beat from this process yet: still starting (see the module's docstring)
        silent = time.time() - heartbeat
        if silent <= self.settings.worker_stall_timeout_s:
            return False
        assert slot.process is not None
        log.error("%s (pid %d) has sent no heartbeat for %.0fs although its process lives (stopped or "
                  "stuck); killing it", slot.worker_id, slot.process.pid, silent)
        return True

    def _on_exit(self, slot: WorkerSlot, code: int) -> None:
        log.error("%s exited with code %s; restarting", slot.worker_id, code)
        # Its row stays, "starting", through the back-off until the replacement's (_spawn); the job it held
        # is recovered below all the same (recovery goes by live processes, not rows).
        self._hold_place(slot.worker_id, slot.process.pid if slot.process else 0,
                         f"restarting after exit code {code}")
        remove_beat(beat_path(self.settings.data_dir, slot.worker_id))
        live = {s.worker_id for s in self.slots if s.process and s.process.poll() is None}
        self.store.recover_orphans(live, self.settings.max_attempts)
        slot.process = None
        slot.restarts += 1
        # Back off so a worker that cannot load its model does not spin.
        slot.next_start = time.monotonic() + min(MAX_BACKOFF_S, 0.5 * 2 ** min(slot.restarts, 6))


def _worker_envs(settings: Settings) -> list[dict[str, str]]:
    """One worker per visible GPU when several are requested; each sees only its own device. With
    --gpus-per-job N each worker is a group of N ranks (server/worker/group.py) and sees N GPUs."""
    gpus = [g.strip() for g in (settings.gpus or "").split(",") if g.strip()]
    if gpus:
        n = settings.gpus_per_job  # Settings checks that the GPUs form whole groups
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i:i + n])} for i in range(0, len(gpus), n)]
    # num_workers 0 is an API-only server: jobs wait in the queue for a worker (tests, split deployments).
    return [{} for _ in range(settings.num_workers)]
