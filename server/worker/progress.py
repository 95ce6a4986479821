"""A running job's progress: each phase logged when it starts and ends (with its duration), and a small
`progress` dict (phase, fraction, ETA, preview URL) stored for the status route's extension.

Phases follow the runner's order (server/worker/runner.py); a job skips those it does not need, and the
fraction jumps past a skipped phase's share. The shares are rough costs on a GPU, where denoising is most
of a job; the ETA comes from the measured step time while denoising, else from elapsed time / fraction.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from server.logs import set_phase

log = logging.getLogger("vace.progress")

# (name, label, share of a whole job)
PHASES: tuple[tuple[str, str, float], ...] = (
    ("load", "Loading models", 0.02),
    ("fetch", "Fetching inputs", 0.02),
    ("probe", "Probing and decoding inputs", 0.02),
    ("input_safety", "Safety check of the inputs", 0.01),
    ("prompt", "Prompt expansion", 0.02),
    ("annotate", "Conditioning (annotators)", 0.08),
    ("text_encode", "Encoding the prompt", 0.01),
    ("vae_encode", "VAE encode", 0.05),
    ("denoise", "Denoising", 0.66),
    ("vae_decode", "VAE decode", 0.06),
    ("interpolate", "Interpolation", 0.03),
    ("safety", "Safety check of the output", 0.01),
    ("encode", "Encoding H.264", 0.02),
)
_ORDER = {name: i for i, (name, _, _) in enumerate(PHASES)}
_LABEL = {name: label for name, label, _ in PHASES}
_SHARE = {name: share for name, _, share in PHASES}
_TOTAL = sum(_SHARE.values())
PUBLISH_EVERY_S = 0.25  # within a phase; phase changes are published at once
MAX_STEP_TIMES = 500


class Progress:
    """Owned by one job on one worker thread. `publish` stores the dict (job store telemetry); `log` adds a
    line to the job's logs; `clock` is injectable for tests."""

    def __init__(self, publish: Callable[[dict[str, Any]], None] | None = None,
                 log_line: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._publish = publish
        self._log = log_line
        self._clock = clock
        self.started = clock()
        self.current: str | None = None
        self._phase_started = self.started
        self._inner = 0.0
        self._last_publish = float("-inf")
        self.step = 0
        self.steps = 0
        self.step_seconds: list[float] = []
        self._step_mark: float | None = None
        self.durations: dict[str, float] = {}
        self.preview_url: str | None = None
        self.forwards: dict[str, int] | None = None  # transformer forwards: computed, and reused by the cache
        self._fraction = 0.0

    def attach_log(self, log_line: Callable[[str], None]) -> None:
        """Send the phase lines to `log_line` too, unless the Progress was made with its own."""
        if self._log is None:
            self._log = log_line

    # -- phases ------------------------------------------------------------------------------------

    def enter(self, name: str, detail: str = "") -> None:
        """End the current phase (logging its duration) and start `name`."""
        if name not in _ORDER:
            raise ValueError(f"unknown phase {name!r}")
        self.close()
        self.current, self._phase_started, self._inner = name, self._clock(), 0.0
        set_phase(name)
        if name == "denoise":
            self._step_mark = self._phase_started
        self._line(f"{_LABEL[name]} started" + (f": {detail}" if detail else ""))
        self._emit(force=True)

    def close(self, outcome: str = "done") -> None:
        if self.current is None:
            return
        took = self._clock() - self._phase_started
        self.durations[self.current] = self.durations.get(self.current, 0.0) + took
        self._line(f"{_LABEL[self.current]} {outcome} in {took:.2f}s")
        self.current = None
        set_phase(None)

    @contextlib.contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[None]:
        self.enter(name, detail)
        try:
            yield
        except BaseException:
            self.close("stopped")
            raise
        self.close()

    def inner(self, done: float, total: float) -> None:
        """Progress inside the current phase (frames annotated, frames interpolated...)."""
        if total > 0:
            self._inner = min(max(done / total, 0.0), 1.0)
            self._emit()

    def denoise_step(self, done: int, total: int) -> None:
        now = self._clock()
        if self._step_mark is not None and len(self.step_seconds) < MAX_STEP_TIMES:
            self.step_seconds.append(now - self._step_mark)
        self._step_mark = now
        self.step, self.steps = done, total
        self._line(f"Denoising step {done}/{total} ({now - self._phase_started:.1f}s)")
        self.inner(done, total)

    def count_forwards(self, computed: int, called: int) -> None:
        """generate()'s on_forwards: kept for the final progress, which /metrics counts."""
        self.forwards = {"computed": computed, "reused": called - computed}

    def set_preview(self, url: str, step: int) -> None:
        self.preview_url = url
        self._line(f"Preview after step {step}: {url}")
        self._emit(force=True)

    def finish(self) -> None:
        """The final record: fraction 1 and every step's time (/metrics reads them, server/api/metrics.py)."""
        self.close()
        self._emit(force=True, done=True)

    # -- the published dict ------------------------------------------------------------------------

    @property
    def fraction(self) -> float:
        """Never goes back (a reference image fetched after the video's probe re-enters "fetch")."""
        if self.current is not None:
            before = sum(share for name, _, share in PHASES if _ORDER[name] < _ORDER[self.current])
            now = min((before + _SHARE[self.current] * self._inner) / _TOTAL, 1.0)
            self._fraction = max(self._fraction, now)
        return self._fraction

    def eta_s(self) -> float | None:
        elapsed = self._clock() - self.started
        if self.current == "denoise" and self.step_seconds and self.steps:
            per_step = sum(self.step_seconds) / len(self.step_seconds)
            denoise_left = per_step * (self.steps - self.step)
            # What follows denoising costs about what preceded it in the pipeline (VAE decode ~ encode).
            tail = self.durations.get("vae_encode", 0.0) * 1.5
            return round(denoise_left + tail, 1)
        fraction = self.fraction
        if fraction < 0.02:
            return None
        return round(elapsed * (1.0 - fraction) / fraction, 1)

    def snapshot(self, done: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "phase": "done" if done else self.current,
            "phase_label": "Done" if done else _LABEL.get(self.current or ""),
            "fraction": 1.0 if done else round(self.fraction, 4),
            "eta_seconds": 0.0 if done else self.eta_s(),
            "elapsed_seconds": round(self._clock() - self.started, 2),
            "step": self.step,
            "steps": self.steps,
            "preview_url": self.preview_url,
        }
        if done:
            body["step_seconds"] = [round(s, 4) for s in self.step_seconds]
            body["phase_seconds"] = {k: round(v, 3) for k, v in self.durations.items()}
            if self.forwards is not None:
                body["forwards"] = self.forwards
        return body

    def _emit(self, force: bool = False, done: bool = False) -> None:
        now = self._clock()
        if self._publish is None or (not force and now - self._last_publish < PUBLISH_EVERY_S):
            return
        self._last_publish = now
        try:
            self._publish(self.snapshot(done))
        except Exception:  # noqa: BLE001 - progress is informative: a failed write must not fail the job
            log.exception("could not store progress")

    def _line(self, message: str) -> None:
        log.info(message)
        if self._log is not None:
            self._log(message)
